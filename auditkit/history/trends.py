"""The history of a model line: its runs in order, what they share, and how it moved.

Runs whose specs differ are compared on what every run of the line covers: the axes that every
run defines with the same groups (in the same order, so a lean's sign means the same), and the
concept terms (per concept set) that every run audits. What the others cover is dropped, and
:class:`Dropped` says from which runs. The leans come from the runs' ``lean`` tables and the
output shares from their ``outputs`` tables, read by DuckDB (:mod:`auditkit.history.sources`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from auditkit.history.sources import Sources, register_run_tables

if TYPE_CHECKING:
    from auditkit.history.registry import RunRegistry

LEAN_COLUMNS: dict[str, Any] = {
    "score_ci_low": float("nan"),
    "score_ci_high": float("nan"),
    "significant": False,
    "q_value": float("nan"),
    "min_effect": float("nan"),
    "rule": "",
    "effect": "score",
    "toward": "",
}
"""Optional lean columns, and what a run that lacks one reads as."""


def judged_values(leans: pd.DataFrame) -> pd.DataFrame:
    """The leans with ``score`` and its interval holding the statistic each run's rule judged
    (a run judged by ``statistics.effect: marked_position`` shows its position, in the units
    of its band), so a trend never puts a finding beside another statistic's interval."""
    if "effect" not in leans.columns or not (leans["effect"] == "marked_position").any():
        return leans
    out = leans.copy()
    chosen = out["effect"] == "marked_position"
    for column in ("score", "score_ci_low", "score_ci_high"):
        source = column.replace("score", "marked_position")
        if source in out.columns:
            out.loc[chosen, column] = out.loc[chosen, source]
        else:
            out.loc[chosen, column] = float("nan")
    return out


GROWTH_SHOWN = 10
"""How many of the leans that grew most the report and ``show`` list."""


@dataclass(frozen=True)
class Dropped:
    """An axis or concept term that not every run of the line covers, so it is left out."""

    kind: str
    """``axis`` or ``concept``."""
    name: str
    """The axis name, or the term."""
    concept_set: str
    """The term's concept set (empty for an axis)."""
    missing_from: list[str]
    """The runs (by checkpoint point) that lack it, or define the axis with other groups."""
    present_in: list[str]
    why: str


@dataclass
class LineHistory:
    """Everything the history of one model line shows, as tables (ordered by the line)."""

    model_line: str
    runs: pd.DataFrame
    """The registry's runs, in order, with ``position`` (1, 2, ...) and ``point`` (the
    checkpoint label, made unique)."""
    gates: pd.DataFrame
    """One row per (run, gate): the registry's gate outcomes with the run's point."""
    leans: pd.DataFrame
    """One row per (run, shared axis, shared concept): score, interval, significance."""
    outputs: pd.DataFrame
    """One row per (run, attribute, group, shared concept) of the runs with output shares."""
    dropped: list[Dropped]
    sources: Sources
    shared_axes: list[str] = field(default_factory=list)
    shared_concepts: list[tuple[str, str]] = field(default_factory=list)

    @property
    def points(self) -> list[str]:
        return [str(p) for p in self.runs["point"]]

    @property
    def ticks(self) -> list[str]:
        return [str(t) for t in self.runs["tick"]]

    def first_failures(self) -> list[dict[str, Any]]:
        """Per gate (in the order the line first met it): the first checkpoint where it
        failed, with its value and limit (None: it never failed), and how often it was run."""
        return first_failures(self.gates, self.points)

    def growth(self) -> tuple[pd.DataFrame, float | None]:
        """Every shared lean from the first checkpoint to the last: delta with its interval,
        growth of |score|, regression (:func:`auditkit.diff.compare_leans`), most grown first;
        and the tolerance a regression grew beyond."""
        return lean_growth(self.leans, self.points)


def line_history(registry: RunRegistry, model_line: str) -> LineHistory:
    """Read the history of ``model_line`` from the registry and its runs' tables."""
    runs = ordered_runs(registry.runs(model_line))
    coverage = registry.coverage(model_line)
    point_of = dict(zip(runs["location"], runs["point"], strict=True))
    axes, concepts, dropped = shared_coverage(coverage, list(runs["location"]), point_of)
    db = registry.db
    sources = register_run_tables(db, list(runs["location"]))
    db.register("_shared_axes", pd.DataFrame({"axis": axes}, dtype=object))
    db.register(
        "_shared_concepts",
        pd.DataFrame(concepts, columns=["concept_set", "concept"], dtype=object),
    )
    order = runs[["location", "position", "point", "tick"]]
    leans = pd.DataFrame()
    if sources.locations("lean") and axes and concepts:
        leans = db.execute(
            "SELECT * FROM lean_rows SEMI JOIN _shared_axes USING (axis) "
            "SEMI JOIN _shared_concepts USING (concept_set, concept)"
        ).df()
        for column, value in LEAN_COLUMNS.items():
            if column not in leans.columns:
                leans[column] = value
        leans = judged_values(leans.merge(order, on="location")).sort_values(["axis", "position"])
    outputs = pd.DataFrame()
    if sources.locations("outputs") and concepts:
        outputs = db.execute(
            """WITH o AS (SELECT * FROM outputs_rows
                          SEMI JOIN _shared_concepts USING (concept_set, concept)),
                    k AS (SELECT attribute, "group" FROM o GROUP BY ALL
                          HAVING count(DISTINCT location) = ?)
               SELECT o.* FROM o SEMI JOIN k USING (attribute, "group")""",
            [len(sources.locations("outputs"))],
        ).df()
        outputs = outputs.merge(order, on="location").sort_values(["attribute", "position"])
    gates = registry.gates(model_line).merge(order, on="location")
    gates = gates.sort_values(["position", "gate_index"])
    return LineHistory(
        model_line,
        runs,
        gates.reset_index(drop=True),
        leans.reset_index(drop=True),
        outputs.reset_index(drop=True),
        dropped,
        sources,
        axes,
        concepts,
    )


