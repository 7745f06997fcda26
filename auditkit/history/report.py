"""The trend report of a model line (``auditkit history report``): context, charts, rendering.

The context is plain data (the template never calls library code); the charts are the pure
functions of :mod:`auditkit.charts.trends`; the HTML is rendered like the audit report
(:func:`auditkit.report.render.render_html`: the same CSS, Vega inlined, no network).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit import __version__
from auditkit.charts import chart_spec, compact_chart
from auditkit.charts.trends import gate_grid_chart, lean_trend_chart, share_trend_chart
from auditkit.history.trends import GROWTH_SHOWN, LineHistory, gate_keys, scope_text

TEMPLATE = "history.html.j2"
REPORT_FILE = "history.html"
MAX_PANELS = 40
"""Most concepts one axis's (or attribute's) trend chart shows: those with the largest |lean
score| (or gap from the reference) at any checkpoint; every lean stays in the runs' tables."""


def render_history(history: LineHistory, out_dir: Path) -> Path:
    """Write ``out_dir/history.html``; returns its path."""
    from auditkit.report.render import render_html
    from auditkit.rundir import write_bytes_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILE
    html = render_html(build_history_context(history), TEMPLATE)
    write_bytes_atomic(path, html.encode("utf-8"))
    return path


def build_history_context(history: LineHistory) -> dict[str, Any]:
    """Everything the trend report shows, as plain data."""
    charts: dict[str, Any] = {}
    points = history.points
    gates = _gates(history, charts)
    context: dict[str, Any] = {
        "title": f"History of {history.model_line}",
        "model_line": history.model_line,
        "auditkit_version": __version__,
        "order": _order_words(history.runs),
        "ticks": "its step"
        if history.ticks[0][0] != "#"
        else "its number (# in the Checkpoints table)",
        "runs": _runs(history),
        "specs_differ": history.runs["spec_hash"].nunique() > 1,
        "first": points[0],
        "last": points[-1],
        "shared_axes": history.shared_axes,
        "shared_concepts": [_concept(s, c, history) for s, c in history.shared_concepts],
        "dropped": [vars(d) for d in history.dropped],
        "gates": gates,
        "growth": _growth(history),
        "leans": _leans(history, charts),
        "outputs": _outputs(history, charts),
        "sources": {
            "files": sum(len(v) for v in history.sources.files.values()),
            "arrow": sum(len(v) for v in history.sources.arrow.values()),
        },
    }
    context["charts"] = {name: compact_chart(chart_spec(c)) for name, c in charts.items()}
    return context


def _order_words(runs: pd.DataFrame) -> str:
    steps = runs["step"].notna()
    if steps.all():
        return "by training step (--step)"
    if not steps.any():
        return "by the start time of each run"
    return "by training step where one was given, then by start time"


def _runs(history: LineHistory) -> list[dict[str, Any]]:
    passed = history.gates.groupby("location")["passed"].agg(["sum", "count"])
    out = []
    for row in history.runs.to_dict("records"):
        outcome = passed.loc[row["location"]] if row["location"] in passed.index else None
        out.append(
            {
                "position": int(row["position"]),
                "point": str(row["point"]),
                "checkpoint": str(row["checkpoint"]),
                "step": None if pd.isna(row["step"]) else int(row["step"]),
                "run_id": str(row["run_id"]),
                "location": str(row["location"]),
                "audit": str(row["audit"]),
                "model_id": str(row["model_id"]),
                "revision": row["model_revision"] if isinstance(row["model_revision"], str) else "",
                "weights_hash": str(row["weights_hash"] or ""),
                "spec_hash": str(row["spec_hash"] or ""),
                "started": str(row["started_utc"] or ""),
                "rule": str(row["rule"] or ""),
                "min_effect": _number(row["min_effect"]),
                "gates_passed": None if outcome is None else int(outcome["sum"]),
                "gates_total": None if outcome is None else int(outcome["count"]),
            }
        )
    return out


def _concept(concept_set: str, term: str, history: LineHistory) -> str:
    several = len({s for s, _ in history.shared_concepts}) > 1
    return f"{term} ({concept_set})" if several else term


def _gates(history: LineHistory, charts: dict[str, Any]) -> dict[str, Any]:
    frame = history.gates
    if frame.empty:
        return {"rows": [], "first_failures": [], "chart_id": None}
    frame = frame.assign(key=gate_keys(frame))
    failures = history.first_failures()
    names = {f["key"]: f["name"] for f in failures}
    labels = _unique({key: name for key, name in names.items()})
    cells = frame.assign(
        gate=[labels[k] for k in frame["key"]],
        outcome=["pass" if p else "FAIL" for p in frame["passed"]],
        limit=[_limit(b, t) for b, t in zip(frame["bound"], frame["threshold"], strict=True)],
    )
    charts["gates"] = gate_grid_chart(cells, history.points)
    rows = []
    for failure in failures:
        own = cells[cells["key"] == failure["key"]].set_index("point")
        rows.append(
            {
                "name": failure["name"],
                "scope": failure["scope"],
                "metric": failure["metric"],
                "cells": [
                    {
                        "point": point,
                        "gated": point in own.index,
                        "passed": bool(own.loc[point, "passed"]) if point in own.index else None,
                        "value": _value(own.loc[point, "value"]) if point in own.index else "",
                        "limit": str(own.loc[point, "limit"]) if point in own.index else "",
                    }
                    for point in history.points
                ],
            }
        )
    shown = [
        {**f, "limit": _limit(f["bound"], f["threshold"]), "value": _value(f["value"])}
        for f in failures
    ]
    return {"rows": rows, "first_failures": shown, "chart_id": "gates"}


