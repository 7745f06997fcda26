"""Output-level evidence: the share of generated images a captioner read as each group.

The latent tables say where the model *places* a concept in h-space; this module measures what
it *draws*. From a tidy readings table (one row per image and attribute, as the caption stage
reads it) it computes per-concept shares with Wilson intervals, compares them with a reference
distribution (uniform, or a table such as labour statistics), and asks whether latent lean and
output share agree in rank across concepts (METHOD.md, "Captions and the output side").
Shares are of *perceived* attributes: the captioner carries its own biases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final, Literal

import numpy as np
import pandas as pd

from auditkit.analyze.stats import spearman, wilson_interval

READING_COLUMNS: Final = ("concept_set", "concept", "seed", "attribute", "value")
"""Columns of a readings table: one row per image (concept and seed) and attribute."""
SHARE_COLUMNS: Final = (
    *("concept_set", "concept", "attribute", "group"),
    *("n_images", "n_unread", "count", "share", "share_low", "share_high"),
)
"""Columns of :func:`output_shares`' table, in order."""
COMPARISON_COLUMNS: Final = (
    *SHARE_COLUMNS,
    *("reference_kind", "reference", "difference", "ratio"),
    *("kl_bits", "entropy_bits", "normalized_entropy", "max_abs_gap", "max_gap_group"),
)
"""Columns of :func:`compare_to_reference`' table, in order."""
POINT_COLUMNS: Final = (
    *("axis", "attribute", "positive_group", "concept_set", "concept", "score"),
    *("share", "share_low", "share_high", "n_images"),
)
"""Columns of :func:`agreement_points`' table, in order."""
AGREEMENT_COLUMNS: Final = (
    *("axis", "attribute", "positive_group", "n_concepts", "rho", "rho_ci_low", "rho_ci_high"),
    *("resamples", "seed", "statement"),
)
"""Columns of :func:`agreement`' table, in order."""

REFERENCE_SMOOTHING: Final = 1e-3
"""Weight of the uniform distribution mixed into a reference before KL: q' = (1 - e) q + e / k.
A reference that gives a group 0 would make KL infinite for any image of that group; with
e = 1e-3 and two groups the KL is capped near 11 bits. A uniform reference is left unchanged."""
REFERENCE_TOLERANCE: Final = 1e-6
"""How far a reference table's proportions for one concept may sum from 1."""
AGREE_RHO: Final = 0.5
"""Spearman rho at or above which (interval excluding 0) outputs are said to agree with leans."""
DISAGREE_RHO: Final = -0.5
"""Spearman rho at or below which (interval excluding 0) outputs are said to disagree."""
MIN_CONCEPTS: Final = 3
"""Fewest concepts (with both a lean and a share) for which a rank correlation is reported."""

Reference = Literal["uniform"] | Mapping[str, Mapping[str, float]]
"""Per attribute: ``"uniform"``, or concept -> group -> expected proportion (summing to 1)."""


