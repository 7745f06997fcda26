"""Image-grounded axes: do real images of each group reproduce the prompt-derived axis?

The images are read by a pass (:mod:`auditkit.passes.grounding`: labelled images encoded with
the model's VAE, noised to every step and read at the audit's hook, stored in
``grounding/activations`` with ``grounding/grounding_images.parquet``). This slice runs when the
spec has ``grounding:``, not under ``analyses:``. It builds, from those image latents and the
audit's prompt latents (:mod:`auditkit.analyze.grounding`), ``results/grounding_axes.parquet``
(per axis: the cosine between the prompt-derived axis and its image-derived twin with a
bootstrap interval over images, its chance level, and how the two axes order the concepts)
and ``results/grounding_leans.parquet`` (per axis and concept: the two leans side by side).
Its report section, "How the images were read", holds the subsection "Grounding of each axis".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from auditkit.analyses import base as api

if TYPE_CHECKING:
    import pandas as pd

    from auditkit.spec.audit import AuditSpec
    from auditkit.spec.gates import GateSpec

NAME = "grounding"
IMAGES, AXES, LEANS = api.declared_tables(__name__)


class Grounding(api.Analysis):
    name = NAME
    title = "How the images were read: the grounding of each axis"
    after = "reader"
    tables = (IMAGES, AXES, LEANS)
    statistic = (
        "the cosine between each prompt-derived axis and its image-derived twin, and the "
        "concepts' leans along the image-derived axis (percentile bootstrap over the labelled "
        "images, resampled within each group)"
    )

    def applies(self, spec: AuditSpec) -> bool:
        return spec.grounding is not None

    def build(self, ctx: api.AnalysisContext) -> dict[str, pd.DataFrame]:
        """The axes and leans tables from the image latents the pass stored (none when the run
        has none: ``ctx.grounded`` is None)."""
        from auditkit.analyze.grounding import ground_axes

        grounded = ctx.grounded
        if grounded is None or not grounded.axes:
            return {}
        stats = ctx.spec.statistics
        built = ground_axes(
            ctx.H, ctx.layout, grounded, resamples=stats.bootstrap_resamples, seed=stats.seed
        )
        return {AXES.name: built["grounding_axes"], LEANS.name: built["grounding_leans"]}

    def summary(self, spec: AuditSpec, tables: api.Tables) -> dict[str, Any] | None:
        axes = tables.get(AXES.name)
        if axes is None or axes.empty:
            return None
        section = spec.grounding
        return {
            "prompt": section.prompt if section is not None else "",
            "axes": [_record(row) for row in axes.to_dict("records")],
        }

    def findings(self, spec: AuditSpec, tables: api.Tables) -> list[str]:
        block = self.summary(spec, tables)
        return [entry["statement"] for entry in block["axes"]] if block else []

    def section(self, ctx: api.SectionContext) -> dict[str, Any] | None:
        return grounding_section(ctx)

    def toc(self, data: dict[str, Any]) -> list[tuple[str, str]]:
        return [("grounding-axes", "Grounding of each axis")]


def _record(row: Mapping[Any, Any]) -> dict[str, Any]:
    """One axis's entry of the summary block (JSON-ready), with its sentence."""
    from auditkit.analyze.stats import number_columns

    numbers = number_columns(
        row,
        ["cosine", "cosine_ci_low", "cosine_ci_high", "chance_cosine", "rho", "rho_ci_low",
         "rho_ci_high", "other_cosine", "prompt_norm", "image_norm"],
    )  # fmt: skip
    return {
        "axis": str(row["axis"]),
        "positive_group": str(row["positive_group"]),
        "negative_group": str(row["negative_group"]),
        "n_positive": int(row["n_positive"]),
        "n_negative": int(row["n_negative"]),
        "n_concepts": int(row["n_concepts"]),
        **numbers,
        "reproduced": bool(row["reproduced"]),
        "other_axis": str(row["other_axis"]),
        "adjusted_for": [a for a in str(row["adjusted_for"]).split(",") if a],
        "statement": statement(row),
    }