def _unique(labels: dict[str, str]) -> dict[str, str]:
    """Gate labels made unique (two gates of one name but other metrics or scopes)."""
    names = list(labels.values())
    return {
        key: name if names.count(name) == 1 else f"{name} [{scope_text(key.split(chr(31))[2])}]"
        for key, name in labels.items()
    }


def _value(value: Any) -> str:
    """A gate's value as the report shows it: a count as a whole number, else 3 decimals."""
    from auditkit.report.render import format_number

    number = _number(value)
    if number is not None and number == round(number):
        return f"{number:.0f}".replace("-", "−")
    return format_number(number, 3)


def _limit(bound: Any, threshold: Any) -> str:
    number = _number(threshold)
    if number is None:
        return ""
    return f"{'≥' if bound == 'min' else '≤'} {number:g}"


def _growth(history: LineHistory) -> dict[str, Any]:
    table, tolerance = history.growth()
    if table.empty:
        return {"rows": [], "tolerance": None, "regressions": 0, "total": 0}
    numbers = ("delta", "delta_ci_low", "delta_ci_high", "growth")
    rows = [
        {
            "axis": str(r["axis"]),
            "concept": _concept(str(r["concept_set"]), str(r["concept"]), history),
            "score_first": _number(r["score_base"]),
            "score_last": _number(r["score_new"]),
            **{name: _number(r[name]) for name in numbers},
            "regression": bool(r["regression"]),
        }
        for r in table.head(GROWTH_SHOWN).to_dict("records")
    ]
    return {
        "rows": rows,
        "tolerance": tolerance,
        "regressions": int(table["regression"].sum()),
        "total": len(table),
    }


def _leans(history: LineHistory, charts: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    leans = history.leans
    if leans.empty:
        return out
    for index, axis in enumerate(history.shared_axes):
        rows = leans[leans["axis"] == axis]
        if rows.empty:  # a k-way axis: no lean score
            continue
        rows = rows.assign(
            label=[
                _concept(s, c, history)
                for s, c in zip(rows["concept_set"], rows["concept"], strict=True)
            ]
        )
        peak = rows.assign(size=rows["score"].abs()).groupby("label")["size"].max()
        kept = list(peak.sort_values(ascending=False).index[:MAX_PANELS])
        order = [label for label in dict.fromkeys(rows["label"]) if label in kept]
        shown = rows[rows["label"].isin(kept)]
        shown = shown.assign(label=pd.Categorical(shown["label"], order)).sort_values(
            ["label", "position"]
        )
        chart_id = f"lean-{index}"
        charts[chart_id] = lean_trend_chart(
            shown.assign(label=shown["label"].astype(str)), history.ticks
        )
        significant = rows.groupby("point", sort=False)["significant"].sum()
        out.append(
            {
                "axis": axis,
                "chart_id": chart_id,
                "positive_group": str(rows["positive_group"].iloc[0]),
                "negative_group": str(rows["negative_group"].iloc[0]),
                "concepts": len(peak),
                "shown": len(kept),
                "significant": [
                    {"point": p, "count": int(significant.get(p, 0))} for p in history.points
                ],
            }
        )
    return out


def _outputs(history: LineHistory, charts: dict[str, Any]) -> dict[str, Any]:
    frame = history.outputs
    with_outputs = set(history.sources.locations("outputs"))
    missing = [
        str(p)
        for p, loc in zip(history.runs["point"], history.runs["location"], strict=True)
        if loc not in with_outputs
    ]
    attributes = []
    if not frame.empty:
        for index, (attribute, rows) in enumerate(frame.groupby("attribute", sort=False)):
            groups = list(dict.fromkeys(rows["group"]))
            if len(groups) == 2:  # the other group's share is the rest (less unread images)
                rows = rows[rows["group"] == groups[0]]
            rows = rows.assign(
                label=[
                    _concept(s, c, history)
                    for s, c in zip(rows["concept_set"], rows["concept"], strict=True)
                ]
            )
            gap = (
                rows.assign(size=(rows["share"] - rows["reference"]).abs())
                .groupby("label")["size"]
                .max()
            )
            kept = set(gap.sort_values(ascending=False).index[:MAX_PANELS])
            shown = rows[rows["label"].isin(kept)]
            chart_id = f"shares-{index}"
            charts[chart_id] = share_trend_chart(shown, history.ticks)
            attributes.append(
                {
                    "attribute": str(attribute),
                    "chart_id": chart_id,
                    "groups": groups,
                    "shown_group": groups[0] if len(groups) == 2 else None,
                    "concepts": len(gap),
                    "shown": len(kept),
                }
            )
    return {"attributes": attributes, "missing": missing}


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
