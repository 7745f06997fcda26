"""Guidance amplification: how far classifier-free guidance pushes output shares.

The guidance sweep (:mod:`auditkit.passes.guidance`) reads the concept prompts' images at other
guidance scales. Per scale this module computes the same output shares as the outputs table
(:func:`auditkit.analyze.outputs.output_shares`, one image per unit, Wilson intervals) and, per
attribute, the *spread*: the mean over concepts of the total-variation distance between a
concept's shares and its reference (for two groups: |share of the first group - its reference|).
The amplification between the audit's scale and a swept one is the spread at the higher scale
divided by the spread at the lower: above 1, more guidance draws the concepts further from the
reference (against scale 1: further than the model's learned distribution). Its 95% interval
resamples concepts.

Tables (``results/``):

* ``guidance.parquet``: the share columns plus ``guidance``, ``audit`` (whether it is the
  audit's own scale), ``reference_kind`` and ``reference``; one row per (scale, concept,
  attribute, group).
* ``amplification.parquet``: one row per (attribute, swept scale).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from auditkit.analyze.outputs import SHARE_COLUMNS, Reference, compare_to_reference, output_shares

GUIDANCE_COLUMNS: Final = ("guidance", "audit", *SHARE_COLUMNS, "reference_kind", "reference")
"""Columns of the guidance table, in order."""
AMPLIFICATION_COLUMNS: Final = (
    *("attribute", "positive_group", "reference_kind", "guidance", "audit_guidance"),
    *("n_concepts", "spread", "audit_spread", "amplification"),
    *("amplification_ci_low", "amplification_ci_high", "resamples", "seed"),
)
"""Columns of the amplification table, in order."""
AMPLIFICATION_NUMBERS: Final = (
    "guidance",
    "audit_guidance",
    "spread",
    "audit_spread",
    "amplification",
)
"""The amplification table's measures that its summary and report rows carry as numbers."""


def guidance_shares(
    readings: pd.DataFrame,
    swept: pd.DataFrame,
    groups: Mapping[str, Sequence[str]],
    reference: Mapping[str, Reference],
    audit_guidance: float,
) -> pd.DataFrame:
    """Output shares at the audit's scale (``readings``, concept rows) and at every swept
    scale (``swept``, the sweep's readings with a ``guidance`` column), with references."""
    parts = []
    scales = [(float(audit_guidance), readings, True)] + [
        (float(str(g)), rows, False) for g, rows in swept.groupby("guidance", sort=True)
    ]
    for scale, rows, audit in scales:
        # one image per unit (prompt x seed): several templates share a concept and a seed
        shares = output_shares(rows.assign(seed=rows["unit_id"]), groups)
        compared = compare_to_reference(shares, reference)
        parts.append(compared.assign(guidance=scale, audit=audit))
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values("guidance", kind="stable")[list(GUIDANCE_COLUMNS)].reset_index(
        drop=True
    )