def _interval(low: Any, high: Any) -> str:
    import math

    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return ""
    return f" (95% CI {float(low):+.2f} to {float(high):+.2f})"


def verdict(row: Any) -> str:
    """``reproduced``, ``not reproduced`` or ``not measured`` (no resamples: no chance level)."""
    import math

    if not math.isfinite(float(row["chance_cosine"])):
        return "not measured"
    return "reproduced" if bool(row["reproduced"]) else "not reproduced"


def statement(row: Any) -> str:
    """The finding of one grounded axis, in one plain sentence or two."""
    import math

    head = (
        f"Grounding of '{row['axis']}': labelled images of '{row['positive_group']}' and "
        f"'{row['negative_group']}' ({int(row['n_positive'])} and {int(row['n_negative'])}) "
        f"give an axis whose cosine with the prompt-derived axis is {float(row['cosine']):+.2f}"
        f"{_interval(row['cosine_ci_low'], row['cosine_ci_high'])}"
    )
    chance = float(row["chance_cosine"])
    if not math.isfinite(chance):
        head += " (no chance level without bootstrap resamples)."
    elif bool(row["reproduced"]):
        head += (
            f", above the {chance:.2f} that random halves of one group's images reach: the "
            "images reproduce the axis."
        )
    else:
        head += (
            f", not clearly above the {chance:.2f} that random halves of one group's images "
            "reach: the images do not reproduce the axis, which may be an artefact of its "
            "wording."
        )
    other = float(row["other_cosine"])
    if math.isfinite(other) and other >= float(row["cosine"]):
        head += (
            f" It matches the image axis of '{row['other_axis']}' as well ({other:.2f}): the "
            "match is not specific to its attribute."
        )
    rho = float(row["rho"])
    if math.isfinite(rho):
        head += (
            f" Along it the concepts rank as along the prompt axis with Spearman rho "
            f"{rho:+.2f}{_interval(row['rho_ci_low'], row['rho_ci_high'])} over "
            f"{int(row['n_concepts'])} concepts."
        )
    return head


def grounding_section(ctx: api.SectionContext) -> dict[str, Any] | None:
    """Per grounded axis: its verdict, cosine and chance level, and the two leans of every
    concept (a chart and a table)."""
    from auditkit.analyses.values import finite

    axes_table, leans = ctx.tables.get(AXES.name), ctx.tables.get(LEANS.name)
    if axes_table is None or axes_table.empty:
        return None
    axes = []
    for index, row in enumerate(axes_table.to_dict("records")):
        rows = leans[leans["axis"] == row["axis"]] if leans is not None else None
        concept_rows = []
        chart_id = None
        if rows is not None and len(rows):
            chart_id = ctx.chart(f"grounding-{index}", chart(rows))
            ordered = rows.sort_values("image_score", ascending=False, kind="stable")
            concept_rows = [
                {
                    "concept_set": str(r["concept_set"]),
                    "concept": str(r["concept"]),
                    "prompt_score": finite(r["prompt_score"]),
                    "prompt_centred": finite(r["prompt_centred"]),
                    "image_score": finite(r["image_score"]),
                    "image_score_ci": [
                        finite(r["image_score_ci_low"]),
                        finite(r["image_score_ci_high"]),
                    ],
                    "image_cosine": finite(r["image_cosine"]),
                }
                for r in ordered.to_dict("records")
            ]
        axes.append(
            {
                "anchor": f"grounding-{index}",
                "axis": str(row["axis"]),
                "positive_group": str(row["positive_group"]),
                "negative_group": str(row["negative_group"]),
                "n_positive": int(row["n_positive"]),
                "n_negative": int(row["n_negative"]),
                "cosine": finite(row["cosine"]),
                "cosine_ci": [finite(row["cosine_ci_low"]), finite(row["cosine_ci_high"])],
                "chance_cosine": finite(row["chance_cosine"]),
                "other_cosine": finite(row["other_cosine"]),
                "other_axis": str(row["other_axis"]),
                "adjusted_for": str(row["adjusted_for"]).replace(",", ", "),
                "rho": finite(row["rho"]),
                "rho_ci": [finite(row["rho_ci_low"]), finite(row["rho_ci_high"])],
                "n_concepts": int(row["n_concepts"]),
                "verdict": verdict(row),
                "statement": statement(row),
                "chart_id": chart_id,
                "rows": concept_rows,
            }
        )
    section = ctx.spec.grounding
    images = section.images if section is not None else None
    source = None
    if images is not None:
        source = (
            f"a toyworld draw of {images.toyworld} images (seed {images.seed})"
            if images.toyworld is not None
            else f"the folder {images.folder} ({images.labels})"
        )
    return {
        "prompt": section.prompt if section is not None else "",
        "source": source,
        "per_group": section.per_group if section is not None else None,
        "hook": ctx.spec.probe.hook,
        "steps": ctx.spec.model.steps,
        "n_resamples": int(axes_table["n_resamples"].iloc[0]),
        "axes": axes,
    }