def output_shares(
    readings: pd.DataFrame, groups: Mapping[str, Sequence[str]], confidence: float = 0.95
) -> pd.DataFrame:
    """Share of each concept's images read as each group, with a Wilson interval.

    Args:
        readings: columns :data:`READING_COLUMNS`; an image is a (concept_set, concept, seed).
        groups: attribute -> its group values, positive (first) group first. Attributes not
            listed are ignored.
        confidence: level of the Wilson interval.

    Returns:
        One row per (concept_set, concept, attribute, group), in order of first appearance and
        then group order. ``n_images`` counts the images read as one of the groups (the share's
        denominator), ``n_unread`` the others (e.g. ``unknown``), so shares sum to 1 over groups.
        With no image read, share and interval are NaN.

    Raises:
        ValueError: missing columns, a group list with fewer than two or repeated values, an
            image with two readings of one attribute, or a confidence outside (0, 1).
    """
    _require(readings, READING_COLUMNS, "readings")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    problems = [
        f"{attribute}: needs at least two distinct groups, got {list(names)}"
        for attribute, names in groups.items()
        if len(set(names)) < 2 or len(set(names)) != len(names)
    ]
    if problems:
        raise ValueError("groups: " + "; ".join(problems))
    frame = readings[readings["attribute"].isin(list(groups))]
    doubled = frame.duplicated(["concept_set", "concept", "seed", "attribute"])
    if doubled.any():
        row = frame[doubled].iloc[0]
        raise ValueError(
            f"readings: image {row['concept']!r} (set {row['concept_set']!r}, seed "
            f"{row['seed']}) has more than one {row['attribute']!r} reading; keep one per image"
        )
    rows: list[dict[str, object]] = []
    for (cset, concept, attribute), part in frame.groupby(
        ["concept_set", "concept", "attribute"], sort=False
    ):
        values = part["value"].astype(str)
        names = [str(name) for name in groups[str(attribute)]]
        counts = values[values.isin(names)].value_counts()
        n = int(counts.sum())
        for name in names:
            k = int(counts.get(name, 0))
            low, high = wilson_interval(k, n, confidence)
            rows.append(
                {
                    **{"concept_set": cset, "concept": concept, "attribute": attribute},
                    **{"group": name, "n_images": n, "n_unread": len(part) - n, "count": k},
                    **{"share": k / n if n else math.nan, "share_low": low, "share_high": high},
                }
            )
    return pd.DataFrame(rows, columns=list(SHARE_COLUMNS))


def entropy_bits(p: Sequence[float] | np.ndarray) -> float:
    """Shannon entropy (bits) of a distribution, with 0 log 0 = 0; NaN if any entry is NaN."""
    p = np.asarray(p, dtype=np.float64)
    if np.isnan(p).any():
        return math.nan
    nonzero = p[p > 0]
    return float(-(nonzero * np.log2(nonzero)).sum())


def kl_bits(
    observed: Sequence[float] | np.ndarray,
    reference: Sequence[float] | np.ndarray,
    smoothing: float = REFERENCE_SMOOTHING,
) -> float:
    """KL(observed || reference) in bits, the reference smoothed towards uniform first.

    The extra bits per image a code built for the reference spends on the observed
    distribution: 0 when they match. See :data:`REFERENCE_SMOOTHING` for why and how.
    """
    p = np.asarray(observed, dtype=np.float64)
    q = np.asarray(reference, dtype=np.float64)
    if np.isnan(p).any() or np.isnan(q).any():
        return math.nan
    q = (1.0 - smoothing) * q + smoothing / len(q)
    keep = p > 0
    return float(max(0.0, (p[keep] * np.log2(p[keep] / q[keep])).sum()))


