"""Plain values for report sections, from result tables: finite numbers, rows as records, an
axis's groups. The report's own sections and the analysis slices' sections both use them, so a
template only ever sees JSON-ready data (None where a number is missing)."""

from __future__ import annotations

import math
from collections.abc import Iterator
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
