"""Seed-bootstrap confidence intervals for every reported score.

One resample draws the audit's seeds with replacement and uses the same draw for every prompt
(axis, concept and marked prompts alike), so the pairing of noise across prompts is kept. The
measures are recomputed from inner products (:mod:`auditkit.analyze.gram`), which makes 1,000
resamples cheap enough to be always on.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from auditkit.analyze.gram import (
    VectorBasis,
    build_basis,
    centred_cosine,
    inner_products,
    lean_from_gram,
    resampled_grams,
    seed_gram_tensor,
)
from auditkit.analyze.latents import LatentSet
from auditkit.analyze.measures import AuditLayout

CI_LEVEL = 0.95


def bootstrap_weights(n_seeds: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, n_seeds] weights: multiplicities of a with-replacement draw, over n_seeds."""
    draws = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    counts = np.zeros((resamples, n_seeds))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return counts / n_seeds


def _chunks(weights: np.ndarray, size: int = 100) -> Iterator[np.ndarray]:
    for start in range(0, len(weights), size):
        yield weights[start : start + size]


def _interval(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - CI_LEVEL) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha], axis=0)
    return low, high


def add_bootstrap_intervals(
    tables: dict[str, pd.DataFrame],
    layout: AuditLayout,
    latents: LatentSet,
    *,
    resamples: int,
    seed: int,
) -> None:
    """Add ``*_ci_low`` / ``*_ci_high`` columns to lean, defaults, descriptors, similarity."""
    if resamples <= 0 or len(latents.seeds) < 2:
        return
    basis = build_basis(layout, len(latents.prompt_ids))
    K = seed_gram_tensor(latents.per_seed)
    weights = bootstrap_weights(len(latents.seeds), resamples, np.random.default_rng(seed))
    collected: dict[str, list[np.ndarray]] = {}
    for chunk in _chunks(weights):
        Q = inner_products(basis, resampled_grams(K, chunk))
        for name, frame in tables.items():
            if frame.empty:
                continue
            if name == "defaults":
                collected.setdefault(name, []).append(_defaults_samples(frame, layout, basis, Q))
                continue
            extractor = _EXTRACTORS.get(name)
            if extractor is not None:
                collected.setdefault(name, []).append(extractor(frame, basis, Q))
    for name, parts in collected.items():
        samples = np.concatenate(parts, axis=0)  # [B, rows, measures]
        low, high = _interval(samples)
        for j, column in enumerate(_COLUMNS[name]):
            tables[name][f"{column}_ci_low"] = low[:, j]
            tables[name][f"{column}_ci_high"] = high[:, j]


def _lean_samples(frame: pd.DataFrame, basis: VectorBasis, Q: np.ndarray) -> np.ndarray:
    out = np.empty((Q.shape[0], len(frame), 2))
    for i, row in enumerate(frame.itertuples()):
        cosine, _, score = lean_from_gram(
            Q,
            basis[("concept", str(row.concept_set), str(row.concept))],
            basis[("ref", str(row.concept_set))],
            basis[("group", str(row.axis), str(row.positive_group))],
            basis[("group", str(row.axis), str(row.negative_group))],
        )
        out[:, i, 0] = score
        out[:, i, 1] = cosine
    return out


def _defaults_samples(
    frame: pd.DataFrame, layout: AuditLayout, basis: VectorBasis, Q: np.ndarray
) -> np.ndarray:
    """Per row: the resampled cosine of the group's marked variant, and the resampled margin
    of the concept's point-estimate default (rank 1) over the best other group, which turns
    negative in resamples where the default flips."""
    out = np.empty((Q.shape[0], len(frame), 2))
    cosines: dict[tuple[str, str, str, str], np.ndarray] = {}
    sets = {c.name: c for c in layout.concepts}
    for row in frame.itertuples():
        key = (str(row.axis), str(row.concept_set), str(row.group), str(row.concept))
        unmarked = sets[key[1]].terms[key[3]]
        ref = basis[("ref", key[1])]
        cosines[key] = np.mean(
            [
                centred_cosine(Q, basis[("row", str(u))], basis[("row", str(m))], ref)
                for u, m in zip(unmarked, layout.marked[key], strict=True)
            ],
            axis=0,
        )
    groups: dict[tuple[str, str, str], list[str]] = {}
    firsts: dict[tuple[str, str, str], str] = {}
    for row in frame.itertuples():
        concept_key = (str(row.axis), str(row.concept_set), str(row.concept))
        groups.setdefault(concept_key, []).append(str(row.group))
        if int(str(row.rank)) == 1:
            firsts[concept_key] = str(row.group)
    for i, row in enumerate(frame.itertuples()):
        axis, set_name, concept = str(row.axis), str(row.concept_set), str(row.concept)
        out[:, i, 0] = cosines[(axis, set_name, str(row.group), concept)]
        first = firsts[(axis, set_name, concept)]
        others = [
            cosines[(axis, set_name, g, concept)]
            for g in groups[(axis, set_name, concept)]
            if g != first
        ]
        best_other = np.max(np.stack(others), axis=0) if others else np.zeros(Q.shape[0])
        out[:, i, 1] = cosines[(axis, set_name, first, concept)] - best_other
    return out


def _descriptor_samples(frame: pd.DataFrame, basis: VectorBasis, Q: np.ndarray) -> np.ndarray:
    out = np.empty((Q.shape[0], len(frame), 1))
    for i, row in enumerate(frame.itertuples()):
        out[:, i, 0] = centred_cosine(
            Q,
            basis[("concept", str(row.concept_set), str(row.concept))],
            basis[("group", str(row.axis), str(row.group))],
            basis[("ref", str(row.concept_set))],
        )
    return out


def _similarity_samples(frame: pd.DataFrame, basis: VectorBasis, Q: np.ndarray) -> np.ndarray:
    out = np.empty((Q.shape[0], len(frame), 1))
    for i, row in enumerate(frame.itertuples()):
        out[:, i, 0] = centred_cosine(
            Q,
            basis[("concept", str(row.concept_set), str(row.concept_a))],
            basis[("concept", str(row.concept_set), str(row.concept_b))],
            basis[("ref", str(row.concept_set))],
        )
    return out


_COLUMNS = {
    "lean": ("score", "cosine"),
    "defaults": ("cosine", "margin"),
    "descriptors": ("cosine",),
    "similarity": ("cosine",),
}
_EXTRACTORS = {
    "lean": _lean_samples,
    "descriptors": _descriptor_samples,
    "similarity": _similarity_samples,
}
