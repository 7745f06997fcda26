"""The report's causal check: per steered axis its dose-response chart, statement and shares."""

from __future__ import annotations

from typing import Any

import pandas as pd

from auditkit import charts
from auditkit.analyses.values import finite
from auditkit.analyze.causal import alpha_text, causal_records
from auditkit.spec import AuditSpec


def causal_section(
    extra: dict[str, pd.DataFrame],
    spec: AuditSpec,
    manifest: dict[str, Any],
    chart_specs: dict[str, dict[str, Any]],
) -> dict[str, Any] | None:
    """The causal check: per steered axis its dose-response chart, statement and shares."""

    records = causal_records(extra, spec.probe.hook)
    if not records:
        return None
    curve, per_concept = extra["causal_curve"], extra.get("causal")
    axes = []
    for index, record in enumerate(records):
        points = curve[curve["axis"] == record["axis"]].sort_values("alpha")
        concepts = None
        if per_concept is not None:
            concepts = per_concept[per_concept["axis"] == record["axis"]]
        chart_id = f"causal-{index}"
        chart_specs[chart_id] = charts.dose_response_chart(points, concepts).to_dict()
        alphas = [float(a) for a in points["alpha"]]
        rows = []
        if concepts is not None and len(concepts):
            wide = concepts.pivot_table(
                index=["concept_set", "concept"], columns="alpha", values="share", sort=False
            )
            rows = [
                {
                    "concept_set": str(key[0]),
                    "concept": str(key[1]),
                    "shares": [finite(wide.loc[key].get(a)) for a in alphas],
                }
                for key in wide.index
            ]
        axes.append(
            {
                **record,
                "anchor": f"causal-{index}",
                "chart_id": chart_id,
                "alphas": [alpha_text(a) for a in alphas],
                "points": [
                    {**point, "alpha_text": alpha_text(float(point["alpha"]))}
                    for point in record["shares"]
                ],
                "concept_rows": rows,
            }
        )
    n_seeds = None
    if spec.captions is not None and spec.captions.causal is not None:
        from auditkit.passes.causal import causal_seeds

        n_seeds = len(causal_seeds(spec))
    captioner = dict(manifest.get("captioner") or {})
    return {
        "hook": spec.probe.hook,
        "captioner": captioner.get("id"),
        "n_seeds": n_seeds,
        "axes": axes,
    }
