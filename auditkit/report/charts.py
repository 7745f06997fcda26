"""Report charts: pure functions from a tidy result table to an Altair chart.

Each function takes the rows of one table (already filtered to one axis or one concept set) and
returns a chart; it reads nothing else and changes no global Altair state. Data is inlined as
plain values (NaN becomes null), so there is no row limit and the spec is valid JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final, Literal

import altair as alt
import numpy as np
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
_ROW_PX = 20
_CELL_PX = 30


def _values(frame: pd.DataFrame) -> alt.Data:
    """Inline a table as JSON-safe records (NaN -> null, numpy scalars -> Python)."""
    records = json.loads(frame.to_json(orient="records", double_precision=6))
    return alt.Data(values=records)


def compact_chart(spec: dict[str, Any]) -> dict[str, Any]:
    """A chart spec with smaller inline data: fields the spec never names are dropped from the
    records, and numbers are rounded to 4 decimals or 4 significant digits, whichever keeps
    more (the charts show at most 3 decimals or 4 significant digits).

    A field is kept when the spec names it anywhere outside the data (an encoding, a tooltip,
    a sort, a transform or its expression), so nothing a chart shows is lost; a 200-concept
    report's charts shrink several-fold.
    """

    reference = json.dumps(_map_inline_data(spec, lambda records: []), ensure_ascii=False)
    return dict(
        _map_inline_data(
            spec,
            lambda records: [
                {k: _round(v) for k, v in record.items() if _named(k, reference)}
                for record in records
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


def _labels(frame: pd.DataFrame) -> pd.Series:
    """The concept name, qualified by its concept set when a chart mixes several sets."""
    concept = frame["concept"].astype(str)
    if frame["concept_set"].nunique() > 1:
        return concept + " (" + frame["concept_set"].astype(str) + ")"
    return concept


def has_interval(frame: pd.DataFrame, measure: str) -> bool:
    """Whether ``frame`` carries the optional 95% interval columns of ``measure``."""
    return all(f"{measure}{suffix}" in frame.columns for suffix in CI_SUFFIXES)


def interval_text(low: Any, high: Any, digits: int = 3) -> str:
    """``[low, high]`` with signed fixed digits and a true minus sign; an em dash when missing."""
    try:
        lo, hi = float(low), float(high)
    except (TypeError, ValueError):
        return "—"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "—"
    return f"[{lo:+.{digits}f}, {hi:+.{digits}f}]".replace("-", "−")


def _with_interval_text(frame: pd.DataFrame, measure: str) -> pd.DataFrame:
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


def _configure(chart: Any) -> Any:
    return (
        chart.configure(font=FONT)
        .configure_view(stroke=None)
        .configure_axis(labelFontSize=11, titleFontSize=11, titleFontWeight="normal")
        .configure_legend(labelFontSize=11, titleFontSize=11, orient="top")
    )


def lean_chart(
    lean: pd.DataFrame, positive_group: str, negative_group: str, width: Width = "container"
) -> alt.LayerChart:
    """Lean score of every concept along one two-group axis, as sorted horizontal bars.

    ``lean`` holds the rows of ``lean.parquet`` for one axis. Bars start at the midpoint (0);
    dotted rules mark the two group means (+1 and -1). Colour is the group the concept leans to.
    When the table has the optional ``score_ci_low`` / ``score_ci_high`` columns, a dark rule
    behind each bar (which is then drawn translucent) spans the 95% interval of the score.
    """
    intervals = has_interval(lean, "score")
    frame = _with_interval_text(_with_interval_text(lean, "score"), "cosine")
    frame = frame.assign(label=_labels(frame))
    order = frame.sort_values("score", ascending=False)["label"].tolist()
    extent = ["score", "score_ci_low", "score_ci_high"] if intervals else ["score"]
    peak = float(frame[extent].abs().max().max()) if len(frame) else 0.0
    span = max(1.0, math.ceil(peak * 2 - 1e-9) / 2) if math.isfinite(peak) else 1.0

    def x(field: str) -> alt.X:
        return alt.X(
            f"{field}:Q",
            title=[
                "lean score",
                f"−1 = {negative_group} mean · 0 = midpoint · +1 = {positive_group} mean",
            ],
            scale=alt.Scale(domain=[-span, span], nice=False),
            axis=alt.Axis(
                values=_ticks(span),
                labelExpr="(datum.value > 0 ? '+' : '') + format(datum.value, '.2~f')",
            ),
        )

    y = alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=170))
    color = alt.Color(
        "toward:N",
        title="leans towards",
        scale=alt.Scale(
            domain=[positive_group, negative_group, ""],
            range=[POSITIVE_COLOR, NEGATIVE_COLOR, NEUTRAL_COLOR],
        ),
        legend=alt.Legend(values=[positive_group, negative_group]),
    )
    tooltip = [
        alt.Tooltip("concept_set:N", title="concept set"),
        alt.Tooltip("concept:N", title="concept"),
        alt.Tooltip("toward:N", title="leans towards"),
        alt.Tooltip("score:Q", title="lean score", format="+.3f"),
    ]
    if intervals:
        tooltip.append(alt.Tooltip("score_ci:N", title="95% CI"))
    tooltip.append(alt.Tooltip("cosine:Q", title="cosine", format="+.3f"))
    if "cosine_ci" in frame.columns:
        tooltip.append(alt.Tooltip("cosine_ci:N", title="cosine 95% CI"))
    tooltip += [
        alt.Tooltip("projection:Q", title="projection", format="+.4g"),
        alt.Tooltip("n_seeds:Q", title="seeds"),
    ]
    tested = "significant" in frame.columns
    if tested:
        frame = frame.assign(finding=[finding_text(r) for r in frame.itertuples()])
        tooltip.append(alt.Tooltip("finding:N", title="finding"))
    base = alt.Chart(_values(frame))
    bar_style: dict[str, Any] = {"fillOpacity": 0.55} if intervals else {}
    bars = base.mark_bar(height={"band": 0.72}, cornerRadiusEnd=2, **bar_style).encode(
        x=x("score"), x2=alt.datum(0), y=y, color=color, tooltip=tooltip
    )
    marks = pd.DataFrame({"x": [-1.0, 0.0, 1.0], "kind": ["group", "mid", "group"]})
    rules = (
        alt.Chart(_values(marks))
        .mark_rule()
        .encode(
            x=alt.X("x:Q"),
            strokeDash=alt.condition("datum.kind == 'mid'", alt.value([1, 0]), alt.value([3, 3])),
            color=alt.value("#5b6270"),
            opacity=alt.condition("datum.kind == 'mid'", alt.value(0.9), alt.value(0.5)),
        )
    )
    layers: list[Any] = []
    band = _band(frame)
    if band is not None:  # the equivalence band: leans inside it are too small to count
        shade = pd.DataFrame(
            {"x": [-band], "x2": [band], "label": [f"±{band:g}: too small to count"]}
        )
        layers.append(
            alt.Chart(_values(shade))
            .mark_rect(color=BAND_COLOR, opacity=0.35)
            .encode(
                x=alt.X("x:Q"),
                x2="x2:Q",
                tooltip=[alt.Tooltip("label:N", title="equivalence band")],
            )
        )
    layers.append(rules)
    if intervals:
        layers.append(
            base.mark_rule(color=INTERVAL_COLOR, strokeWidth=2, strokeCap="round").encode(
                x=x("score_ci_low"), x2="score_ci_high:Q", y=y, tooltip=tooltip
            )
        )
    layers.append(bars)
    if tested:  # a star just past the end of each significant lean (and its interval)
        stars = frame[frame["significant"].astype(bool)]
        if not stars.empty:
            reach = stars[[c for c in extent if c in stars.columns]]
            tip = np.where(stars["score"] >= 0, reach.max(axis=1), reach.min(axis=1))
            offset = np.where(stars["score"] >= 0, 0.06 * span, -0.06 * span)
            stars = stars.assign(star_x=np.clip(tip + offset, -span, span))
            layers.append(
                alt.Chart(_values(stars))
                .mark_text(text="★", fontSize=11, color=INTERVAL_COLOR, baseline="middle")
                .encode(x=alt.X("star_x:Q"), y=y, tooltip=tooltip)
            )
    height = max(60, _ROW_PX * len(order))
    chart = alt.layer(*layers).properties(width=width, height=height)
    return _configure(chart)


def _band(frame: pd.DataFrame) -> float | None:
    """The min_effect rule's band of a lean table, or None under another rule."""
    if "rule" not in frame.columns or "min_effect" not in frame.columns or frame.empty:
        return None
    if str(frame["rule"].iloc[0]) != "min_effect":
        return None
    band = float(frame["min_effect"].iloc[0])
    return band if math.isfinite(band) and band > 0 else None