def compare_to_reference(shares: pd.DataFrame, reference: Mapping[str, Reference]) -> pd.DataFrame:
    """Compare each concept's output shares with a reference distribution.

    Args:
        shares: the table of :func:`output_shares`.
        reference: attribute -> ``"uniform"`` or concept -> {group: proportion}. Attributes
            not named, and concepts a table does not list, are left out of the result. A group
            a table omits has proportion 0.

    Returns:
        The share rows with ``reference``, ``difference`` (share - reference) and ``ratio``
        (share / reference, NaN where the reference is 0) per group, and per concept (repeated
        on its group rows): ``kl_bits`` (:func:`kl_bits`), ``entropy_bits`` of the observed
        shares, ``normalized_entropy`` (entropy / log2 k: 1 = even split, 0 = one group only),
        and ``max_abs_gap`` with ``max_gap_group``, the group furthest from its reference.

    Raises:
        ValueError: every malformed reference at once (not "uniform" nor a table, proportions
            negative or not summing to 1 within :data:`REFERENCE_TOLERANCE`, unknown groups).
    """
    _require(shares, SHARE_COLUMNS, "shares")
    known = {a: set(part["group"]) for a, part in shares.groupby("attribute")}
    problems = []
    for attribute, expected in reference.items():
        if isinstance(expected, str):
            if expected != "uniform":
                problems.append(f"{attribute}: {expected!r} is neither 'uniform' nor a table")
            continue
        for name, table in expected.items():
            values = np.array(list(table.values()), dtype=np.float64)
            where = f"{attribute}, concept {name!r}"
            if not np.isfinite(values).all() or (values < 0).any():
                problems.append(f"{where}: proportions must be finite and >= 0")
            elif abs(values.sum() - 1.0) > REFERENCE_TOLERANCE:
                problems.append(f"{where}: proportions sum to {values.sum():.6g}, not 1")
            unknown = sorted(set(table) - known.get(attribute, set(table)))
            if unknown:
                problems.append(f"{where}: groups {unknown} are not groups of the attribute")
    if problems:
        raise ValueError("reference: " + "; ".join(problems))
    out = []
    for (_, key, attr), part in shares.groupby(["concept_set", "concept", "attribute"], sort=False):
        concept, ref = str(key), reference.get(str(attr))
        if ref is None or (not isinstance(ref, str) and concept not in ref):
            continue
        k = len(part)
        if isinstance(ref, str):
            q = np.full(k, 1.0 / k)
        else:
            q = np.array([float(ref[concept].get(g, 0.0)) for g in part["group"]])
        p = part["share"].to_numpy(np.float64)
        gaps = np.abs(p - q)
        readable = bool(np.isfinite(p).all())
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(q > 0, p / q, math.nan)
        out.append(
            part.assign(
                reference_kind="uniform" if isinstance(ref, str) else "table",
                reference=q,
                difference=p - q,
                ratio=ratio,
                kl_bits=kl_bits(p, q),
                entropy_bits=entropy_bits(p),
                normalized_entropy=entropy_bits(p) / math.log2(k),
                max_abs_gap=float(gaps.max()) if readable else math.nan,
                max_gap_group=str(part["group"].iloc[int(gaps.argmax())]) if readable else "",
            )
        )
    if not out:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    return pd.concat(out, ignore_index=True)[list(COMPARISON_COLUMNS)]


def agreement_points(
    latent: pd.DataFrame, shares: pd.DataFrame, attribute_axis: Mapping[str, str]
) -> pd.DataFrame:
    """One row per concept with both a latent lean score and an output share of the axis.

    Args:
        latent: lean rows with columns axis, concept_set, concept, score (``lean.parquet``).
        shares: the table of :func:`output_shares`.
        attribute_axis: captioned attribute -> the latent axis it reads (e.g. gender -> gender).

    The share is that of the axis's positive group: ``latent``'s ``positive_group`` when it
    has that column and names a group of the attribute, else the attribute's first group.
    Concepts without a finite score or share are left out.
    """
    _require(latent, ("axis", "concept_set", "concept", "score"), "latent")
    _require(shares, SHARE_COLUMNS, "shares")
    keys = ["concept_set", "concept"]
    if latent.duplicated(["axis", *keys]).any():
        raise ValueError("latent: more than one score per (axis, concept); pass one row each")
    parts = []
    for attribute, axis in attribute_axis.items():
        lean = latent[latent["axis"] == axis]
        rows = shares[shares["attribute"] == attribute]
        names = list(dict.fromkeys(rows["group"]))
        named = lean["positive_group"].astype(str).tolist() if "positive_group" in lean else []
        positive = next((g for g in named if g in names), names[0] if names else "")
        rows = rows[rows["group"] == positive]
        cols = [*keys, "share", "share_low", "share_high", "n_images"]
        merged = lean[[*keys, "score"]].merge(rows[cols], on=keys, how="inner")
        merged = merged[np.isfinite(merged["score"]) & np.isfinite(merged["share"])]
        parts.append(merged.assign(axis=axis, attribute=attribute, positive_group=positive))
    if not parts:
        return pd.DataFrame(columns=list(POINT_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(POINT_COLUMNS)]


def agreement(
    latent: pd.DataFrame,
    shares: pd.DataFrame,
    attribute_axis: Mapping[str, str],
    resamples: int = 1000,
    seed: int = 0,
    *,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Whether latent lean and output share rank concepts alike, per axis.

    Spearman's rho across concepts (:func:`agreement_points`) with a percentile bootstrap
    interval from resampling concepts with replacement (a ``numpy`` Generator seeded with
    ``seed`` afresh for each axis, so an axis's result does not depend on the others;
    resamples where every drawn concept ties are skipped). ``statement`` reads: "outputs
    agree" (rho >= :data:`AGREE_RHO`, interval above 0), "outputs disagree" (rho <=
    :data:`DISAGREE_RHO`, interval below 0), "inconclusive", or, with NaN numbers, "too few
    concepts" (under :data:`MIN_CONCEPTS`) or "no variation" (constant scores or shares).
    The interval reflects which concepts were audited, not the sampling noise of each share.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    points = agreement_points(latent, shares, attribute_axis)
    rows = []
    for attribute, axis in attribute_axis.items():
        part = points[(points["axis"] == axis) & (points["attribute"] == attribute)]
        x = part["score"].to_numpy(np.float64)
        y = part["share"].to_numpy(np.float64)
        rho, low, high = math.nan, math.nan, math.nan
        if len(part) < MIN_CONCEPTS:
            statement = "too few concepts"
        elif np.ptp(x) == 0 or np.ptp(y) == 0:
            statement = "no variation"
        else:
            rho = spearman(x.tolist(), y.tolist())
            rng = np.random.default_rng(seed)
            low, high = _bootstrap_interval(x, y, resamples, rng, confidence)
            statement = _verdict(rho, low, high)
        positive = str(part["positive_group"].iloc[0]) if len(part) else ""
        rows.append(
            {
                **{"axis": axis, "attribute": attribute, "positive_group": positive},
                **{"n_concepts": len(part), "rho": rho, "rho_ci_low": low, "rho_ci_high": high},
                **{"resamples": resamples, "seed": seed, "statement": statement},
            }
        )
    return pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))


