"""Chart style and helpers shared by every chart: colours, fonts, inlined data, interval text.

Charts are pure functions from a tidy result table to an Altair chart.

Each function takes the rows of one table (already filtered to one axis or one concept set) and
returns a chart; it reads nothing else and changes no global Altair state. Data is inlined as
plain values (NaN becomes null), so there is no row limit and the spec is valid JSON.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from typing import Any, Final, Literal, TypeVar

import altair as alt
import pandas as pd

POSITIVE_COLOR = "#1f5f9e"
"""Colour of the positive group of a two-group axis (blue)."""
NEGATIVE_COLOR = "#c0561d"
"""Colour of the negative group of a two-group axis (orange; the pair is colour-blind safe)."""
NEUTRAL_COLOR = "#8a8f98"
"""Colour of a concept that leans towards neither group (score exactly 0)."""
GROUP_SCHEME: Final = "tableau10"
"""Categorical scheme for k-way axes."""
HEATMAP_SCHEME: Final = "purplegreen"
"""Diverging scheme for cosine heatmaps (purple negative, green positive); it avoids the group
colours so a heatmap is never read as 'blue = first group'."""
INTERVAL_COLOR = "#1d232c"
"""Colour of a 95% confidence-interval rule (the page's ink)."""
BAND_COLOR = "#cfd5dd"
"""Fill of the equivalence band (leans too small to count) behind the lean bars."""
CI_SUFFIXES: Final = ("_ci_low", "_ci_high")
"""Suffixes of the optional bootstrap-interval columns (``score_ci_low``, ``score_ci_high``)."""
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"

Width = int | Literal["container"]
Position = TypeVar("Position", alt.X, alt.Y)
_ROW_PX = 20
_CELL_PX = 30


@contextlib.contextmanager
def unchecked() -> Iterator[None]:
    """Build charts without Altair checking every object against the Vega-Lite schema as it is
    made (its debug mode, on by default: a tenth of a 1,000-concept report's time). Specs are
    already written without the check (:func:`chart_spec`); the tests check every chart of
    every report they build against the schema instead. Altair's own setting is restored on
    exit, so other code in the process keeps its checks."""
    from altair.utils import schemapi

    with schemapi.debug_mode(False):
        yield


def inline_values(frame: pd.DataFrame) -> alt.Data:
    """Inline a table as JSON-safe records (NaN -> null, numpy scalars -> Python).

    The records go in as a tuple: Altair copies a chart, data and all, at every method call
    (a lean chart about forty times), and it copies lists item by item but keeps a tuple as
    it is; ``to_dict`` writes the tuple as the same JSON list (a fifth of a lean chart's
    time)."""
    records = json.loads(frame.to_json(orient="records", double_precision=6))
    return alt.Data(values=tuple(records))


def compact_chart(spec: dict[str, Any]) -> dict[str, Any]:
    """A chart spec with smaller inline data: fields the spec never names are dropped from the
    records, and numbers are rounded to 4 decimals or 4 significant digits, whichever keeps
    more (the charts show at most 3 decimals or 4 significant digits).

    A field is kept when the spec names it anywhere outside the data (an encoding, a tooltip,
    a sort, a transform or its expression), so nothing a chart shows is lost; a 200-concept
    report's charts shrink several-fold.
    """

    reference = json.dumps(_map_inline_data(spec, lambda records: []), ensure_ascii=False)
    named: dict[str, bool] = {}  # field -> named; asked once per field, not once per record

    def kept(field: str) -> bool:
        if field not in named:
            named[field] = _named(field, reference)
        return named[field]

    return dict(
        _map_inline_data(
            spec,
            lambda records: [
                {k: _round(v) for k, v in record.items() if kept(k)} for record in records
            ],
        )
    )


def _map_inline_data(node: Any, change: Any) -> Any:
    """A copy of a chart spec with every inline ``values`` list of records replaced by
    ``change(records)``."""
    if isinstance(node, dict):
        return {
            key: change(value)
            if key == "values"
            and isinstance(value, list)
            and all(isinstance(v, dict) for v in value)
            else _map_inline_data(value, change)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_map_inline_data(v, change) for v in node]
    return node


def _records(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def _named(field: str, reference: str) -> bool:
    """Whether a spec (as JSON text) names ``field``: quoted (an encoding, a tooltip, a
    transform's field list) or in an expression (``datum.field``, ``datum['field']``)."""
    return any(
        form in reference
        for form in (f'"{field}"', f"datum.{field}", f"'{field}'", f'\\"{field}\\"')
    )


def _round(value: Any) -> Any:
    """At least 4 decimals and at least 4 significant digits (tooltips show up to 3 decimals
    or 4 significant digits)."""
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return round(value, max(4, 3 - math.floor(math.log10(abs(value)))))
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def concept_labels(frame: pd.DataFrame) -> pd.Series:
    """The concept name, qualified by its concept set when a chart mixes several sets."""
    concept = frame["concept"].astype(str)
    if frame["concept_set"].nunique() > 1:
        return concept + " (" + frame["concept_set"].astype(str) + ")"
    return concept


def has_interval(frame: pd.DataFrame, measure: str) -> bool:
    """Whether ``frame`` carries the optional 95% interval columns of ``measure``."""
    return all(f"{measure}{suffix}" in frame.columns for suffix in CI_SUFFIXES)


def _finite_pair(low: Any, high: Any) -> tuple[float, float] | None:
    """An interval's two ends as floats, or None when either is missing or not finite."""
    try:
        lo, hi = float(low), float(high)
    except (TypeError, ValueError):
        return None
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def interval_text(low: Any, high: Any, digits: int = 3) -> str:
    """``[low, high]`` with signed fixed digits and a true minus sign; an em dash when missing."""
    ends = _finite_pair(low, high)
    if ends is None:
        return "—"
    lo, hi = ends
    return f"[{lo:+.{digits}f}, {hi:+.{digits}f}]".replace("-", "−")


def share_text(low: Any, high: Any) -> str:
    """``[low, high]`` of a proportion as percentages; an em dash when missing."""
    ends = _finite_pair(low, high)
    if ends is None:
        return "—"
    lo, hi = ends
    return f"[{lo:.1%}, {hi:.1%}]"


def share_interval_texts(frame: pd.DataFrame) -> list[str]:
    """The ``share_low``, ``share_high`` interval of every row as :func:`share_text`."""
    return [
        share_text(low, high)
        for low, high in zip(frame["share_low"], frame["share_high"], strict=True)
    ]


def share_position(channel: type[Position], field: str, title: str) -> Position:
    """A position channel (``alt.X`` or ``alt.Y``) of a share column: the whole range 0 to 1,
    labelled in percent."""
    return channel(
        f"{field}:Q",
        scale=alt.Scale(domain=[0, 1], nice=False),
        title=title,
        axis=alt.Axis(format="%"),
    )


def with_interval_text(frame: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Add ``<measure>_ci``, the interval as display text for tooltips, when the columns exist."""
    if not has_interval(frame, measure):
        return frame
    text = [
        interval_text(low, high)
        for low, high in zip(frame[f"{measure}_ci_low"], frame[f"{measure}_ci_high"], strict=True)
    ]
    return frame.assign(**{f"{measure}_ci": text})


def finding_text(row: Any, *, short: bool = False) -> str:
    """Plain words for a lean's significance test (and fragility, when known).

    Long form (tooltips): 'significant (q = 0.004); fragile'. Short form (tables, which show
    q in a column of its own): '★ significant, fragile'.
    """
    q = getattr(row, "q_value", float("nan"))
    tested = q is not None and math.isfinite(float(q))
    band = getattr(row, "min_effect", float("nan"))
    banded = str(getattr(row, "rule", "")) == "min_effect" and math.isfinite(float(band))
    if not tested:
        why = "no resamples" if banded else "no null axes"
        text = "not tested" if short else f"not tested ({why})"
    else:
        verdict = "significant" if bool(row.significant) else "not significant"
        text = ("★ " if short and bool(row.significant) else "") + verdict
        if not short:
            claim = f"beyond ±{float(band):g} with 95% confidence; " if banded else ""
            if banded and not bool(row.significant):
                claim = f"not shown beyond ±{float(band):g}; "
            text += f" ({claim}q = {float(q):.3g})"
    if bool(getattr(row, "fragile", False)):
        text += ", fragile" if short else "; fragile"
    return text


def configure(chart: Any) -> Any:
    """The house look, set in one call (each ``configure_*`` call copies the chart's data)."""
    return chart.configure(
        font=FONT,
        view=alt.ViewConfig(stroke=None),
        axis=alt.AxisConfig(labelFontSize=11, titleFontSize=11, titleFontWeight="normal"),
        legend=alt.LegendConfig(labelFontSize=11, titleFontSize=11, orient="top"),
    )


def chart_spec(chart: Any) -> dict[str, Any]:
    """A chart's Vega-Lite spec (a dict is kept as it is), without Altair's schema check: a
    large audit's report draws a hundred charts and the check costs more than drawing them.
    The tests check every chart of the reports they build against the schema
    (``tests/test_report.py``)."""
    if isinstance(chart, dict):
        return chart
    spec: dict[str, Any] = chart.to_dict(validate=False)
    return spec


def interval_tooltip(frame: pd.DataFrame) -> list[alt.Tooltip]:
    """The cosine's 95% interval as a tooltip row, when the table has one."""
    return [alt.Tooltip("cosine_ci:N", title="95% CI")] if "cosine_ci" in frame.columns else []


def ticks(span: float) -> list[float]:
    """Axis ticks every 0.25 (every 0.5 beyond ±1) from -span to span."""
    step = 0.25 if span <= 1 else 0.5
    count = round(span / step)
    return [round(i * step, 2) for i in range(-count, count + 1)]


def group_scale(groups: list[str]) -> alt.Scale:
    if len(groups) == 2:
        return alt.Scale(domain=list(groups), range=[POSITIVE_COLOR, NEGATIVE_COLOR])
    return alt.Scale(domain=list(groups), scheme=GROUP_SCHEME)


def json_number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
