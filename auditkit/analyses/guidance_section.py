"""The report's guidance-amplification part of "What the model draws", as plain data.

From the ``guidance`` and ``amplification`` tables (:mod:`auditkit.analyze.guidance`): per
attribute, a chart of the share read as its first group at each guidance scale, and per swept
scale the amplification with its interval and a plain verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from auditkit import charts
from auditkit.analyses.values import finite
from auditkit.analyze.guidance import (
    AMPLIFICATION_NUMBERS,
    amplification_sentence,
    amplification_verdict,
    times_text,
)
from auditkit.analyze.stats import number_columns


def guidance_section(
    guidance: pd.DataFrame | None,
    amplification: pd.DataFrame | None,
    keep_chart: Callable[[str, Any], str],
    axis_order: list[str] | None = None,
) -> dict[str, Any] | None:
    """Charts (given to ``keep_chart``, e.g. :meth:`SectionContext.chart`) and rows of the
    guidance sweep (attributes in ``axis_order`` first), or None when the run has none."""
    if guidance is None or guidance.empty or amplification is None:
        return None
    attributes = []
    for index, name in enumerate(in_order(guidance["attribute"], axis_order or [])):
        part = guidance[guidance["attribute"].astype(str) == name]
        first = str(part["group"].iloc[0])
        chart_id = f"guidance-{index}"
        rows = part[part["group"].astype(str) == first]
        keep_chart(chart_id, charts.guidance_chart(rows))
        amplified = amplification[amplification["attribute"].astype(str) == name]
        attributes.append(
            {
                "attribute": name,
                "group": first,
                "chart_id": chart_id,
                "rows": [
                    {
                        **number_columns(r, AMPLIFICATION_NUMBERS, finite),
                        "low": finite(r["amplification_ci_low"]),
                        "high": finite(r["amplification_ci_high"]),
                        "n_concepts": int(r["n_concepts"]),
                        "verdict": amplification_verdict(r),
                        "ratio_text": times_text(float(r["amplification"])),
                        "interval_text": _interval(r),
                        "low_scale": min(float(r["guidance"]), float(r["audit_guidance"])),
                        "high_scale": max(float(r["guidance"]), float(r["audit_guidance"])),
                        "sentence": amplification_sentence(r),
                    }
                    for r in amplified.to_dict("records")
                ],
            }
        )
    audit = guidance[guidance["audit"].astype(bool)]
    return {
        "attributes": attributes,
        "audit_guidance": finite(audit["guidance"].iloc[0]) if not audit.empty else None,
        "scales": sorted({float(g) for g in guidance["guidance"]}),
    }


def _interval(row: Mapping[Any, Any]) -> str:
    low, high = float(row["amplification_ci_low"]), float(row["amplification_ci_high"])
    if math.isnan(low) or math.isnan(high):
        return ""
    return f"[{times_text(low)}, {times_text(high)}]"


def in_order(values: pd.Series, order: list[str]) -> list[str]:
    """The distinct values as str, those named in ``order`` first and in its order."""
    distinct = list(dict.fromkeys(values.astype(str)))
    return [v for v in order if v in distinct] + [v for v in distinct if v not in order]


__all__ = ["guidance_section", "in_order"]