def _verdict(rho: float, low: float, high: float) -> str:
    if rho >= AGREE_RHO and low > 0:
        return "outputs agree"
    if rho <= DISAGREE_RHO and high < 0:
        return "outputs disagree"
    return "inconclusive"


def _bootstrap_interval(
    x: np.ndarray, y: np.ndarray, resamples: int, rng: np.random.Generator, confidence: float
) -> tuple[float, float]:
    """Percentile interval of Spearman's rho over concept resamples (NaN resamples skipped)."""
    picks = rng.integers(0, len(x), size=(resamples, len(x)))
    rhos = row_spearman(x[picks], y[picks])
    rhos = rhos[np.isfinite(rhos)]
    if rhos.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(rhos, [tail, 1.0 - tail])
    return float(low), float(high)


def row_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of two [B, n] arrays at once (average ranks for ties).

    The batched form of :func:`auditkit.analyze.stats.spearman` for bootstraps: NaN where a
    row is constant.
    """
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(denom > 0, (rx * ry).sum(axis=1) / denom, math.nan)
    return np.clip(rho, -1.0, 1.0)


def _average_ranks(rows: np.ndarray) -> np.ndarray:
    """1-based ranks within each row of a [B, n] array, ties sharing their mean rank."""
    b, n = rows.shape
    order = np.argsort(rows, axis=1, kind="stable")
    ordered = np.take_along_axis(rows, order, axis=1)
    starts = np.ones((b, n), dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ties = np.cumsum(starts, axis=1) - 1 + (np.arange(b) * n)[:, None]
    positions = np.broadcast_to(np.arange(1, n + 1, dtype=np.float64), (b, n))
    sums = np.bincount(ties.ravel(), weights=positions.ravel(), minlength=b * n)
    sizes = np.bincount(ties.ravel(), minlength=b * n)
    ranks = np.empty((b, n), dtype=np.float64)
    np.put_along_axis(ranks, order, sums[ties] / sizes[ties], axis=1)
    return ranks


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}; expected {list(columns)}")