def steps_chart(steps: pd.DataFrame, width: Width = "container") -> alt.Chart:
    """Lean score of each concept at each kept denoising step (``steps.parquet``, one axis)."""
    frame = steps.assign(label=_labels(steps))
    chart = (
        alt.Chart(_values(frame))
        .mark_line(point=True, strokeWidth=1.5)
        .encode(
            x=alt.X(
                "step:O",
                title="denoising step (kept steps, 0 = first)",
                axis=alt.Axis(labelAngle=0),
            ),
            y=alt.Y("score:Q", title="lean score"),
            color=alt.Color(
                "label:N",
                title="concept",
                scale=alt.Scale(
                    scheme=GROUP_SCHEME if frame["label"].nunique() <= 10 else "tableau20"
                ),
                legend=alt.Legend(orient="right", labelLimit=150),
            ),
            tooltip=[
                alt.Tooltip("concept:N", title="concept"),
                alt.Tooltip("step:O", title="step"),
                alt.Tooltip("timestep:Q", title="timestep", format=".0f"),
                alt.Tooltip("score:Q", title="lean score", format="+.3f"),
            ],
        )
        .properties(width=width, height=220)
    )
    return _configure(chart)


def defaults_chart(
    defaults: pd.DataFrame, groups: list[str], width: Width = "container"
) -> alt.LayerChart:
    """How close each unmarked concept is to each group-marked variant (one axis).

    One row per concept; a dot per group at the cosine of ``H(unmarked)`` with ``H(marked)``,
    joined by a thin rule. The rank-1 group is the model's default for that concept.
    """
    frame = defaults.assign(label=_labels(defaults))
    firsts = frame[frame["rank"] == 1].sort_values("margin", ascending=False)
    order = list(dict.fromkeys(firsts["label"].tolist() + frame["label"].tolist()))
    y = alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=170))
    x = alt.X("cosine:Q", title="cosine of unmarked prompt with marked variant")
    base = alt.Chart(_values(frame))
    span = base.mark_rule(color="#c7ccd4").encode(x="min(cosine):Q", x2="max(cosine):Q", y=y)
    dots = base.mark_point(filled=True, size=70, opacity=0.95).encode(
        x=x,
        y=y,
        color=alt.Color(
            "group:N", title="marked with", scale=_group_scale(groups), sort=list(groups)
        ),
        shape=alt.condition("datum.rank == 1", alt.value("diamond"), alt.value("circle")),
        tooltip=[
            alt.Tooltip("concept:N", title="concept"),
            alt.Tooltip("group:N", title="group"),
            alt.Tooltip("marked_prompt:N", title="marked prompt"),
            alt.Tooltip("cosine:Q", title="cosine", format="+.3f"),
            alt.Tooltip("rank:Q", title="rank"),
            alt.Tooltip("margin:Q", title="margin (rank 1 − rank 2)", format=".3f"),
        ],
    )
    height = max(60, _ROW_PX * len(order))
    return _configure(alt.layer(span, dots).properties(width=width, height=height))


