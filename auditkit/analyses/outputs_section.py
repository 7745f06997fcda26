"""The report's "What the model draws" section (the ``outputs`` slice's): shares per attribute
against the reference, agreement with the leans, and the guidance amplification."""

from __future__ import annotations

from typing import Any

from auditkit import charts
from auditkit.analyses.base import SectionContext
from auditkit.analyses.guidance_section import guidance_section, in_order
from auditkit.analyses.values import finite, frame_records
from auditkit.analyze.stats import number_columns


def output_sections(ctx: SectionContext) -> dict[str, Any] | None:
    """Captioned outputs: shares per attribute vs the reference, and agreement per axis; the
    attributes in the spec's axis order."""
    from auditkit.analyze.outputs import agreement_points

    tables = ctx.tables
    axis_order = [a.name for a in ctx.spec.axes]
    outputs, agreement, lean = tables.get("outputs"), tables.get("agreement"), tables.get("lean")
    if outputs is None or outputs.empty:
        return None
    from auditkit.analyses.outputs import corrected_basis

    read = corrected_basis(outputs)
    attributes = []
    for index, name in enumerate(in_order(outputs["attribute"], axis_order)):
        part = outputs[outputs["attribute"].astype(str) == name]
        chart_id = f"shares-{index}"
        ctx.chart(chart_id, charts.share_chart(part))
        effective = read[read["attribute"].astype(str) == name]
        per_concept = effective.drop_duplicates(["concept_set", "concept"])
        top = per_concept.sort_values("max_abs_gap", ascending=False).head(3)
        attributes.append(
            {
                "attribute": name,
                "chart_id": chart_id,
                "reference": str(part["reference_kind"].iloc[0]),
                "n_images": int(part["n_images"].max()),
                "largest_gaps": frame_records(
                    top, ["concept", "max_gap_group", "max_abs_gap", "kl_bits"]
                ),
                "corrected": bool(
                    "share_basis" in effective.columns
                    and (effective["share_basis"] == "corrected").all()
                ),
            }
        )
    axes = []
    if agreement is not None and lean is not None:
        shares = read[list(c for c in read.columns if not c.startswith("ref"))]
        for index, row in enumerate(agreement.to_dict("records")):
            axis_map = {str(row["attribute"]): str(row["axis"])}
            points = agreement_points(lean, shares, axis_map)
            chart_id = f"agreement-{index}"
            summary_row = {str(k): v for k, v in row.items()}
            ctx.chart(chart_id, charts.agreement_chart(points, summary_row))
            axes.append(
                {
                    "axis": str(row["axis"]),
                    "positive_group": str(row["positive_group"]),
                    **number_columns(row, ["rho", "rho_ci_low", "rho_ci_high"], finite),
                    "n_concepts": int(row["n_concepts"]),
                    "statement": str(row["statement"]),
                    "chart_id": chart_id,
                }
            )
    captioner = dict(ctx.manifest.get("captioner") or {})
    return {
        "captioner": {"id": captioner.get("id"), "sha256": captioner.get("sha256")},
        "attributes": attributes,
        "agreement": axes,
        "guidance": guidance_section(
            tables.get("guidance"), tables.get("amplification"), ctx.chart, axis_order
        ),
    }
