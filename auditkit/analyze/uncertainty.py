"""Bootstrap confidence intervals for every reported score.

One resample draws the audit's seeds with replacement and uses the same draw for every prompt
(axis, concept and marked prompts alike), so the pairing of noise across prompts is kept. With
``statistics.resampling: hierarchical`` (the default) it also draws the templates and each
group's terms, so that an interval carries the wording as well as the sampling noise. The
measures are recomputed from inner products (:mod:`auditkit.analyze.gram`), which makes 1,000
resamples cheap enough to be always on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from auditkit.analyze.gram import (
    VectorBasis,
    basis_components,
    build_basis,
    inner_products,
    paired_inner_products,
    resampled_grams,
    seed_gram_pays,
    seed_gram_tensor,
    uniform_weights,
    weighted_coeffs,
    weighted_grams,
)
from auditkit.analyze.latents import LatentSet
from auditkit.analyze.measures import AuditLayout
from auditkit.analyze.resampled import Resampled

CI_LEVEL = 0.95
QUANTILE_THREADS = min(
    4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)
"""Threads that compute the intervals' quantiles, block by block."""


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


STREAMED_Q_BUDGET = 128 << 20
"""Bytes of resampled inner products a streamed audit computes at once (the chunk size)."""


def _chunks(total: int, size: int = 100) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def _interval(
    samples: np.ndarray, estimates: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The 95% bounds per row and measure of samples [resamples, rows, measures], a block of
    rows at a time (the quantile works on a copy).

    With ``estimates`` [rows, measures] (``statistics.interval: centred``) the bounds are the
    bootstrap's spread placed around the estimate: each quantile minus the samples' median,
    added to the estimate, so the interval always holds the estimate it goes with. Without, they
    are the samples' own quantiles (the percentile interval), which a resampling that averages
    fewer wordings than the estimate can shift off the estimate (docs/method.md)."""
    alpha = (1.0 - CI_LEVEL) / 2.0
    levels = [alpha, 1.0 - alpha] if estimates is None else [alpha, 0.5, 1.0 - alpha]
    low = np.empty(samples.shape[1:])
    high = np.empty(samples.shape[1:])
    # 2,048 rows at a time in all, shared by the threads: the blocks' copies take the memory
    # one block took on one thread
    rows_per_block = max(256, 2048 // QUANTILE_THREADS)

    def bound(start: int) -> None:
        block = slice(start, start + rows_per_block)
        # resamples last and contiguous: partitioning along a strided axis is slower, and the
        # order statistics (so the bounds) are the same
        ordered = np.ascontiguousarray(np.moveaxis(samples[:, block], 0, -1))
        bounds = np.quantile(ordered, levels, axis=-1)
        if estimates is None:
            low[block], high[block] = bounds
        else:
            low[block] = estimates[block] + (bounds[0] - bounds[1])
            high[block] = estimates[block] + (bounds[2] - bounds[1])

    starts = range(0, samples.shape[1], rows_per_block)
    if len(starts) < 2:
        for start in starts:
            bound(start)
        return low, high
    # numpy partitions without the interpreter lock: blocks on every core (8,000 rows of 1,000
    # resamples: 0.18 -> 0.07 s on two cores; each block's bounds are the same)
    with ThreadPoolExecutor(max_workers=min(len(starts), QUANTILE_THREADS)) as pool:
        list(pool.map(bound, starts))
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
    memo: dict[str, Any] = field(default_factory=dict)
    """Shared by every chunk of one pass: what a statistic works out once per table (its rows'
    basis indices)."""

    def indices(self, key: str, build: Callable[[], Any]) -> Any:
        """``build()``, once per pass for ``key``."""
        if key not in self.memo:
            self.memo[key] = build()
        return self.memo[key]


def add_bootstrap_intervals(
    tables: dict[str, pd.DataFrame],
    layout: AuditLayout,
    latents: LatentSet,
    *,
    resamples: int,
    seed: int,
    hierarchical: bool = False,
    centred: bool = False,
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
    exactly. ``centred`` places the bootstrap's spread around each estimate (:func:`_interval`);
    without it the bounds are the resamples' own quantiles, as in runs made before
    ``statistics.interval``.
    """
    if resamples <= 0 or len(latents.seeds) < 2:
        return {}
    chosen = [s for s in statistics if s.table in tables and not tables[s.table].empty]
    if not chosen:
        return {}
    streamed = latents.per_seed is None
    ref_rows = latents.products[0].ref_rows if streamed else None
    n_prompts = latents.products[0].n_rows if streamed else len(latents.prompt_ids)
    components = basis_components(layout, ref_rows)
    basis = build_basis(layout, n_prompts, ref_rows)
    K = None
    if latents.per_seed is not None:
        P, N, D = latents.per_seed.shape
        K = seed_gram_tensor(latents.per_seed) if seed_gram_pays(P, N, D) else None
    weights = bootstrap_weights(len(latents.seeds), resamples, np.random.default_rng(seed))
    wording = (
        wording_weights(layout, resamples, np.random.default_rng([seed, 13]))
        if hierarchical
        else None
    )
    V = len(components)
    size = max(1, min(100, STREAMED_Q_BUDGET // (V * V * 8))) if streamed else 100
    memo: dict[str, Any] = {}
    collected: dict[str, np.ndarray] = {}
    """Per table, every resample's measures [resamples, rows, measures], filled chunk by
    chunk."""
    known: dict[str, pd.DataFrame] = {}
    """Per table, the rows a streamed audit's products can resample (its first chunk says)."""
    cross: tuple[int, np.ndarray] | None = None
    """A streamed audit's cross products under a run of resamples' seed weights (first
    resample, [b, rows, Pd]): one pass over them serves several chunks."""
    for part in _chunks(resamples, size):
        chunk_wording = (
            {key: w[part] for key, w in wording.items()} if wording is not None else None
        )
        if latents.per_seed is None:
            from auditkit.analyze.products import (
                ProductPlan,
                cross_quadratics,
                streamed_inner_products,
            )

            B = part.stop - part.start
            if chunk_wording is not None:  # the next chunk overwrites the same array
                coeffs = memo["coeffs"] = weighted_coeffs(
                    components, n_prompts, chunk_wording, out=memo.get("coeffs"), cache=memo
                )
            else:
                coeffs = np.broadcast_to(basis.coeffs, (B, *basis.coeffs.shape))
            if "product plan" not in memo:
                memo["product plan"] = ProductPlan.of(latents.products[0], basis.coeffs)
                memo["cross runs"] = cross_quadratics(latents.products[0], weights, size)
            if cross is None or part.stop > cross[0] + cross[1].shape[0]:
                # the last run freed first: the analysis's peak memory was both runs at once
                cross = None
                cross = next(memo["cross runs"])
            Q = streamed_inner_products(
                latents.products[0], coeffs, weights[part], memo["product plan"],
                cross=cross[1][part.start - cross[0] : part.stop - cross[0]],
            )  # fmt: skip
        else:
            grams = (
                resampled_grams(K, weights[part])
                if K is not None
                else weighted_grams(latents.per_seed, weights[part])
            )
            if chunk_wording is not None:
                Q = paired_inner_products(
                    weighted_coeffs(components, n_prompts, chunk_wording, cache=memo), grams
                )
            else:
                Q = inner_products(basis, grams)
        chunk = Resamples(layout, basis, Q, chunk_wording, memo)
        for statistic in chosen:
            if streamed and statistic.table not in known:
                # rows whose products were not kept (two different concepts) get no interval:
                # one resample tells which (a row is kept when any measure is known: a lean's
                # position is NaN wherever its axis has no marked prompts, products or not)
                first = Resamples(
                    layout, basis, Q[:1],
                    {k: w[:1] for k, w in chunk_wording.items()} if chunk_wording else None,
                    {},
                )  # fmt: skip
                probe = statistic.samples(tables[statistic.table], first)
                rows = np.flatnonzero(~np.isnan(probe[0]).all(axis=-1))
                known[statistic.table] = tables[statistic.table].iloc[rows]
            frame = known.get(statistic.table, tables[statistic.table])
            drawn = statistic.samples(frame, chunk)
            if statistic.table not in collected:
                collected[statistic.table] = np.empty((resamples, *drawn.shape[1:]))
            collected[statistic.table][part] = drawn
    samples_by_table: dict[str, np.ndarray] = {}
    for statistic in chosen:
        samples = collected.pop(statistic.table)  # [B, rows, measures]
        frame = tables[statistic.table]
        estimates = (
            known.get(statistic.table, frame)[list(statistic.measures)].to_numpy(np.float64)
            if centred
            else None
        )
        low, high = _interval(samples, estimates) if samples.shape[1] else (samples[0], samples[0])
        if estimates is not None:  # a cosine's spread placed around it stays a cosine
            for j, column in enumerate(statistic.measures):
                if column == "cosine":
                    low[:, j] = np.clip(low[:, j], -1.0, 1.0)
                    high[:, j] = np.clip(high[:, j], -1.0, 1.0)
        if statistic.table in known and len(known[statistic.table]) < len(frame):
            kept = frame.index.isin(known[statistic.table].index)
            full = np.full((len(frame), len(statistic.measures)), np.nan)
            full_low, full_high = full.copy(), full.copy()
            full_low[kept], full_high[kept] = low, high
            low, high = full_low, full_high
            if samples.shape[0] * full.size * 8 <= STREAMED_Q_BUDGET:
                filled = np.full((samples.shape[0], *full.shape), np.nan)
                filled[:, kept] = samples
                samples_by_table[statistic.table] = filled
        else:
            samples_by_table[statistic.table] = samples
        for j, column in enumerate(statistic.measures):
            frame[f"{column}_ci_low"] = low[:, j]
            frame[f"{column}_ci_high"] = high[:, j]
    return samples_by_table
