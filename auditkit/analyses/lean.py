"""The lean: how far each concept's latent sits along each two-group axis, towards which group,
and whether that lean is large enough to count (docs/method.md, "What a finding claims").

The slice builds the ``lean`` table (and with ``per_step`` aggregation ``steps``), declares its
bootstrap statistic (the score, the cosine and the position between the marked variants, from the
audit's one bootstrap pass), judges significance once the resamples exist (:meth:`Lean.complete`),
sets every lean beside its images when the run read them, and gives the summary its ``leans`` block,
each axis's headline numbers and the findings, the gates ``max_abs_lean`` and ``significant_leans``,
and the report's lean section. The two tables stay in the run directory's core registry
(``auditkit/rundir/tables.yaml``, :mod:`auditkit.rundir.columns`): gates, diff, export and the
calibration suite read them from run directories without loading the analyses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditkit.analyses import base as api
from auditkit.analyze.resampled import Resampled
from auditkit.rundir import REGISTRY

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from auditkit.analyze.uncertainty import Resamples
    from auditkit.spec.audit import AuditSpec
    from auditkit.spec.gates import GateSpec

NAME = "lean"


def _samples(frame: pd.DataFrame, draw: Resamples) -> np.ndarray:
    from auditkit.analyze.resampled_measures import lean_samples

    return lean_samples(frame, draw)


LEAN = Resampled(NAME, ("score", "cosine", "marked_position"), _samples)
"""The lean's bootstrap statistic: its score, cosine and position between the marked variants
on every resample."""


def _worst_lean(worst: pd.Series) -> str:
    return (
        f"'{worst['concept']}' towards '{worst['toward']}' on '{worst['axis']}' "
        f"(score {float(worst['score']):+.3f})"
    )


def _significant_leans(gate: GateSpec, tables: api.Tables) -> tuple[float | None, str]:
    rows, why = api.scoped_rows(tables, NAME, gate)
    if rows is None:
        return None, why
    if "significant" not in rows.columns:
        return None, "the run has no significance test (re-run the analysis)"
    hits = rows[rows["significant"].astype(bool)]
    hits = hits.loc[hits["score"].abs().sort_values(ascending=False, kind="stable").index]
    return float(len(hits)), ", ".join(
        f"'{r.concept}' on '{r.axis}'" for r in hits.head(5).itertuples()
    )


class Lean(api.Analysis):
    name = NAME
    title = "Lean along each axis"
    after = "settings"
    tables = (REGISTRY["lean"], REGISTRY["steps"])
    statistic = (
        "the lean score and cosine of every (axis, concept), and where the concept sits "
        "between its two marked variants, recomputed on each resample of the seeds (and, "
        "hierarchically, of the templates and group terms)"
    )
    resampled = (LEAN,)
    gate_metrics = (
        api.GateMetric(
            "max_abs_lean",
            "max",
            "the largest |lean score| (lean.parquet; optionally one axis or set)",
            api.largest(NAME, "score", _worst_lean, absolute=True),
            scope=("axis", "concept_set"),
        ),
        api.GateMetric(
            "significant_leans",
            "max",
            "how many leans are significant, i.e. findings (optionally one axis or set)",
            _significant_leans,
            scope=("axis", "concept_set"),
        ),
    )
    summary_key = "leans"

    def build(self, ctx: api.AnalysisContext) -> dict[str, pd.DataFrame]:
        from auditkit.analyze.robustness import add_robustness
        from auditkit.analyze.tables import lean_table, steps_table

        lean = lean_table(ctx.H, ctx.layout, len(ctx.latents.seeds))
        add_robustness(lean, ctx.H, ctx.layout)
        built = {NAME: lean}
        if ctx.latents.aggregation == "per_step" and len(ctx.latents.steps) > 1:
            built["steps"] = steps_table(ctx.latents, ctx.layout)
        return built

    def complete(
        self, ctx: api.AnalysisContext, tables: dict[str, pd.DataFrame], samples: api.Samples
    ) -> None:
        """Judge each lean by the spec's rule (with the pass's score resamples) and, when the
        images were read, set it beside them."""
        from auditkit.analyze.significance import EFFECT_SAMPLE, add_significance
        from auditkit.analyze.tables import add_witness_columns
        from auditkit.spec.audit import judged_band, judged_effect

        stats, lean = ctx.spec.statistics, tables[NAME]
        effect = judged_effect(ctx.spec)
        score_samples = samples.get(NAME)
        add_significance(
            lean,
            ctx.H,
            ctx.layout,
            ctx.latents,
            alpha=stats.alpha,
            rule=stats.rule,
            min_effect=judged_band(ctx.spec),
            score_samples=None
            if score_samples is None
            else score_samples[:, :, EFFECT_SAMPLE[effect]],
            effect=effect,
            seed=stats.seed,
        )
        if ctx.readings is not None and ctx.spec.captions is not None:
            add_witness_columns(lean, ctx.spec, ctx.readings)

    def summary(self, spec: AuditSpec, tables: api.Tables) -> list[dict[str, Any]]:
        from auditkit.analyses.lean_summary import lean_records

        return lean_records(tables.get(NAME))

    def axis_summary(self, spec: AuditSpec, tables: api.Tables) -> dict[str, dict[str, Any]]:
        from auditkit.analyses.lean_summary import axis_fields

        return axis_fields(tables.get("axes"), tables.get(NAME))

    def findings(self, spec: AuditSpec, tables: api.Tables) -> list[str]:
        from auditkit.analyses.lean_summary import lean_findings

        return lean_findings(tables.get("axes"), tables.get(NAME))

    def section(self, ctx: api.SectionContext) -> dict[str, Any] | None:
        from auditkit.analyses.lean_section import axis_sections, significance

        axes = axis_sections(ctx)
        if not axes:
            return None
        return {"axes": axes, "significance": significance(ctx.spec, ctx.tables.get(NAME))}

    def toc(self, data: dict[str, Any]) -> list[tuple[str, str]]:
        return [(row["anchor"], row["axis"]) for row in data["axes"]]


ANALYSIS = Lean()
