"""Lean by denoising step: where along the trajectory a concept's lean forms.

For every kept denoising step the lean score of each concept along each two-group axis is
computed from that step's h alone (the seed mean at that step, measured exactly as
``lean.parquet`` measures the aggregated h), with a 95% bootstrap interval drawn the way the lean
table's are (``statistics``: resamples, seed, resampling). The summary says per axis at which
step the leans reach half their peak strength and how many concepts then already lean to the
side they end on; the report draws one line per concept per axis, with its interval band.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditkit.analyses import base as api
from auditkit.analyses.lean import LEAN

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from auditkit.analyze.measures import AuditLayout
    from auditkit.spec.audit import AuditSpec

NAME = "lean_by_step"
MEMORY_BUDGET = 2 << 30
"""Bytes of per-step, per-seed latents held at once; above it the steps are read in groups."""
HALF = 0.5
"""A lean has formed at the first step whose mean |score| reaches this share of its peak."""

[TABLE] = api.declared_tables(__name__)


def _step_leans(H: np.ndarray, ctx: api.AnalysisContext, layout: AuditLayout) -> pd.DataFrame:
    """The lean rows of one step's prompt latents ``H`` (lean.parquet's required columns),
    whose rows ``layout`` names."""
    from auditkit.analyze.tables import lean_table

    return lean_table(H, layout, len(ctx.latents.seeds))


def _lean_layout(layout: AuditLayout) -> tuple[AuditLayout, list[int]]:
    """The layout of the lean score's own prompts alone (the centring base, the axes' group
    prompts and the concepts'), renumbered from 0, and their rows in ``layout``, ascending.

    The score reads nothing else: the prompts other slices add (the defaults analysis's marked
    prompts, half of the default audit's) only widen the bootstrap's Gram matrices, whose cost
    grows with the square of the prompts, ten times over (once per kept step). The template and
    term draws depend on the axes and concept sets alone, so the intervals are the same."""
    from dataclasses import replace

    from auditkit.analyze.measures import AuditLayout

    used = {layout.base} if layout.base is not None else set()
    for axis in layout.axes:
        used.update(
            r for per_template in axis.groups.values() for rows in per_template for r in rows
        )
    for cset in layout.concepts:
        used.update(r for rows in cset.terms.values() for r in rows)
    rows = sorted(used)
    new = {old: i for i, old in enumerate(rows)}
    axes = tuple(
        replace(axis, groups={g: [[new[r] for r in rows_] for rows_ in per_template]
                              for g, per_template in axis.groups.items()})
        for axis in layout.axes
    )  # fmt: skip
    concepts = tuple(
        replace(cset, terms={c: [new[r] for r in rows_] for c, rows_ in cset.terms.items()})
        for cset in layout.concepts
    )
    base = None if layout.base is None else new[layout.base]
    return AuditLayout(base, axes, concepts, {}, layout.centring), rows


def _step_groups(ctx: api.AnalysisContext, prompts: int) -> list[list[int]]:
    """Kept-step indices in groups whose per-seed latents (of ``prompts`` prompts) fit
    :data:`MEMORY_BUDGET`."""
    P, N, width = prompts, len(ctx.latents.seeds), ctx.latents.width
    per_step = max(P * N * width * 4, 1)
    size = max(1, MEMORY_BUDGET // per_step)
    steps = list(range(len(ctx.latents.steps)))
    return [steps[i : i + size] for i in range(0, len(steps), size)]


def _per_step_latents(ctx: api.AnalysisContext, group: list[int], rows: list[int]) -> np.ndarray:
    """[len(group), len(rows), seeds, width] float32: the h at the grouped steps of each unit
    of the prompts at ``rows`` (of the latents' rows), in that order."""
    import numpy as np

    assert ctx.store is not None
    latents = ctx.latents
    s_row = {seed: i for i, seed in enumerate(latents.seeds)}
    p_row = {latents.prompt_ids[r]: i for i, r in enumerate(rows)}
    where = {
        u.unit_id: (p_row[u.prompt_id], s_row[u.seed])
        for u in ctx.plan.units
        if u.prompt_id in p_row
    }
    width = latents.step_means.shape[-1]
    out = np.zeros((len(group), len(rows), len(latents.seeds), width), np.float32)
    for uid, tensor in ctx.store.iter_units(where):
        p, n = where[uid]
        out[:, p, n] = tensor.numpy().reshape(tensor.shape[0], -1)[group]
    return out


class LeanByStep(api.Analysis):
    name = NAME
    title = "Lean by denoising step"
    after = "lean"
    tables = (TABLE,)
    statistic = "the lean score at each kept step, from that step's seed-mean h"

    def build(self, ctx: api.AnalysisContext) -> dict[str, pd.DataFrame]:
        import numpy as np
        import pandas as pd

        from auditkit.analyze.latents import LatentSet
        from auditkit.analyze.uncertainty import add_bootstrap_intervals

        latents, stats = ctx.latents, ctx.spec.statistics
        intervals = ctx.store is not None and stats.bootstrap_resamples > 0
        intervals = intervals and len(latents.seeds) > 1
        frames = []
        streamed = latents.per_seed is None
        everything = [list(range(len(latents.steps)))]
        # the per-seed path reads the score's own prompts alone (_lean_layout); a streamed
        # audit's products already hold every prompt's
        layout, rows = _lean_layout(ctx.layout) if not streamed else (ctx.layout, [])
        ids = tuple(latents.prompt_ids[r] for r in rows)
        for group in _step_groups(ctx, len(rows)) if intervals and not streamed else everything:
            block = _per_step_latents(ctx, group, rows) if intervals and not streamed else None
            for k, s in enumerate(group):
                at_step: LatentSet | None = None
                if streamed:  # the step's products were kept when the store was read
                    at_step = latents.at_step(s)
                elif block is not None:
                    at_step = LatentSet(
                        ids, latents.seeds, block[k], block[k].mean(axis=1)[:, None],
                        (latents.steps[s],), (latents.timesteps[s],), "mean",
                    )  # fmt: skip
                if at_step is None:
                    H, step_layout = latents.step_means[:, s], ctx.layout
                else:
                    H, step_layout = at_step.means(), layout
                # a streamed audit keeps its step means in float32: the measures read them
                # in float64 a row at a time instead of copying the whole step (most of a large
                # audit's memory)
                frame = _step_leans(H if streamed else H.astype(np.float64), ctx, step_layout)
                if at_step is not None and intervals:
                    add_bootstrap_intervals(
                        {"lean": frame},
                        step_layout,
                        at_step,
                        resamples=stats.bootstrap_resamples,
                        seed=stats.seed,
                        hierarchical=stats.resampling == "hierarchical",
                        centred=stats.interval == "centred",
                        statistics=[LEAN],
                    )
                frames.append(
                    frame.assign(
                        step=int(latents.steps[s]),  # the denoising step, as steps.parquet
                        timestep=float(latents.timesteps[s]),
                        position=range(len(frame)),
                    )
                )
        table = pd.concat(frames, ignore_index=True)  # spec order, then steps
        table = table.sort_values(["position", "step"], kind="stable")
        wanted = [c for c in TABLE.names if c in table.columns]
        return {NAME: table[wanted].reset_index(drop=True)}

    def summary(self, spec: AuditSpec, tables: api.Tables) -> dict[str, Any] | None:
        table = tables.get(NAME)
        if table is None or table.empty:
            return None
        return {
            "axes": [_formation(axis, rows) for axis, rows in table.groupby("axis", sort=False)]
        }

    def findings(self, spec: AuditSpec, tables: api.Tables) -> list[str]:
        block = self.summary(spec, tables)
        return [_sentence(entry) for entry in block["axes"]] if block else []

    def section(self, ctx: api.SectionContext) -> dict[str, Any] | None:
        table = ctx.tables.get(NAME)
        if table is None or table.empty:
            return None
        intervals = "score_ci_low" in table.columns
        axes = []
        for i, (axis, every) in enumerate(table.groupby("axis", sort=False)):
            entry = _formation(axis, every)
            shown = ctx.shown_concepts(
                str(axis), every, "score", "mean lean scores over steps", signed=True
            )
            rows = shown.rows(every)
            steps = sorted(rows["step"].unique())
            axes.append(
                {
                    "axis": axis,
                    "anchor": f"lean-by-step-{i}",
                    "positive_group": str(rows["positive_group"].iloc[0]),
                    "negative_group": str(rows["negative_group"].iloc[0]),
                    "sentence": _sentence(entry),
                    "chart_id": ctx.chart(f"lean-by-step-{i}", chart(rows, intervals)),
                    "steps": [
                        {
                            "step": int(s),
                            "timestep": float(rows[rows["step"] == s]["timestep"].iloc[0]),
                        }
                        for s in steps
                    ],
                    "rows": _wide_rows(rows, steps, intervals),
                    "shown": shown.note(NAME),
                }
            )
        return {"axes": axes, "intervals": intervals, "n_steps": int(table["step"].nunique())}

    def toc(self, data: dict[str, Any]) -> list[tuple[str, str]]:
        return [(a["anchor"], a["axis"]) for a in data["axes"]]


def _formation(axis: Any, rows: pd.DataFrame) -> dict[str, Any]:
    """Where the leans of one axis form: the first step whose mean |score| over concepts reaches
    :data:`HALF` of its peak, and how many concepts then lean to the side they end on."""
    strength = rows.assign(strength=rows["score"].abs()).groupby("step")["strength"].mean()
    steps = list(strength.index)
    peak_step = int(steps[int(strength.to_numpy().argmax())])
    peak = float(strength.max())
    formed = next(int(s) for s in steps if strength[s] >= HALF * peak)
    last = rows[rows["step"] == steps[-1]].set_index(["concept_set", "concept"])["score"]
    at = rows[rows["step"] == formed].set_index(["concept_set", "concept"])["score"]
    same = int(((at > 0) == (last.reindex(at.index) > 0)).sum())
    position = steps.index(formed)
    return {
        "axis": str(axis),
        "steps": len(steps),
        "peak_step": peak_step,
        "peak_mean_abs_score": round(peak, 6),
        "forms_at_step": formed,
        "forms_at_position": position + 1,
        "forms_at_timestep": float(rows[rows["step"] == formed]["timestep"].iloc[0]),
        "concepts": len(at),
        "final_side_at_forms": same,
        "phase": _phase(position, len(steps)),
    }


def _phase(position: int, n: int) -> str:
    if n < 3:
        return "within the kept steps"
    return "early" if position < n / 3 else ("late" if position >= 2 * n / 3 else "midway")


def _sentence(entry: dict[str, Any]) -> str:
    where = (
        f"form {entry['phase']} in denoising"
        if entry["phase"] != "within the kept steps"
        else "are measured at only a few kept steps"
    )
    return (
        f"Lean by denoising step along '{entry['axis']}': the leans {where}; their mean |score| "
        f"reaches half its peak ({entry['peak_mean_abs_score']:.2f}) at step "
        f"{entry['forms_at_step']} (kept step {entry['forms_at_position']} of {entry['steps']}, "
        f"timestep {entry['forms_at_timestep']:.0f}), where {entry['final_side_at_forms']} of "
        f"{entry['concepts']} concepts already lean to the side they end on."
    )


def _wide_rows(rows: pd.DataFrame, steps: list[Any], intervals: bool) -> list[dict[str, Any]]:
    """One row per concept (in the order they first appear): its score (and interval) at each
    step, for the report's table. Every concept has a row at every step."""
    fields = ["score", "score_ci_low", "score_ci_high"] if intervals else ["score"]
    position = {step: i for i, step in enumerate(steps)}
    out: dict[tuple[Any, Any], dict[str, Any]] = {}
    columns = [rows[c].tolist() for c in ["concept_set", "concept", "step", *fields]]
    for cset, concept, step, *values in zip(*columns, strict=True):
        entry = out.get((cset, concept))
        if entry is None:
            entry = out[(cset, concept)] = {
                "concept_set": cset,
                "concept": concept,
                "cells": [None] * len(steps),
            }
        if step in position:
            cell = {"score": float(values[0])}
            if intervals:
                cell |= {"low": float(values[1]), "high": float(values[2])}
            entry["cells"][position[step]] = cell
    for entry in out.values():
        if None in entry["cells"]:
            missing = steps[entry["cells"].index(None)]
            raise KeyError(f"{entry['concept']!r} has no lean at step {missing!r}")
    return list(out.values())


def chart(rows: pd.DataFrame, intervals: bool) -> Any:
    """One axis: a line per concept of its lean score against the kept step (x: the step, its
    timestep in the tooltip), with the 95% interval as a band; ±1 and 0 marked."""
    import altair as alt

    from auditkit.charts.style import GROUP_SCHEME, concept_labels, configure, inline_values

    frame = rows.assign(label=concept_labels(rows))
    lines = frame["label"].nunique()
    legend = alt.Legend(
        orient="right", labelLimit=150, symbolType="stroke", symbolOpacity=1, symbolStrokeWidth=2
    )
    color = alt.Color(
        "label:N",
        title="concept",
        scale=alt.Scale(scheme=GROUP_SCHEME if lines <= 10 else "tableau20"),
        legend=legend if lines <= 20 else None,  # beyond 20 the colours repeat: tooltips name
    )
    x = alt.X(
        "step:Q", title="denoising step (kept steps, 0 = first)", axis=alt.Axis(tickMinStep=1)
    )
    tooltip = [
        alt.Tooltip("concept:N", title="concept"),
        alt.Tooltip("step:Q", title="step"),
        alt.Tooltip("timestep:Q", title="timestep", format=".0f"),
        alt.Tooltip("score:Q", title="lean score", format="+.3f"),
    ]
    base = alt.Chart(inline_values(frame))
    layers = [
        base.mark_rule(color="#8a8f98", strokeDash=[2, 3]).encode(y=alt.YDatum(v)) for v in (-1, 1)
    ] + [base.mark_rule(color="#8a8f98").encode(y=alt.YDatum(0))]  # Altair's classes: see axes
    if intervals:
        tooltip += [
            alt.Tooltip("score_ci_low:Q", title="95% CI low", format="+.3f"),
            alt.Tooltip("score_ci_high:Q", title="95% CI high", format="+.3f"),
        ]
        layers.append(
            base.mark_area(opacity=0.15).encode(
                x=x,
                y=alt.Y("score_ci_low:Q", title="lean score"),
                y2=alt.Y2("score_ci_high:Q"),
                color=color,
            )
        )
    layers.append(
        base.mark_line(point=True, strokeWidth=1.5).encode(
            x=x, y=alt.Y("score:Q", title="lean score"), color=color, tooltip=tooltip
        )
    )
    return configure(alt.layer(*layers).properties(width="container", height=240))


def _worst_step_lean(worst: pd.Series) -> str:
    return (
        f"'{worst['concept']}' on '{worst['axis']}' at kept step {int(worst['step'])} "
        f"(score {float(worst['score']):+.3f})"
    )


LeanByStep.gate_metrics = (
    api.GateMetric(
        "max_step_lean",
        "max",
        "the largest |lean score| at any kept denoising step (optionally one axis or set)",
        api.largest(NAME, "score", _worst_step_lean, absolute=True),
    ),
)

ANALYSIS = LeanByStep()