def descriptor_heatmap(descriptors: pd.DataFrame, groups: list[str]) -> alt.LayerChart:
    """Concept x group heatmap of cos(H(c) − R, G(group) − R) for one axis."""
    frame = _with_interval_text(descriptors, "cosine").assign(label=_labels(descriptors))
    top = frame[frame["rank"] == 1].sort_values(["group", "cosine"], ascending=[True, False])
    order = list(dict.fromkeys(top["label"].tolist() + frame["label"].tolist()))
    return _heatmap(
        frame,
        x=alt.X(
            "group:N",
            sort=list(groups),
            title=None,
            axis=alt.Axis(orient="top", labelAngle=0, labelLimit=90),
        ),
        y=alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=170)),
        n_x=len(groups),
        n_y=len(order),
        tooltip=[
            alt.Tooltip("concept:N", title="concept"),
            alt.Tooltip("group:N", title="group"),
            alt.Tooltip("cosine:Q", title="cosine", format="+.3f"),
            *_interval_tooltip(frame),
            alt.Tooltip("rank:Q", title="rank"),
        ],
        symmetric_to_one=False,
    )


LARGE_MATRIX: Final = 40
"""Matrices with more rows than this are drawn as an overview: cells shrink to fit a page
width, without borders; names are left to the tooltips once a cell is smaller than
:data:`MIN_LABELLED_CELL_PX` (labels of 11 px would overlap)."""
MIN_LABELLED_CELL_PX: Final = 12
_MATRIX_WIDTH_PX = 640


