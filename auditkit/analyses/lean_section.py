"""The report's lean section: one block per two-group axis (chart, table, images beside the
leans), and the rule that judged significance with the shipped lean-to-share mapping."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from auditkit import charts
from auditkit.analyses.base import SectionContext
from auditkit.analyses.values import (
    ShownConcepts,
    axis_info,
    clear_of_zero,
    finite,
    frame_records,
)
from auditkit.analyze.significance import effect_of, rule_of, rule_words
from auditkit.spec import AuditSpec


def axis_sections(ctx: SectionContext) -> list[dict[str, Any]]:
    tables = ctx.tables
    axes, lean, steps = tables["axes"], tables["lean"], tables["steps"]
    if lean is None:
        return []
    names = list(dict.fromkeys(lean["axis"].tolist()))
    judged = effect_of(lean)  # the statistic the rule judged: its bars, interval and order
    sections = []
    for index, name in enumerate(names):
        every = lean[lean["axis"] == name]
        shown = ctx.shown_concepts(name, every, "score", "lean scores", signed=True)
        rows = shown.rows(every).sort_values(judged, ascending=False)
        pos, neg = str(rows["positive_group"].iloc[0]), str(rows["negative_group"].iloc[0])
        info = axis_info(axes, name)
        chart_id = f"lean-{index}"
        ctx.chart(chart_id, charts.lean_chart(rows, pos, neg, measure=judged))
        intervals = charts.has_interval(rows, judged)
        steps_id = None
        if steps is not None and (steps["axis"] == name).any():
            steps_id = f"steps-{index}"
            part = shown.rows(steps[steps["axis"] == name])
            ctx.chart(steps_id, charts.steps_chart(part))
        agreement_id = None
        step_agreement = tables.get("step_agreement")
        if step_agreement is not None and (step_agreement["axis"] == name).any():
            agreement_id = f"step-agreement-{index}"
            part = step_agreement[step_agreement["axis"] == name]
            ctx.chart(agreement_id, charts.step_agreement_heatmap(part))
        sections.append(
            {
                "anchor": f"axis-{index}",
                "axis": name,
                "positive_group": pos,
                "negative_group": neg,
                "norm": info.get("norm"),
                "n_prompts": info.get("n_prompts"),
                "step_consistency": info.get("step_consistency"),
                "chart_id": chart_id,
                "steps_chart_id": steps_id,
                "step_agreement_chart_id": agreement_id,
                "rows": _lean_rows(rows, intervals, judged),
                "judged": judged,
                "intervals": intervals,
                "tested": "significant" in rows.columns,
                "witnessed": "witness" in rows.columns and rows["witness"].astype(str).ne("").any(),
                "n_seeds": int(rows["n_seeds"].max()),
                "shown": _shown_note(shown, every),
            }
        )
    return sections


def _shown_note(shown: ShownConcepts, every: pd.DataFrame) -> dict[str, Any] | None:
    """The cut-table note, with how many of the axis's significant leans the cut shows."""
    note = shown.note("lean")
    if note is not None and "significant" in every.columns:
        flagged = every[every["significant"].astype(bool)]
        note["significant"] = len(flagged)
        note["significant_shown"] = len(shown.rows(flagged))
    return note


def significance(spec: AuditSpec, lean: pd.DataFrame | None) -> dict[str, Any] | None:
    """Audit-wide numbers of the rule the run was judged by (read from its lean table, so an
    older run keeps its own rule), or None for runs without a test."""
    if lean is None or "significant" not in lean.columns:
        return None
    tested = lean["p_value"].notna()
    rule, band = rule_of(lean)
    effect = effect_of(lean)
    return {
        "alpha": spec.statistics.alpha,
        "tested": int(tested.sum()),
        "significant": int(lean["significant"].sum()),
        "rule": rule,
        "effect": effect,
        "min_effect": band,
        "rule_words": rule_words(rule, band, effect),
        "mapping": _mapping_rows(effect) if rule == "min_effect" else [],
    }


def _mapping_rows(effect: str = "score") -> list[dict[str, Any]]:
    """The shipped mapping from the judged statistic to image shares, for the sentence under
    the band."""
    from auditkit.analyze.significance import read_mapping

    rows = []
    for row in read_mapping(effect=effect):
        high = row.get("score_high")
        low = float(row["score_low"])
        rows.append(
            {
                "scores": f"{low:.2f}–{float(high):.2f}" if high is not None else f"≥ {low:.2f}",
                "pairs": int(row["pairs"]),
                "median": f"{100 * float(row['median_skew']):+.0f}",
                "low": f"{100 * float(row['skew_p10']):+.0f}",
                "high": f"{100 * float(row['skew_p90']):+.0f}",
            }
        )
    return rows


def _lean_rows(rows: pd.DataFrame, intervals: bool, judged: str = "score") -> list[dict[str, Any]]:
    """The table's rows; ``ci_low``/``ci_high`` are the interval of the judged statistic (the
    score, or the position between marked variants, shown then in a column of its own)."""
    columns = ["concept_set", "concept", "toward", "score", "cosine", "projection"]
    if judged != "score":
        columns.append(judged)
    if intervals:
        columns += [f"{judged}_ci_low", f"{judged}_ci_high"]
    records = frame_records(rows, columns)
    tested = "significant" in rows.columns
    fragile = "fragile" in rows.columns
    for record, row in zip(records, rows.itertuples(), strict=True):
        record["judged"] = record[judged]
        if intervals:
            record["ci_low"] = record[f"{judged}_ci_low"]
            record["ci_high"] = record[f"{judged}_ci_high"]
            record["clear_of_zero"] = clear_of_zero(record["ci_low"], record["ci_high"])
        record["finding"] = charts.finding_text(row) if tested else None
        record["q_value"] = finite(row.q_value) if tested else None
        record["finding_short"] = charts.finding_text(row, short=True) if tested else None
        record["significant"] = bool(row.significant) if tested else None
        record["fragile"] = bool(row.fragile) if fragile else None
        record["images"] = _image_text(row)
    return records


def _image_text(row: Any) -> dict[str, Any] | None:
    """The images beside a lean (the lean table's witness columns), or None without them."""
    share = getattr(row, "image_share", None)
    if share is None or not math.isfinite(float(share)):
        return None
    low, high = float(row.image_share_low), float(row.image_share_high)
    witness = str(row.witness)
    return {
        "share": f"{100 * float(share):.0f}% {row.positive_group}",
        "interval": f"{100 * low:.0f}–{100 * high:.0f}%",
        "witness": witness,
        "flag": witness in ("images only", "latent only", "opposite"),
    }
