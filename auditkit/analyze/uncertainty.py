"""Bootstrap confidence intervals for every reported score.

One resample draws the audit's seeds with replacement and uses the same draw for every prompt
(axis, concept and marked prompts alike), so the pairing of noise across prompts is kept. With
``statistics.resampling: hierarchical`` (the default) it also draws the templates and each
group's terms, so that an interval carries the wording as well as the sampling noise. The
measures are recomputed from inner products (:mod:`auditkit.analyze.gram`), which makes 1,000
resamples cheap enough to be always on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

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
    uniform_weights,
    weighted_coeffs,
    weighted_grams,
)
from auditkit.analyze.latents import LatentSet
from auditkit.analyze.measures import AuditLayout
from auditkit.analyze.resampled import Resampled

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


@dataclass(frozen=True)
class Resamples:
    """One chunk of bootstrap resamples, as a statistic sees it: the audit's layout and vector
    basis, the resampled inner products ``Q`` [resamples, vectors, vectors] and, with
    hierarchical resampling, the chunk's template and term weights (list key -> [resamples,
    size]; None when only the seeds are resampled)."""

    layout: AuditLayout
    basis: VectorBasis
    Q: np.ndarray
    wording: dict[str, np.ndarray] | None


def add_bootstrap_intervals(
    tables: dict[str, pd.DataFrame],
    layout: AuditLayout,
    latents: LatentSet,
    *,
    resamples: int,
    seed: int,
    hierarchical: bool = False,
    statistics: Iterable[Resampled],
) -> dict[str, np.ndarray]:
    """Add ``*_ci_low`` / ``*_ci_high`` columns to the tables of ``statistics`` (the analysis
    slices declare theirs as :attr:`~auditkit.analyses.base.Analysis.resampled`), and return
    the resampled values by table ([resamples, rows, measures], in the statistic's
    ``measures`` order).

    Every resample draws the seeds with replacement (the same draw for every prompt and every
    table of the pass); with ``hierarchical`` it also draws the templates and each group's terms
    (:func:`wording_weights`), so the interval carries the wording. The draws come from
    generators seeded here, so a table's intervals are the same whichever pass resamples it and
    whichever other tables share that pass; the seed draws are the same in both modes (their own
    generator), so ``hierarchical=False`` reproduces the seed-only intervals of earlier runs
    exactly.
    """
    if resamples <= 0 or len(latents.seeds) < 2:
        return {}
    chosen = [s for s in statistics if s.table in tables and not tables[s.table].empty]
    if not chosen:
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
        chunk = Resamples(layout, basis, Q, chunk_wording)
        for statistic in chosen:
            frame = tables[statistic.table]
            collected.setdefault(statistic.table, []).append(statistic.samples(frame, chunk))
    samples_by_table: dict[str, np.ndarray] = {}
    for statistic in chosen:
        samples = np.concatenate(collected[statistic.table], axis=0)  # [B, rows, measures]
        samples_by_table[statistic.table] = samples
        low, high = _interval(samples)
        for j, column in enumerate(statistic.measures):
            tables[statistic.table][f"{column}_ci_low"] = low[:, j]
            tables[statistic.table][f"{column}_ci_high"] = high[:, j]
    return samples_by_table


def lean_samples(frame: pd.DataFrame, draw: Resamples) -> np.ndarray:
    basis, Q = draw.basis, draw.Q
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


def cosine_samples(
    draw: Resamples, frame: pd.DataFrame, first: tuple[str, str, str], second: tuple[str, str, str]
) -> np.ndarray:
    """[resamples, rows, 1]: per row of ``frame`` the resampled cosine of two basis vectors, both
    centred on the reference of the row's concept set. ``first`` and ``second`` name each vector
    as (kind, column of its set or axis, column of its name), e.g. ("group", "axis", "group")."""
    basis, Q = draw.basis, draw.Q
    out = np.empty((Q.shape[0], len(frame), 1))
    for i, row in enumerate(frame.to_dict("records")):
        a, b = ((kind, str(row[where]), str(row[name])) for kind, where, name in (first, second))
        out[:, i, 0] = centred_cosine(
            Q, basis[a], basis[b], basis[("ref", str(row["concept_set"]))]
        )
    return out


"""The lean table's statistic: its score and cosine, recomputed from every resample."""
