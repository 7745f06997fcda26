"""What makes a lean a finding: one rule per run, chosen by ``statistics.rule``.

``min_effect`` (default): a lean is a finding when its judged statistic (``statistics.effect``:
the lean score, or the position between the concept's marked variants) is beyond the
equivalence band ``±statistics.min_effect`` with 95% confidence. Its p-value tests "the
statistic is no larger than the band" against "it is larger" on the side of the estimate,
from the bootstrap's standard error (``z = (|estimate| − band) / se``,
``p = 2·(1 − Φ(z))``); Benjamini–Hochberg adjusts the p-values of the whole audit, and a
finding also needs the statistic's 95% interval entirely beyond the band, so a finding is
never shown next to an interval that reaches 0. A lean much smaller than the band is never a
finding however many seeds are drawn: seeds change the precision, not the verdict
(docs/method.md measures it).

The two rules of earlier runs remain, to reproduce them; docs/method.md measures why neither
is the default:

``labels`` (default): permuted group labels. At each seed the concept's centred latent is
projected on that seed's axis contrast; under the null the two groups' labels are
exchangeable at each seed, so relabelling flips the sign of that seed's projection. The
p-value compares the observed mean projection with 10,000 random relabellings. It asks:
*is the lean larger than the seed-to-seed variation of the model's own samples?*

``vocabulary``: null axes from the audit's own vocabulary. Each null axis is the difference
of two *other* concepts (``teacher − pilot`` when testing ``nurse``) with every demographic
direction of the audit projected out (the span of all axes' group contrasts), so it cannot
carry the associations under test even where most concepts share them. The statistic is
``|cos(c − R, axis)|`` against the pooled ``|cos(c' − R, null axis)|`` of every concept c' of
the set: *is the concept more aligned with the axis than with arbitrary contrasts between
concepts?* It is much stricter with few concepts (the null axes then live in the same small
subspace as the concepts) and needs at least three concepts.

With either, Benjamini–Hochberg adjusts the p-values of every (axis, concept) pair of the audit
together, and a lean is labelled *significant* when its q-value is below ``statistics.alpha``
**and** the bootstrap interval of its cosine excludes 0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from auditkit.analyze.latents import LatentSet
from auditkit.analyze.measures import (
    AuditLayout,
    ConceptMatrix,
    group_means,
    reference,
)
from auditkit.analyze.stats import benjamini_hochberg

MAX_NULL_PAIRS = 2000
"""Null axes per (axis, concept) at most; beyond that a seeded random subset is used."""

SIGNIFICANCE_COLUMNS = ["rule", "effect", "min_effect", "p_value", "q_value", "significant"]
"""Columns the rule adds to the lean table (runs of the legacy rules also have ``null_model``;
runs made before the rule was recorded have ``null_model`` only; runs made before ``effect``
was recorded judged the score)."""

EFFECT_SAMPLE = {"score": 0, "marked_position": 2}
"""Where each judged statistic sits in the lean's resampled measures (``LEAN``)."""

EFFECT_NAMES = {"score": "lean score", "marked_position": "position between marked variants"}
"""Each judged statistic in words."""


def effect_of(lean: pd.DataFrame | None) -> str:
    """The lean table's column the rule judged: ``effect`` as recorded, else ``score`` (runs
    made before the setting judged the score)."""
    if lean is None or lean.empty or "effect" not in lean.columns:
        return "score"
    value = lean["effect"].iloc[0]
    return str(value) if isinstance(value, str) and value in EFFECT_NAMES else "score"


def rule_of(lean: pd.DataFrame) -> tuple[str | None, float | None]:
    """The rule a lean table was judged by and its band: (``rule``, ``min_effect``), read from
    the table so that an older run keeps its own; (None, None) when it was never tested."""
    if lean.empty or "significant" not in lean.columns:
        return None, None
    if "rule" in lean.columns:
        rule = str(lean["rule"].iloc[0])
    elif "null_model" in lean.columns:
        rule = str(lean["null_model"].iloc[0])
    else:
        rule = "labels"
    band = None
    if rule == "min_effect" and "min_effect" in lean.columns:
        band = float(lean["min_effect"].iloc[0])
    return rule, band