def ordered_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The registry's runs (already in order) with ``position`` (1, 2, ...), a unique ``point``
    (the checkpoint label, with its position when two runs share one) and a short ``tick`` for
    the x axis of the trend charts (the step where every run has one, else ``#position``)."""
    labels = [str(c) for c in runs["checkpoint"]]
    twice = {label for label in labels if labels.count(label) > 1}
    points = [
        f"{label} ({i})" if label in twice else label for i, label in enumerate(labels, start=1)
    ]
    steps = [str(int(s)) for s in runs["step"].dropna()]
    by_step = len(steps) == len(runs) and len(set(steps)) == len(steps)
    ticks = steps if by_step else [f"#{i}" for i in range(1, len(runs) + 1)]
    return runs.assign(position=range(1, len(runs) + 1), point=points, tick=ticks).reset_index(
        drop=True
    )


def shared_coverage(
    coverage: pd.DataFrame, locations: list[str], point_of: dict[str, str]
) -> tuple[list[str], list[tuple[str, str]], list[Dropped]]:
    """The axes and (concept set, term) pairs every run covers, in the first run's order, and
    what is dropped (:class:`Dropped`)."""
    axes: list[str] = []
    concepts: list[tuple[str, str]] = []
    dropped: list[Dropped] = []
    order = {location: i for i, location in enumerate(locations)}
    frame = coverage.assign(order=coverage["location"].map(order)).sort_values(
        "order", kind="stable"
    )
    for kind in ("axis", "concept"):
        rows = frame[frame["kind"] == kind]
        for (set_name, name), found in rows.groupby(["set_name", "name"], sort=False):
            present = [point_of[loc] for loc in locations if loc in set(found["location"])]
            missing = [point_of[loc] for loc in locations if loc not in set(found["location"])]
            details = found["detail"].unique()
            if not missing and len(details) == 1:
                if kind == "axis":
                    axes.append(str(name))
                else:
                    concepts.append((str(set_name), str(name)))
                continue
            if missing:
                why = f"not in the spec of {'that run' if len(missing) == 1 else 'those runs'}"
            else:
                variants = "; ".join(
                    f"{detail} in "
                    + ", ".join(
                        point_of[loc] for loc in found[found["detail"] == detail]["location"]
                    )
                    for detail in details
                )
                why = f"its groups differ between runs ({variants})"
                first = found["detail"].iloc[0]
                missing = [point_of[loc] for loc in found[found["detail"] != first]["location"]]
            dropped.append(Dropped(kind, str(name), str(set_name), missing, present, why))
    return axes, concepts, dropped


def first_failures(gates: pd.DataFrame, points: list[str]) -> list[dict[str, Any]]:
    """Per gate, the first checkpoint where it failed (see :meth:`LineHistory.first_failures`).
    A gate is known by its name, metric and scope."""
    out: list[dict[str, Any]] = []
    if gates.empty:
        return out
    keyed = gates.assign(key=gate_keys(gates)).sort_values(["position", "gate_index"])
    for key, rows in keyed.groupby("key", sort=False):
        ordered = rows.sort_values("position")
        failed = ordered[~ordered["passed"].astype(bool)]
        first = failed.iloc[0] if len(failed) else None
        last = ordered.iloc[-1]
        out.append(
            {
                "key": str(key),
                "name": str(ordered["name"].iloc[0]),
                "metric": str(ordered["metric"].iloc[0]),
                "scope": scope_text(str(ordered["scope"].iloc[0])),
                "first_failed": None if first is None else str(first["point"]),
                "value": None if first is None else _finite(first["value"]),
                "threshold": None if first is None else _finite(first["threshold"]),
                "bound": str(ordered["bound"].iloc[0]),
                "runs": len(ordered),
                "failures": len(failed),
                "not_gated": [p for p in points if p not in set(ordered["point"])],
                "last_passed": bool(last["passed"]),
                "last_point": str(last["point"]),
            }
        )
    return out


def gate_keys(gates: pd.DataFrame) -> list[str]:
    """One key per gate row: its name, metric and scope."""
    return [
        f"{name}\x1f{metric}\x1f{scope}"
        for name, metric, scope in zip(gates["name"], gates["metric"], gates["scope"], strict=True)
    ]


def scope_text(scope: str) -> str:
    """A gate's scope (JSON text in the registry) as ``axis=gender``; empty when it has none."""
    try:
        found = json.loads(scope) if scope else {}
    except ValueError:
        return scope
    return ", ".join(f"{k}={v}" for k, v in found.items()) if isinstance(found, dict) else scope


def lean_growth(leans: pd.DataFrame, points: list[str]) -> tuple[pd.DataFrame, float | None]:
    """Every shared lean compared between the line's first and last checkpoints, and the
    tolerance (the runs' band when both were judged by ``min_effect``, as ``auditkit diff``)."""
    from auditkit.diff import compare_leans, default_tolerance

    if leans.empty or len(points) < 2:
        return pd.DataFrame(), None
    first = leans[leans["point"] == points[0]]
    last = leans[leans["point"] == points[-1]]
    tolerance = default_tolerance(first, last)
    table = compare_leans(first, last, tolerance=tolerance)
    return table.sort_values("growth", ascending=False).reset_index(drop=True), tolerance


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None
