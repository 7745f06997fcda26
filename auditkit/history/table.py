"""``auditkit history show``: a model line as plain text, one table of its runs in order with
their gate outcomes and headline numbers, then a grid of every gate at every checkpoint."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from auditkit.history.trends import LineHistory, gate_keys
from auditkit.inert import terminal_text

NAME_WIDTH = 48
"""Longest checkpoint or gate name shown in full (longer ones end with '…')."""


def history_table(history: LineHistory) -> str:
    """The text ``auditkit history show`` prints for one model line."""
    runs = history.runs
    lines = [
        f"model line {_text(history.model_line)}: {len(runs)} runs, "
        f"{'by step' if runs['step'].notna().all() else 'by step, then start time'}"
    ]
    header = ["#", "checkpoint", "step", "run", "started (UTC)", "gates"]
    header += [f"max|lean| {_text(axis)}" for axis in _lean_axes(history)]
    header += ["significant", "max gap"]
    rows = [header]
    headline = _headlines(history)
    for run in runs.to_dict("records"):
        own = history.gates[history.gates["location"] == run["location"]]
        gates = f"{int(own['passed'].sum())}/{len(own)} pass" if len(own) else "none"
        numbers = headline.get(run["location"], {})
        rows.append(
            [
                str(run["position"]),
                _text(str(run["point"])),
                "—" if pd.isna(run["step"]) else str(int(run["step"])),
                str(run["run_id"]),
                str(run["started_utc"] or "—"),
                gates,
                *[_number(numbers.get(axis)) for axis in _lean_axes(history)],
                _count(numbers.get("significant")),
                _number(numbers.get("gap")),
            ]
        )
    lines += _aligned(rows)
    lines.append(
        f"(headline numbers over the {len(history.shared_concepts)} concepts and the axes "
        "every run of the line covers)"
    )
    if not history.gates.empty:
        lines += ["", "gates (pass or FAIL, with the gate's value), by checkpoint #:"]
        lines += _gate_grid(history)
        for failure in history.first_failures():
            when = failure["first_failed"]
            said = f"first failed at {when}" if when is not None else "never failed"
            lines.append(f"  {_text(failure['name'])}: {_text(said)}")
    for dropped in history.dropped:
        where = f" ({dropped.concept_set})" if dropped.concept_set else ""
        missing = ", ".join(_text(point) for point in dropped.missing_from)
        lines.append(
            f"dropped {dropped.kind} {_text(dropped.name)}{_text(where)}: missing from "
            f"{missing} ({terminal_text(dropped.why)})"
        )
    return "\n".join(lines)


def _lean_axes(history: LineHistory) -> list[str]:
    leans = history.leans
    return [a for a in history.shared_axes if not leans.empty and (leans["axis"] == a).any()]


def _headlines(history: LineHistory) -> dict[str, dict[str, Any]]:
    """Per run: the largest |lean score| per axis, the significant leans, the largest gap of
    an output share from its reference."""
    out: dict[str, dict[str, Any]] = {}
    if not history.leans.empty:
        leans = history.leans.assign(size=history.leans["score"].abs())
        for (location, axis), size in leans.groupby(["location", "axis"])["size"]:
            out.setdefault(str(location), {})[str(axis)] = float(size.max())
        for location, count in leans.groupby("location")["significant"].sum().items():
            out.setdefault(str(location), {})["significant"] = int(count)
    if not history.outputs.empty:
        outputs = history.outputs
        gaps = (outputs["share"] - outputs["reference"]).abs()
        for location, gap in gaps.groupby(outputs["location"]).max().items():
            out.setdefault(str(location), {})["gap"] = float(gap)
    return out


def _gate_grid(history: LineHistory) -> list[str]:
    gates = history.gates.assign(key=gate_keys(history.gates))
    names = dict(zip(gates["key"], gates["name"], strict=True))
    rows = [["gate", *[str(p) for p in history.runs["position"]]]]
    for key, name in names.items():
        own = gates[gates["key"] == key].set_index("position")
        cells = []
        for position in history.runs["position"]:
            if position not in own.index:
                cells.append("—")
                continue
            gate = own.loc[position]
            value = _number(gate["value"], "{:.4g}")
            cells.append(f"{'pass' if gate['passed'] else 'FAIL'} {value}")
        rows.append([_text(str(name)), *cells])
    return ["  " + line for line in _aligned(rows)]


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _text(value: str) -> str:
    text = terminal_text(value)
    return text if len(text) <= NAME_WIDTH else text[: NAME_WIDTH - 1] + "…"


def _number(value: Any, form: str = "{:.3f}") -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    return form.format(number) if math.isfinite(number) else "—"


def _count(value: Any) -> str:
    return "—" if value is None else str(value)