def similarity_heatmap(similarity: pd.DataFrame, order: list[str] | None = None) -> alt.LayerChart:
    """Concept x concept cosine matrix of one concept set (``similarity.parquet`` rows), rows
    and columns in ``order`` (the clustering's leaf order, so clusters show as blocks; default
    the table's order).

    The data is inlined as one record per row of the matrix, its cosines (and interval ends)
    as arrays that a ``flatten`` transform unrolls and a ``lookup`` names: an n-concept matrix
    costs n records instead of n², which keeps a 200-concept report small.
    """
    present = list(dict.fromkeys(similarity["concept_a"].tolist()))
    wanted = [c for c in order or [] if c in present]
    order = wanted + [c for c in present if c not in wanted]
    position = {name: i for i, name in enumerate(order)}
    intervals = has_interval(similarity, "cosine")
    arrays = ["cosine", "cosine_ci_low", "cosine_ci_high"] if intervals else ["cosine"]
    records = []
    for name, rows in similarity.groupby("concept_a", sort=False):
        rows = rows.sort_values("concept_b", key=lambda c: c.map(position))
        record: dict[str, Any] = {
            "concept_a": str(name),
            "k": [position[b] for b in rows["concept_b"]],
        }
        for column in arrays:
            record[column] = [_json_number(v) for v in rows[column]]
        records.append(record)
    names = alt.Data(values=[{"k": i, "concept_b": name} for i, name in enumerate(order)])
    chart = (
        alt.Chart(alt.Data(values=records))
        .transform_flatten(["k", *arrays])
        .transform_lookup(lookup="k", from_=alt.LookupData(names, key="k", fields=["concept_b"]))
    )
    if intervals:
        text = "replace(format(datum.cosine_ci_{0}, '+.3f'), '-', '−')"
        chart = chart.transform_calculate(
            cosine_ci=f"isValid(datum.cosine_ci_low) ? '[' + {text.format('low')} + ', ' + "
            f"{text.format('high')} + ']' : '—'"
        )
    labels = matrix_labelled(len(order))
    return _heatmap(
        similarity,
        chart=chart,
        x=alt.X(
            "concept_b:N",
            sort=order,
            title=None,
            axis=alt.Axis(
                orient="top", labelAngle=-40, labelLimit=140, labels=labels, ticks=labels
            ),
        ),
        y=alt.Y(
            "concept_a:N",
            sort=order,
            title=None,
            axis=alt.Axis(labelLimit=170, labels=labels, ticks=labels),
        ),
        n_x=len(order),
        n_y=len(order),
        tooltip=[
            alt.Tooltip("concept_a:N", title="concept"),
            alt.Tooltip("concept_b:N", title="with"),
            alt.Tooltip("cosine:Q", title="cosine", format="+.3f"),
            *([alt.Tooltip("cosine_ci:N", title="95% CI")] if intervals else []),
        ],
        symmetric_to_one=True,
    )


