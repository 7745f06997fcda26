"""The comparison report of ``auditkit diff``: context, chart and rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd

from auditkit import __version__
from auditkit.charts import FONT, chart_spec, compact_chart
from auditkit.diff import DiffResult, diff_summary

REGRESSION_COLOR = "#9b1c1c"
IMPROVEMENT_COLOR = "#1f7a4d"
UNCHANGED_COLOR = "#5b6270"


def delta_chart(rows: pd.DataFrame, width: Any = "container") -> alt.LayerChart:
    """Per concept of one axis: a rule from the baseline lean score to the new one, the new
    score as a dot, coloured by regression / improvement / within tolerance."""
    frame = rows.assign(
        change=[
            "regression" if r else ("improvement" if i else "within tolerance")
            for r, i in zip(rows["regression"], rows["improvement"], strict=True)
        ],
        label=[
            f"{c} ({s})" if rows["concept_set"].nunique() > 1 else str(c)
            for c, s in zip(rows["concept"], rows["concept_set"], strict=True)
        ],
    ).sort_values("score_new", ascending=False)
    frame = frame.assign(
        delta_ci=[
            "—" if pd.isna(lo) else f"[{lo:+.3f}, {hi:+.3f}]"
            for lo, hi in zip(frame["delta_ci_low"], frame["delta_ci_high"], strict=True)
        ]
    )
    records = frame[
        ["label", "concept", "score_base", "score_new", "delta", "delta_ci", "growth", "change"]
    ].to_dict("records")
    order = frame["label"].tolist()
    y = alt.Y("label:N", sort=order, title=None)
    color = alt.Color(
        "change:N",
        title="change",
        scale=alt.Scale(
            domain=["regression", "improvement", "within tolerance"],
            range=[REGRESSION_COLOR, IMPROVEMENT_COLOR, UNCHANGED_COLOR],
        ),
    )
    tooltip = [
        alt.Tooltip("concept:N"),
        alt.Tooltip("score_base:Q", title="baseline score", format="+.3f"),
        alt.Tooltip("score_new:Q", title="new score", format="+.3f"),
        alt.Tooltip("delta:Q", title="delta", format="+.3f"),
        alt.Tooltip("delta_ci:N", title="delta 95% CI"),
        alt.Tooltip("change:N"),
    ]
    base = alt.Chart(alt.Data(values=records))
    what = "lean score"
    if "measure" in rows.columns and (rows["measure"] == "marked_position").any():
        what = "position between marked variants"
    x = alt.X("score_base:Q", title=f"{what} (rule: from baseline; dot: new)")
    rules = base.mark_rule(strokeWidth=2).encode(
        x=x, x2="score_new:Q", y=y, color=color, tooltip=tooltip
    )
    start = base.mark_tick(thickness=2, size=10, color=UNCHANGED_COLOR).encode(
        x="score_base:Q", y=y, tooltip=tooltip
    )
    end = base.mark_circle(size=70, opacity=1).encode(
        x="score_new:Q", y=y, color=color, tooltip=tooltip
    )
    zero = alt.Chart(alt.Data(values=[{"x": 0}])).mark_rule(color="#999").encode(x="x:Q")
    return (
        alt.layer(zero, rules, start, end)
        .properties(width=width, height=max(60, 22 * len(order)))
        .configure(font=FONT)
        .configure_view(stroke=None)
        .configure_legend(orient="top")
    )


def build_diff_context(
    result: DiffResult, base_dir: Path, new_dir: Path, *, tolerance: float
) -> dict[str, Any]:
    """Everything the diff template shows, as plain data (it never calls library code)."""
    summary = diff_summary(result, base_dir, new_dir)
    charts: dict[str, dict[str, Any]] = {}
    axes = []
    for index, (axis, rows) in enumerate(result.table.groupby("axis", sort=False)):
        chart_id = f"delta-{index}"
        charts[chart_id] = chart_spec(delta_chart(rows))
        ordered = rows.sort_values("growth", ascending=False)
        axes.append(
            {
                "axis": str(axis),
                "chart_id": chart_id,
                "measure": "Position between marked variants"
                if str(rows["measure"].iloc[0]) == "marked_position"
                else "Lean score",
                "regressions": int(rows["regression"].sum()),
                "improvements": int(rows["improvement"].sum()),
                "rows": [
                    {
                        "concept_set": str(r["concept_set"]),
                        "concept": str(r["concept"]),
                        "score_base": float(r["score_base"]),
                        "score_new": float(r["score_new"]),
                        "delta": float(r["delta"]),
                        "delta_ci_low": None if pd.isna(r["delta_ci_low"]) else r["delta_ci_low"],
                        "delta_ci_high": None
                        if pd.isna(r["delta_ci_high"])
                        else r["delta_ci_high"],
                        "growth": float(r["growth"]),
                        "regression": bool(r["regression"]),
                        "improvement": bool(r["improvement"]),
                    }
                    for r in ordered.to_dict("records")
                ],
            }
        )
    return {
        "title": "Checkpoint comparison",
        "auditkit_version": __version__,
        "base": summary["base"],
        "new": summary["new"],
        "tolerance": tolerance,
        "regressions": summary["regressions"],
        "improvements": summary["improvements"],
        "spec_differences": summary["spec_differences"],
        "gates": summary["gates"],
        "passed": summary["passed"],
        "axes": axes,
        "charts": {name: compact_chart(chart) for name, chart in charts.items()},
    }


def render_diff(
    result: DiffResult,
    base_dir: Path,
    new_dir: Path,
    out_dir: Path,
    *,
    tolerance: float,
    formats: list[str],
) -> list[Path]:
    """Write diff.json, junit.xml, and diff.html / diff.pdf into ``out_dir``."""
    import json

    from auditkit.report.render import render_html, render_pdf
    from auditkit.rundir import write_bytes_atomic, write_json_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    context = build_diff_context(result, base_dir, new_dir, tolerance=tolerance)
    written = [out_dir / "diff.json"]
    write_json_atomic(written[0], diff_summary(result, base_dir, new_dir))
    write_bytes_atomic(out_dir / "junit.xml", _junit(result))
    written.append(out_dir / "junit.xml")
    if "html" in formats:
        path = out_dir / "diff.html"
        write_bytes_atomic(path, render_html(context, "diff.html.j2").encode("utf-8"))
        written.append(path)
    if "pdf" in formats:
        path = out_dir / "diff.pdf"
        write_bytes_atomic(path, render_pdf(context, "diff.html.j2"))
        written.append(path)
    json.dumps(context["charts"])  # charts must be plain JSON
    return written


def _junit(result: DiffResult) -> bytes:
    from auditkit.gates import junit_report

    cases = [(g["name"], "diff", bool(g["passed"]), str(g["message"])) for g in result.gates]
    return junit_report("auditkit diff gates", cases, run_id="diff")
