"""The causal check: does steering along an axis's direction change what the model draws?

The check itself is a pass (:mod:`auditkit.passes.causal`): it samples the concept prompts again
with ``alpha * g`` added to the hook point's output, reads the images and writes this slice's
tables (``captions/causal*.parquet``, declared in ``causal.tables.yaml`` beside this module). It
runs when the spec has ``captions.causal``, not under ``analyses:``. This slice declares those
tables, turns them into the summary's ``causal`` block and findings (one statement per steered
axis) and the report's dose-response section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditkit.analyses import base as api

if TYPE_CHECKING:
    import pandas as pd

    from auditkit.spec.audit import AuditSpec
    from auditkit.spec.gates import GateSpec

NAME = "causal"
TABLES = api.declared_tables(__name__)


class Causal(api.Analysis):
    name = NAME
    title = "Causal check"
    after = "exemplars"
    summary_key = NAME
    summary_optional = True
    tables = TABLES
    statistic = (
        "the share of steered images read as the axis's first group at each alpha (95% Wilson "
        "intervals, not bootstrap)"
    )

    def applies(self, spec: AuditSpec) -> bool:
        return spec.captions is not None and spec.captions.causal is not None

    def build(self, ctx: api.AnalysisContext) -> dict[str, pd.DataFrame]:
        """Nothing: the causal check's tables are written by its pass
        (:mod:`auditkit.passes.causal`), which samples the pipeline again; the analysis stage
        reads them back for the summary, gates and report."""
        return {}

    def summary(self, spec: AuditSpec, tables: api.Tables) -> list[dict[str, Any]] | None:
        from auditkit.analyze.causal import causal_records

        return causal_records(_present(tables), spec.probe.hook)

    def findings(self, spec: AuditSpec, tables: api.Tables) -> list[str]:
        return [str(entry["statement"]) for entry in self.summary(spec, tables) or []]

    def section(self, ctx: api.SectionContext) -> dict[str, Any] | None:
        return causal_section(ctx)

    def toc(self, data: dict[str, Any]) -> list[tuple[str, str]]:
        return [(a["anchor"], a["axis"]) for a in data["axes"]]


def _present(tables: api.Tables) -> dict[str, pd.DataFrame]:
    return {name: frame for name, frame in tables.items() if frame is not None}


def causal_section(ctx: api.SectionContext) -> dict[str, Any] | None:
    """The causal check: per steered axis its dose-response chart, statement and shares."""
    from auditkit import charts
    from auditkit.analyses.values import finite
    from auditkit.analyze.causal import alpha_text, causal_records

    spec, tables = ctx.spec, _present(ctx.tables)
    records = causal_records(tables, spec.probe.hook)
    if not records:
        return None
    curve, per_concept = tables["causal_curve"], tables.get("causal")
    axes = []
    for index, record in enumerate(records):
        points = curve[curve["axis"] == record["axis"]].sort_values("alpha")
        concepts = None
        if per_concept is not None:
            concepts = per_concept[per_concept["axis"] == record["axis"]]
        chart_id = ctx.chart(f"causal-{index}", charts.dose_response_chart(points, concepts))
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
    captioner = dict(ctx.manifest.get("captioner") or {})
    return {
        "hook": spec.probe.hook,
        "captioner": captioner.get("id"),
        "n_seeds": n_seeds,
        "axes": axes,
    }


def _min_causal_effect(gate: GateSpec, tables: api.Tables) -> tuple[float | None, str]:
    table = tables.get("causal_axes")
    if table is None or table.empty:
        return None, "the run has no causal check (add captions.causal to the spec)"
    if gate.concept_set is not None:
        return None, "causal_axes.parquet pools the steered concepts: scope the gate by axis"
    rows = api.gate_rows(table, gate)
    import numpy as np

    effects = rows["effect"].to_numpy(dtype=float)
    if not np.isfinite(effects).any():
        return None, "no steered axis in scope has a measured effect"
    worst = rows.iloc[int(np.nanargmin(effects))]
    return float(worst["effect"]), (
        f"steering along '{worst['axis']}' moves the share read as "
        f"'{worst['positive_group']}' by {float(worst['effect']):+.3f}"
    )


Causal.gate_metrics = (
    api.GateMetric(
        "min_causal_effect",
        "min",
        "the smallest steering effect across the steered axes: the share read as the axis's "
        "first group at the largest alpha minus at the smallest (causal_axes.parquet; "
        "optionally one axis)",
        _min_causal_effect,
    ),
)

ANALYSIS = Causal()