def matrix_labelled(n: int) -> bool:
    """Whether an n x n heatmap names its rows and columns (see :data:`LARGE_MATRIX`)."""
    return n <= LARGE_MATRIX or _MATRIX_WIDTH_PX // max(n, 1) >= MIN_LABELLED_CELL_PX


def _json_number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def step_agreement_heatmap(rows: pd.DataFrame) -> alt.LayerChart:
    """Cosine between the axis computed at each pair of denoising steps (one axis)."""
    frame = rows.assign(
        a=[f"step {s}" for s in rows["step_a"]], b=[f"step {s}" for s in rows["step_b"]]
    )
    order = [f"step {s}" for s in sorted(set(rows["step_a"]))]
    return _heatmap(
        frame,
        x=alt.X("b:N", sort=order, title=None, axis=alt.Axis(orient="top", labelAngle=-40)),
        y=alt.Y("a:N", sort=order, title=None),
        n_x=len(order),
        n_y=len(order),
        tooltip=[
            alt.Tooltip("a:N", title="axis at"),
            alt.Tooltip("b:N", title="against"),
            alt.Tooltip("cosine:Q", title="cosine", format="+.3f"),
        ],
        symmetric_to_one=True,
    )


def _heatmap(
    frame: pd.DataFrame,
    *,
    x: alt.X,
    y: alt.Y,
    n_x: int,
    n_y: int,
    tooltip: list[alt.Tooltip],
    symmetric_to_one: bool,
    chart: alt.Chart | None = None,
) -> alt.LayerChart:
    finite = frame["cosine"].abs().dropna()
    peak = 1.0 if symmetric_to_one or finite.empty else max(float(finite.max()), 1e-6)
    color = alt.Color(
        "cosine:Q",
        title="cosine",
        scale=alt.Scale(scheme=HEATMAP_SCHEME, domain=[-peak, peak]),
        legend=alt.Legend(orient="right", gradientLength=max(80, min(200, _ROW_PX * n_y))),
    )
    base = (chart if chart is not None else alt.Chart(_values(frame))).encode(x=x, y=y)
    large = max(n_x, n_y) > LARGE_MATRIX
    cells = (base.mark_rect() if large else base.mark_rect(stroke="white", strokeWidth=1)).encode(
        color=color, tooltip=tooltip
    )
    layers: list[Any] = [cells]
    if n_x * n_y <= 400:
        text = base.mark_text(fontSize=10).encode(
            text=alt.Text("cosine:Q", format=".2f"),
            color=alt.condition(
                f"abs(datum.cosine) > {0.6 * peak}", alt.value("white"), alt.value("#1d232c")
            ),
            tooltip=tooltip,
        )
        layers.append(text)
    cell_w = _CELL_PX + 14 if n_x * n_y <= 400 else _CELL_PX
    cell_h = _ROW_PX
    if large:  # an overview that fits the page: square cells of at least 2 px
        cell_w = cell_h = max(2, _MATRIX_WIDTH_PX // max(n_x, 1))
    layered = alt.layer(*layers).properties(width=cell_w * n_x, height=cell_h * max(n_y, 1) + 4)
    return _configure(layered)


def _interval_tooltip(frame: pd.DataFrame) -> list[alt.Tooltip]:
    """The cosine's 95% interval as a tooltip row, when the table has one."""
    return [alt.Tooltip("cosine_ci:N", title="95% CI")] if "cosine_ci" in frame.columns else []


def _ticks(span: float) -> list[float]:
    """Axis ticks every 0.25 (every 0.5 beyond ±1) from -span to span."""
    step = 0.25 if span <= 1 else 0.5
    count = round(span / step)
    return [round(i * step, 2) for i in range(-count, count + 1)]


def _group_scale(groups: list[str]) -> alt.Scale:
    if len(groups) == 2:
        return alt.Scale(domain=list(groups), range=[POSITIVE_COLOR, NEGATIVE_COLOR])
    return alt.Scale(domain=list(groups), scheme=GROUP_SCHEME)