def amplification(
    shares: pd.DataFrame, *, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> pd.DataFrame:
    """Per attribute and swept scale: spreads, their ratio and a concept-bootstrap interval.

    The ratio is always the spread at the *higher* of the two scales over the spread at the
    lower one, so above 1 means "more guidance, further from the reference" whichever scale the
    audit used. It is infinite when only the higher scale spreads the shares at all, NaN when
    neither does. Concepts with an unread share at either scale are left out of that comparison.
    """
    rows = []
    audit = shares[shares["audit"]]
    audit_guidance = float(audit["guidance"].iloc[0]) if not audit.empty else math.nan
    distance = _distances(shares)
    rng = np.random.default_rng(seed)
    for (attribute, scale), part in distance.groupby(["attribute", "guidance"], sort=False):
        if bool(part["audit"].iloc[0]):
            continue
        at_audit = distance[(distance["attribute"] == attribute) & distance["audit"]]
        paired = part.merge(at_audit, on=["concept_set", "concept"], suffixes=("", "_audit"))
        paired = paired[np.isfinite(paired["tv"]) & np.isfinite(paired["tv_audit"])]
        swept, at_audit_scale = paired["tv"].to_numpy(), paired["tv_audit"].to_numpy()
        higher_is_audit = audit_guidance > float(str(scale))
        top, base = (at_audit_scale, swept) if higher_is_audit else (swept, at_audit_scale)
        n = len(paired)
        ratio = _ratio(top.mean(), base.mean()) if n else math.nan
        low = high = math.nan
        if n >= 2 and resamples > 0:
            picks = rng.integers(0, n, size=(resamples, n))
            ratios = np.array([_ratio(top[p].mean(), base[p].mean()) for p in picks])
            ratios = np.sort(ratios[~np.isnan(ratios)])  # +inf kept: it is the upper tail
            if len(ratios):
                tail = (1 - confidence) / 2
                low = float(ratios[int(np.floor(tail * (len(ratios) - 1)))])
                high = float(ratios[int(np.ceil((1 - tail) * (len(ratios) - 1)))])
        first = shares[shares["attribute"] == attribute]["group"].iloc[0]
        kinds = shares[shares["attribute"] == attribute].get("reference_kind")
        rows.append(
            {
                **{"attribute": attribute, "positive_group": str(first)},
                "reference_kind": "uniform" if kinds is None else str(kinds.iloc[0]),
                **{"guidance": float(str(scale)), "audit_guidance": audit_guidance},
                **{"n_concepts": n, "spread": float(swept.mean()) if n else math.nan},
                "audit_spread": float(at_audit_scale.mean()) if n else math.nan,
                **{"amplification": ratio, "amplification_ci_low": low},
                **{"amplification_ci_high": high, "resamples": resamples, "seed": seed},
            }
        )
    return pd.DataFrame(rows, columns=list(AMPLIFICATION_COLUMNS))


RATIO_TOLERANCE: Final = 1e-9
"""How far past 1 an interval end must lie to count as above or below 1 (float noise)."""


def amplification_verdict(row: Mapping[Any, Any]) -> str:
    """'amplifies' / 'dampens' when the interval lies above / below 1 (more guidance moves the
    shares further from / closer to the reference), else 'no clear change'. Without an interval
    (a single concept) the point estimate decides only when it is infinite."""
    low, high = _float(row.get("amplification_ci_low")), _float(row.get("amplification_ci_high"))
    ratio = _float(row.get("amplification"))
    if math.isnan(low) and math.isinf(ratio):
        return "amplifies"
    if not math.isnan(low) and low > 1 + RATIO_TOLERANCE:
        return "amplifies"
    if not math.isnan(high) and high < 1 - RATIO_TOLERANCE:
        return "dampens"
    return "no clear change"


def amplification_sentence(row: Mapping[Any, Any]) -> str:
    """One plain sentence for an amplification row (the higher scale against the lower)."""
    audit, scale = _float(row["audit_guidance"]), _float(row["guidance"])
    spreads = {audit: _float(row["audit_spread"]), scale: _float(row["spread"])}
    high_scale, low_scale = max(audit, scale), min(audit, scale)
    ratio = _float(row["amplification"])
    head = f"Guidance {high_scale:g} vs {low_scale:g} on '{row['attribute']}'"
    distances = (
        f"mean distance {spreads[low_scale]:.2f} at guidance {low_scale:g}, "
        f"{spreads[high_scale]:.2f} at {high_scale:g}, over {row['n_concepts']} concepts"
    )
    if math.isnan(ratio):
        return f"{head}: not measured (no concept read at both scales, or no spread at either)."
    if math.isinf(ratio):
        return (
            f"{head}: {amplification_verdict(row)} — the shares move away from the reference "
            f"only at the higher scale ({distances})."
        )
    low, high = _float(row["amplification_ci_low"]), _float(row["amplification_ci_high"])
    interval = f", 95% CI {times_text(low)} to {times_text(high)}" if not math.isnan(low) else ""
    return (
        f"{head}: {amplification_verdict(row)} — at the higher scale the images are "
        f"{times_text(ratio)} as far from the reference{interval} ({distances})."
    )


def times_text(value: float) -> str:
    """A ratio as '×1.66' ('×∞' when infinite)."""
    return "×∞" if math.isinf(value) else f"×{value:.2f}"


def _float(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return math.nan


def _distances(shares: pd.DataFrame) -> pd.DataFrame:
    """Total-variation distance from the reference per (scale, concept, attribute)."""
    gap = (shares["share"] - shares["reference"]).abs()
    frame = shares.assign(gap=gap)
    keys = ["guidance", "audit", "attribute", "concept_set", "concept"]
    return (
        frame.groupby(keys, sort=False)["gap"]
        .agg(lambda g: 0.5 * g.sum(min_count=len(g)))
        .rename("tv")
        .reset_index()
    )


def _ratio(top: float, base: float) -> float:
    """top / base; +inf when only ``top`` is above 0, NaN when neither is."""
    if base > 0:
        return float(top / base)
    return math.inf if top > 0 else math.nan


__all__ = [
    "AMPLIFICATION_COLUMNS",
    "AMPLIFICATION_NUMBERS",
    "GUIDANCE_COLUMNS",
    "amplification",
    "amplification_sentence",
    "amplification_verdict",
    "guidance_shares",
    "times_text",
]
