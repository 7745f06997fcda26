"""Bootstrap confidence intervals for every reported score.

One resample draws the audit's seeds with replacement and uses the same draw for every prompt
(axis, concept and marked prompts alike), so the pairing of noise across prompts is kept. With
``statistics.resampling: hierarchical`` (the default) it also draws the templates and each
group's terms, so that an interval carries the wording as well as the sampling noise. The
measures are recomputed from inner products (:mod:`auditkit.analyze.gram`), which makes 1,000
resamples cheap enough to be always on.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from auditkit.analyze.gram import (
    VectorBasis,
    basis_components,
    build_basis,
    centred_cosine,
    inner_products,
    lean_from_gram,
    paired_inner_products,
    resampled_grams,
    seed_gram_tensor,
    template_key,
    uniform_weights,
    weighted_coeffs,
    weighted_grams,
)
from auditkit.analyze.latents import LatentSet
from auditkit.analyze.measures import AuditLayout

CI_LEVEL = 0.95


def bootstrap_weights(
    n_seeds: int, resamples: int, rng: np.random.Generator, draws: int | None = None
) -> np.ndarray:
    """[resamples, n_seeds] weights: multiplicities of a with-replacement draw of ``draws``
    items (default ``n_seeds``) out of n_seeds, over ``draws``."""
    size = n_seeds if draws is None else draws
    picks = rng.integers(0, n_seeds, size=(resamples, size))
    counts = np.zeros((resamples, n_seeds))
    np.add.at(counts, (np.arange(resamples)[:, None], picks), 1.0)
    return counts / size


def wording_weights(
    layout: AuditLayout, resamples: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Resampled template and term weights (list key -> [resamples, size]): each template list
    and each group's term list drawn with replacement. Lists with the same templates share one
    draw, so a concept and an axis worded alike stay paired, as in the point estimate.

    A list of k items is drawn k − 1 times, not k: for a mean over few items (two templates,
    two terms) the plain bootstrap's variance is (k − 1)/k of the unbiased one, half of it for
    k = 2, and drawing k − 1 makes it unbiased (measured coverage: docs/method.md).
    """
    weights: dict[str, np.ndarray] = {}
    for key, uniform in uniform_weights(layout).items():
        size = uniform.shape[1]
        weights[key] = (
            bootstrap_weights(size, resamples, rng, draws=size - 1)
            if size > 1
            else np.ones((resamples, 1))
        )
    return weights


def _chunks(total: int, size: int = 100) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


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
    hierarchical: bool = False,
) -> dict[str, np.ndarray]:
    """Add ``*_ci_low`` / ``*_ci_high`` columns to lean, defaults, descriptors, similarity, and
    return the resampled values by table ([resamples, rows, measures], in ``_COLUMNS`` order).

    Every resample draws the seeds with replacement (the same draw for every prompt); with
    ``hierarchical`` it also draws the templates and each group's terms
    (:func:`wording_weights`), so the interval carries the wording. The seed draws are the
    same in both modes (their own generator), so ``hierarchical=False`` reproduces the
    seed-only intervals of earlier runs exactly.
    """
    if resamples <= 0 or len(latents.seeds) < 2:
        return {}
    components = basis_components(layout)
    n_prompts = len(latents.prompt_ids)
    basis = build_basis(layout, n_prompts)
    P, N, D = latents.per_seed.shape
    K = seed_gram_tensor(latents.per_seed) if D > P * N else None
    weights = bootstrap_weights(len(latents.seeds), resamples, np.random.default_rng(seed))
    wording = (
        wording_weights(layout, resamples, np.random.default_rng([seed, 13]))
        if hierarchical
        else None
    )
    collected: dict[str, list[np.ndarray]] = {}
    for part in _chunks(resamples):
        grams = (
            resampled_grams(K, weights[part])
            if K is not None
            else weighted_grams(latents.per_seed, weights[part])
        )
        if wording is not None:
            chunk_wording = {key: w[part] for key, w in wording.items()}
            Q = paired_inner_products(weighted_coeffs(components, n_prompts, chunk_wording), grams)
        else:
            chunk_wording = None
            Q = inner_products(basis, grams)
        for name, frame in tables.items():
            if frame.empty:
                continue
            if name == "defaults":
                collected.setdefault(name, []).append(
                    _defaults_samples(frame, layout, basis, Q, chunk_wording)
                )
                continue
            extractor = _EXTRACTORS.get(name)
            if extractor is not None:
                collected.setdefault(name, []).append(extractor(frame, basis, Q))
    samples_by_table: dict[str, np.ndarray] = {}
    for name, parts in collected.items():
        samples = np.concatenate(parts, axis=0)  # [B, rows, measures]
        samples_by_table[name] = samples
        low, high = _interval(samples)
        for j, column in enumerate(_COLUMNS[name]):
            tables[name][f"{column}_ci_low"] = low[:, j]
            tables[name][f"{column}_ci_high"] = high[:, j]
    return samples_by_table


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
    frame: pd.DataFrame,
    layout: AuditLayout,
    basis: VectorBasis,
    Q: np.ndarray,
    wording: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Per row: the resampled cosine of the group's marked variant, and the resampled margin
    of the concept's point-estimate default (rank 1) over the best other group, which turns
    negative in resamples where the default flips. With ``wording`` the mean over the concept
    set's templates uses the resampled template weights."""
    out = np.empty((Q.shape[0], len(frame), 2))
    cosines: dict[tuple[str, str, str, str], np.ndarray] = {}
    sets = {c.name: c for c in layout.concepts}
    for row in frame.itertuples():
        key = (str(row.axis), str(row.concept_set), str(row.group), str(row.concept))
        cset = sets[key[1]]
        unmarked = cset.terms[key[3]]
        ref = basis[("ref", key[1])]
        per_template = np.stack(
            [
                centred_cosine(Q, basis[("row", str(u))], basis[("row", str(m))], ref)
                for u, m in zip(unmarked, layout.marked[key], strict=True)
            ],
            axis=-1,
        )  # [B, T]
        tkey = template_key(cset.templates)
        if wording is not None and cset.templates and tkey in wording:
            cosines[key] = np.sum(per_template * wording[tkey], axis=-1)
        else:
            cosines[key] = per_template.mean(axis=-1)
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