def chart(rows: pd.DataFrame) -> Any:
    """One axis: each concept's lean along the prompt-derived axis (x, the lean score) against
    its lean along the image-derived axis (y, the centred score), with the image lean's 95%
    interval as a vertical rule."""
    import altair as alt

    from auditkit.charts.style import (
        INTERVAL_COLOR,
        POSITIVE_COLOR,
        concept_labels,
        configure,
        inline_values,
    )

    positive = str(rows["positive_group"].iloc[0])
    frame = rows.assign(label=concept_labels(rows))
    tooltip = [
        alt.Tooltip("concept_set:N", title="concept set"),
        alt.Tooltip("concept:N", title="concept"),
        alt.Tooltip("prompt_score:Q", title="lean score (prompt axis)", format="+.3f"),
        alt.Tooltip("image_score:Q", title="centred score (image axis)", format="+.3f"),
        alt.Tooltip("image_score_ci_low:Q", title="95% CI low", format="+.3f"),
        alt.Tooltip("image_score_ci_high:Q", title="95% CI high", format="+.3f"),
    ]
    x = alt.X("prompt_score:Q", title=f"lean along the prompt axis (+ = towards {positive})")

    def y(field: str) -> alt.Y:
        return alt.Y(f"{field}:Q", title=f"lean along the image axis (+ = towards {positive})")

    base = alt.Chart(inline_values(frame))
    error = base.mark_rule(color=INTERVAL_COLOR, opacity=0.45, strokeWidth=1.5).encode(
        x=x, y=y("image_score_ci_low"), y2="image_score_ci_high:Q", tooltip=tooltip
    )
    dots = base.mark_point(filled=True, size=70, opacity=0.9, color=POSITIVE_COLOR).encode(
        x=x, y=y("image_score"), tooltip=tooltip
    )
    labels = base.mark_text(align="left", dx=6, fontSize=10, color="#555").encode(
        x=x, y=y("image_score"), text="concept:N"
    )
    layers = [error, dots] + ([labels] if len(frame) <= 20 else [])
    return configure(alt.layer(*layers).properties(width="container", height=260))


def _min_grounding_cosine(gate: GateSpec, tables: api.Tables) -> tuple[float | None, str]:
    table = tables.get(AXES.name)
    if table is None or table.empty:
        return None, "the run has no image-grounded axes (add a grounding section to the spec)"
    rows = api.gate_rows(table, gate)
    if rows.empty:
        return None, "no grounded axis in scope"
    worst = rows.iloc[int(rows["cosine"].to_numpy(dtype=float).argmin())]
    return float(worst["cosine"]), (
        f"'{worst['axis']}': cosine {float(worst['cosine']):+.3f} between the prompt-derived "
        "axis and its image-derived twin"
    )


Grounding.gate_metrics = (
    api.GateMetric(
        "min_grounding_cosine",
        "min",
        "the smallest cosine between a prompt-derived axis and its image-derived twin "
        "(grounding_axes.parquet; optionally one axis)",
        _min_grounding_cosine,
        scope=("axis",),
    ),
)

ANALYSIS = Grounding()