def rule_words(rule: str | None, band: float | None, effect: str = "score") -> str:
    """What a significant lean is, in the words of its rule (for sentences and tooltips)."""
    if rule == "min_effect" and effect == "marked_position":
        return (
            f"its position between its marked variants ('a <group> <concept>') is beyond "
            f"±{band:g} (the smallest lean the audit counts) with 95% confidence"
        )
    if rule == "min_effect":
        return (
            f"its score is beyond ±{band:g} (the smallest lean the audit counts) with 95% "
            "confidence"
        )
    if rule == "vocabulary":
        return (
            "its |cosine| with the axis exceeds that of null axes made from the audit's other "
            "concepts (a legacy rule: it says nothing of size)"
        )
    return (
        "it is larger than random relabelling of the two groups, seed by seed, gives (a legacy "
        "rule: any lean reproducible across seeds, however small)"
    )


def min_effect_p_values(scores: np.ndarray, samples: np.ndarray | None, band: float) -> np.ndarray:
    """p-values of "|lean| ≤ band" against "|lean| > band" on the side of the estimate.

    ``samples`` [resamples, rows] are the bootstrap's scores; their standard deviation is the
    standard error. NaN where there are no resamples.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if samples is None or samples.shape[0] < 2:
        return np.full(scores.shape, np.nan)
    se = np.std(samples, axis=0, ddof=1)
    excess = np.abs(scores) - band
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, excess / se, np.where(excess > 0, np.inf, -np.inf))
    p = np.clip(special.erfc(z / math.sqrt(2.0)), 0.0, 1.0)
    return np.where(np.isnan(scores), np.nan, p)  # an unknown statistic cannot be tested


def _demographic_basis(H: np.ndarray, layout: AuditLayout) -> np.ndarray:
    """Orthonormal rows spanning every axis's group contrasts (G(g) − mean of the axis's G)."""
    contrasts = []
    for axis in layout.axes:
        means = np.asarray(list(group_means(H, axis).values()), dtype=np.float64)
        contrasts.extend(means - means.mean(axis=0))
    if not contrasts:
        return np.empty((0, H.shape[1]))
    A = np.asarray(contrasts)
    _, singular, vt = np.linalg.svd(A, full_matrices=False)
    keep = singular > singular.max() * 1e-8 if singular.size else np.zeros(0, dtype=bool)
    return np.asarray(vt[keep])


def _pairs(allowed: np.ndarray, chosen: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The pairs ``itertools.combinations(allowed, 2)`` lists, or those at positions
    ``chosen`` of that list, without listing it (a 1,000-concept set has half a million)."""
    n = len(allowed)
    index = np.arange(n * (n - 1) // 2) if chosen is None else np.asarray(chosen, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(np.arange(n - 1, 0, -1))])  # first position of row a
    a = np.searchsorted(starts, index, side="right") - 1
    b = a + 1 + (index - starts[a])
    return allowed[a], allowed[b]


def null_cosines(
    H: np.ndarray,
    layout: AuditLayout,
    set_name: str,
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per concept of ``set_name``: |cos| of its centred latent with every null axis (the
    difference of two *other* concepts, with every demographic direction projected out).
    Worked out from the Gram matrix of the projected concept latents: a null axis's norm and
    its product with the concept need no vector of its own."""
    keys = [(c.name, name) for c in layout.concepts for name in c.terms]
    sets = [ConceptMatrix.of(H, c) for c in layout.concepts]
    every = ConceptMatrix(
        [name for _, name in keys], H, np.concatenate([m.averaging for m in sets])
    )
    basis = _demographic_basis(H, layout)
    # the projected latents p = x − (x Bᵀ) B never exist: their Gram comes from H's
    gram = every.gram(basis=basis)
    cset = next(c for c in layout.concepts if c.name == set_name)
    ref = reference(H, layout, cset).reshape(-1)
    # every projected concept's product with x − ref, for each concept x of the set: p·x is
    # a column of the Gram matrix, p·ref = x'·ref − (B x')·(B ref)
    mine = [i for i, key in enumerate(keys) if key[0] == set_name]
    Hf = H.reshape(len(H), -1)
    p_ref = every.averaging @ (Hf @ ref)
    if basis.size:
        p_ref -= (every.averaging @ (Hf @ basis.T)) @ (basis @ ref)
    along_all = gram[:, mine] - p_ref[:, None]
    lengths = sets[[c.name for c in layout.concepts].index(set_name)].centred_norms(ref)
    rng = np.random.default_rng([seed, 7])
    out: dict[str, np.ndarray] = {}
    for j, i in enumerate(mine):
        concept = keys[i][1]
        allowed = np.asarray([k for k in range(len(keys)) if k != i], dtype=np.int64)
        total = len(allowed) * (len(allowed) - 1) // 2
        if total == 0:
            out[concept] = np.empty(0)
            continue
        chosen = None
        if total > MAX_NULL_PAIRS:
            chosen = np.sort(rng.choice(total, size=MAX_NULL_PAIRS, replace=False))
        first, second = _pairs(allowed, chosen)
        along = along_all[:, j]  # every projected concept's product with this one
        dots = along[first] - along[second]
        squared = gram[first, first] + gram[second, second] - 2.0 * gram[first, second]
        squared[squared <= 1e-12 * (gram[first, first] + gram[second, second])] = 0.0
        norms = np.sqrt(np.clip(squared, 0.0, None)) * lengths[j]
        out[concept] = np.abs(np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0))
    return out


PERMUTATIONS = 10_000
"""Random relabellings drawn for the permuted-labels null (p-values resolve to 1e-4)."""


def label_null_p_values(
    lean: pd.DataFrame,
    layout: AuditLayout,
    latents: LatentSet,
    *,
    seed: int = 0,
    permutations: int = PERMUTATIONS,
) -> np.ndarray:
    """p-values of the permuted-group-labels null, one per lean row.

    Per seed n the statistic is ``t_n = (c_n − R_n)·(A_n − B_n)``: the concept's centred latent
    and the axis contrast, both from seed n alone. Under the null the concept does not prefer
    either group, so the labels A and B are exchangeable at each seed and ``t_n`` is symmetric
    about 0; relabelling a seed flips its sign. The p-value is the share of random relabellings
    (independent sign flips, the identity included) whose ``|mean t|`` reaches the observed one.
    Needs two seeds or more (NaN otherwise).
    """
    from auditkit.analyze.gram import build_basis, inner_products

    out = np.full(len(lean), np.nan)
    n_seeds = len(latents.seeds)
    if lean.empty or n_seeds < 2:
        return out
    if latents.per_seed is None:  # streamed: each seed alone is a one-hot seed weight
        from auditkit.analyze.products import ProductPlan, streamed_inner_products

        products = latents.products[0]
        basis = build_basis(layout, products.n_rows, products.ref_rows)
        plan = ProductPlan.of(products, basis.coeffs)
        seed_blocks = [list(range(n, min(n + 4, n_seeds))) for n in range(0, n_seeds, 4)]
        Qs: Iterable[np.ndarray] = (  # lazily: every block reuses the plan's buffer
            streamed_inner_products(
                products,
                np.broadcast_to(basis.coeffs, (len(block), *basis.coeffs.shape)),
                np.eye(n_seeds)[block],
                plan,
            )[: len(block)]
            for block in seed_blocks
        )
    else:
        basis = build_basis(layout, latents.per_seed.shape[0])
        X = np.asarray(latents.per_seed, dtype=np.float64)
        grams = np.einsum("pnd,qnd->npq", X, X, optimize=True)  # one prompt Gram per seed
        Qs = [inner_products(basis, grams)]  # [N, V, V]
    if 2**n_seeds <= permutations:  # few seeds: every relabelling, an exact test
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n_seeds)))
    else:
        rng = np.random.default_rng([seed, 11])
        signs = rng.choice(np.array([-1.0, 1.0]), size=(permutations, n_seeds))
        signs[0] = 1.0
    index = np.asarray(
        [
            (
                basis[("concept", str(row.concept_set), str(row.concept))],
                basis[("ref", str(row.concept_set))],
                basis[("group", str(row.axis), str(row.positive_group))],
                basis[("group", str(row.axis), str(row.negative_group))],
            )
            for row in lean.itertuples(index=False)
        ],
        dtype=np.int64,
    )
    c, r, a, b = index.T
    # the statistic per seed and row, [N, rows] (a streamed audit's Q comes in seed blocks,
    # each computed into the same buffer, so each block's rows are taken before the next)
    T = np.concatenate([(Q[:, c, a] - Q[:, c, b]) - (Q[:, r, a] - Q[:, r, b]) for Q in Qs])
    for start in range(0, len(lean), 256):  # [relabellings, rows] a block of rows at a time
        t = T[:, start : start + 256]
        null = np.abs(signs @ t) / n_seeds
        observed = np.abs(t.mean(axis=0))
        out[start : start + 256] = np.mean(null >= observed * (1 - 1e-12), axis=0)
    return out


def vocabulary_null_p_values(
    lean: pd.DataFrame, H: np.ndarray, layout: AuditLayout, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """p-values of the null-axes test (and how many null axes each used), one per lean row."""
    pooled: dict[str, np.ndarray] = {}
    for set_name in lean["concept_set"].astype(str).unique():
        per_concept = null_cosines(H, layout, set_name, seed=seed)
        values = [v for v in per_concept.values() if v.size]
        pooled[set_name] = np.sort(np.concatenate(values)) if values else np.empty(0)
    counts = np.zeros(len(lean), dtype=np.int64)
    p_values = np.full(len(lean), np.nan)
    observed = np.abs(lean["cosine"].to_numpy(dtype=np.float64))
    for i, set_name in enumerate(lean["concept_set"].astype(str)):
        null = pooled[set_name]
        counts[i] = null.size
        if null.size:
            exceed = null.size - np.searchsorted(null, observed[i] - 1e-12, side="left")
            p_values[i] = (1.0 + exceed) / (1.0 + null.size)
    return p_values, counts


def add_significance(
    lean: pd.DataFrame,
    H: np.ndarray,
    layout: AuditLayout,
    latents: LatentSet,
    *,
    alpha: float,
    rule: str = "min_effect",
    min_effect: float = 0.0,
    score_samples: np.ndarray | None = None,
    effect: str = "score",
    seed: int = 0,
) -> None:
    """Add ``rule``, ``min_effect``, ``p_value``, ``q_value`` and ``significant`` to the lean
    table (and ``null_model`` under the legacy rules).

    ``rule`` is ``min_effect`` (the ``effect`` column, ``score`` or ``marked_position``, beyond
    ±``min_effect``, tested with the bootstrap's ``score_samples`` [resamples, rows] of that
    column), or a legacy null model: ``labels`` (permuted group
    labels per seed) or ``vocabulary`` (null axes from the audit's other concepts). Rows that
    cannot be tested (one seed or no resamples; fewer than three concepts for ``vocabulary``)
    get NaN p- and q-values and ``significant = False``.
    """
    if lean.empty:
        for column in SIGNIFICANCE_COLUMNS:
            kind = {"significant": "bool", "rule": "object"}.get(column, "float64")
            lean[column] = pd.Series(dtype=kind)
        return
    judged = effect if rule == "min_effect" else "score"
    scores = lean[judged].to_numpy(dtype=np.float64)
    if rule == "min_effect":
        p_values = min_effect_p_values(scores, score_samples, min_effect)
    elif rule == "vocabulary":
        p_values, _ = vocabulary_null_p_values(lean, H, layout, seed=seed)
    else:
        p_values = label_null_p_values(lean, layout, latents, seed=seed)
    q_values = benjamini_hochberg(p_values)
    significant = np.nan_to_num(q_values, nan=1.0) < alpha
    if rule == "min_effect":
        if {f"{judged}_ci_low", f"{judged}_ci_high"} <= set(lean.columns):
            low = lean[f"{judged}_ci_low"].to_numpy(dtype=np.float64)
            high = lean[f"{judged}_ci_high"].to_numpy(dtype=np.float64)
            significant &= (low > min_effect) | (high < -min_effect)
        else:
            significant[:] = False
    elif {"cosine_ci_low", "cosine_ci_high"} <= set(lean.columns):
        low = lean["cosine_ci_low"].to_numpy(dtype=np.float64)
        high = lean["cosine_ci_high"].to_numpy(dtype=np.float64)
        significant &= (low > 0) | (high < 0)
    lean["rule"] = rule
    lean["effect"] = judged
    lean["min_effect"] = float(min_effect) if rule == "min_effect" else np.nan
    if rule != "min_effect":
        lean["null_model"] = rule
    lean["p_value"] = p_values
    lean["q_value"] = q_values
    lean["significant"] = significant


MAPPING_FILE = Path(__file__).resolve().parent / "mapping.json"
"""The shipped lean-to-share mapping, measured by the calibration suite (``auditkit calibrate
run`` writes a new one under its --work folder; docs/method.md has the table)."""


def read_mapping(path: Path = MAPPING_FILE, *, effect: str = "score") -> list[dict[str, Any]]:
    """The shipped mapping's bins for the judged statistic ``effect`` (``bins`` for the lean
    score, ``marked_position_bins`` for the position; [] when none is shipped). Each bin has
    ``score_low``/``score_high``, the bin's edges in the statistic's units."""
    import json

    if not path.is_file():
        return []
    document = json.loads(path.read_text(encoding="utf-8"))
    key = "bins" if effect == "score" else f"{effect}_bins"
    return list(document.get(key, []))
