"""Plain values for report sections, from result tables: finite numbers, rows as records, an
axis's groups. The report's own sections and the analysis slices' sections both use them, so a
template only ever sees JSON-ready data (None where a number is missing)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def finite(value: Any) -> float | None:
    """A finite float, or None (NaN, infinite, missing, not a number)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def frame_records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """The rows of ``frame`` as dicts of ``columns``: strings kept, numbers as :func:`finite`,
    anything else as its text (None stays None)."""
    import pandas as pd

    out = []
    for row in frame[columns].itertuples(index=False):
        record: dict[str, Any] = {}
        for column, value in zip(columns, row, strict=True):
            if isinstance(value, str):
                record[column] = value
            elif pd.api.types.is_number(value) and not isinstance(value, bool):
                record[column] = finite(value)
            else:
                record[column] = value if value is None else str(value)
        out.append(record)
    return out


def clear_of_zero(low: float | None, high: float | None) -> bool | None:
    """True when the whole interval lies on one side of 0, None when it is missing."""
    if low is None or high is None:
        return None
    return low > 0 or high < 0


def axis_info(axes: pd.DataFrame | None, name: str) -> dict[str, Any]:
    """One axis's row of ``axes.parquet`` as plain values (empty when the run lacks it)."""
    if axes is None or not (axes["axis"] == name).any():
        return {}
    row = axes[axes["axis"] == name].iloc[0]
    return {
        "groups": str(row["groups"]).split(","),
        "norm": finite(row["norm"]),
        "n_prompts": int(row["n_prompts"]) if "n_prompts" in row else None,
        "step_consistency": finite(row.get("step_consistency")),
    }


def axis_groups(frame: pd.DataFrame, axes: pd.DataFrame | None, name: str) -> list[str]:
    """The groups of axis ``name`` in spec order (from ``axes.parquet``; else as ``frame``'s
    ``group`` column first names them)."""
    groups = axis_info(axes, name).get("groups")
    return list(groups) if groups else list(dict.fromkeys(frame["group"].astype(str)))


def axis_parts(
    frame: pd.DataFrame, axes: pd.DataFrame | None
) -> Iterator[tuple[int, str, pd.DataFrame, list[str]]]:
    """Per axis of ``frame``, in the order the table first names them: its index, its name, its
    rows and its groups (:func:`axis_groups`)."""
    for index, name in enumerate(dict.fromkeys(frame["axis"].tolist())):
        part = frame[frame["axis"] == name]
        yield index, name, part, axis_groups(part, axes, name)


def most_often_first(rows: pd.DataFrame) -> tuple[str, int, int]:
    """Among the rank-1 rows of one axis (one per concept): the group ranked first most often,
    how many concepts rank it first, and how many concepts there are."""
    counts = rows["group"].value_counts()
    return str(counts.index[0]), int(counts.iloc[0]), len(rows)


WHOLE_AXIS_CONCEPTS = 200
"""An axis (or concept set) with at most this many concepts is shown whole in the report's
tables and charts; a larger one shows its :data:`SHOWN_CONCEPTS` strongest, and says so and
where the whole table is (``results/<table>.parquet``). A 1,000-concept, 20-axis audit would
otherwise write some 100,000 table rows and a million heatmap cells into one HTML file."""
SHOWN_CONCEPTS = 40
"""How many concepts a large axis shows: half from each end when the strength is signed."""
OVERVIEW_BLOCKS = 80
"""A similarity matrix of a set larger than :data:`WHOLE_AXIS_CONCEPTS` is drawn as block means,
at most this many blocks a side (:func:`matrix_block`): a few thousand cells, not a million."""


def matrix_block(n: int) -> int:
    """How many concepts (in leaf order) one cell of an n-concept similarity heatmap spans."""
    return 1 if n <= WHOLE_AXIS_CONCEPTS else -(-n // OVERVIEW_BLOCKS)


@dataclass(frozen=True)
class ShownConcepts:
    """Which concepts of one axis a report section shows: all (``keys`` None) or a chosen few,
    with the words that say how they were chosen."""

    total: int
    keys: frozenset[tuple[str, str]] | None = None
    how: str = ""

    def rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``frame`` (with ``concept_set`` and ``concept`` columns) shown."""
        if self.keys is None:
            return frame
        keys = zip(frame["concept_set"].astype(str), frame["concept"].astype(str), strict=True)
        return frame[[key in self.keys for key in keys]]

    def note(self, table: str) -> dict[str, Any] | None:
        """What the template says above a cut table (None when the axis is shown whole)."""
        if self.keys is None:
            return None
        return {
            "shown": len(self.keys),
            "total": self.total,
            "how": self.how,
            "table": f"results/{table}.parquet",
        }


def strongest_concepts(
    strength: pd.Series, *, signed: bool, what: str, limit: int = SHOWN_CONCEPTS
) -> ShownConcepts:
    """The concepts of one axis a report shows, from one ``strength`` per concept (indexed by
    (concept set, concept)): every one up to :data:`WHOLE_AXIS_CONCEPTS`; beyond that the
    ``limit`` with the largest |strength|, or, ``signed``, half with the highest and half with
    the lowest. ``what`` names the strength in the note (e.g. "lean scores")."""
    total = len(strength)
    if total <= WHOLE_AXIS_CONCEPTS:
        return ShownConcepts(total)
    values = strength.astype(float).fillna(0.0)
    if signed:
        half = limit // 2
        ordered = values.sort_values(kind="stable")
        chosen = list(ordered.index[-half:]) + list(ordered.index[: limit - half])
        how = f"the {half} highest and the {limit - half} lowest {what}"
    else:
        chosen = list(values.abs().sort_values(ascending=False, kind="stable").index[:limit])
        how = f"the {limit} largest {what}"
    keys = frozenset((str(key[0]), str(key[1])) for key in chosen)
    return ShownConcepts(total, keys, how)
