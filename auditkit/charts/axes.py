"""Charts along an axis: lean bars, lean by step, defaults."""

from __future__ import annotations

import math
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from auditkit.charts.style import (
    _ROW_PX,
    BAND_COLOR,
    GROUP_SCHEME,
    INTERVAL_COLOR,
    NEGATIVE_COLOR,
    NEUTRAL_COLOR,
    POSITIVE_COLOR,
    Width,
    concept_labels,
    configure,
    finding_text,
    group_scale,
    has_interval,
    inline_values,
    ticks,
    with_interval_text,
)


def lean_chart(
    lean: pd.DataFrame,
    positive_group: str,
    negative_group: str,
    width: Width = "container",
    *,
    measure: str = "score",
) -> alt.LayerChart:
    """Lean of every concept along one two-group axis, as sorted horizontal bars.

    ``lean`` holds the rows of ``lean.parquet`` for one axis; ``measure`` is the column drawn:
    the lean ``score`` (dotted rules at the two group means, ±1) or the ``marked_position``
    the run was judged by (dotted rules at the two marked variants, ±1). Bars start at 0.
    Colour is the group the drawn measure leans to. When the table has the measure's optional
    ``_ci_low`` / ``_ci_high`` columns, a dark rule behind each bar (which is then drawn
    translucent) spans its 95% interval.
    """
    intervals = has_interval(lean, measure)
    frame = with_interval_text(with_interval_text(lean, measure), "cosine")
    frame = frame.assign(
        label=concept_labels(frame),
        side=frame["toward"]
        if measure == "score"
        else np.where(frame[measure] >= 0, positive_group, negative_group),
    )
    order = frame.sort_values(measure, ascending=False)["label"].tolist()
    extent = [measure, f"{measure}_ci_low", f"{measure}_ci_high"] if intervals else [measure]
    peak = float(frame[extent].abs().max().max()) if len(frame) else 0.0
    span = max(1.0, math.ceil(peak * 2 - 1e-9) / 2) if math.isfinite(peak) else 1.0
    if measure == "marked_position":
        title = [
            "position between marked variants",
            f"−1 = '{negative_group} …' · 0 = midway · +1 = '{positive_group} …'",
        ]
    else:
        title = [
            "lean score",
            f"−1 = {negative_group} mean · 0 = midpoint · +1 = {positive_group} mean",
        ]

    def x(field: str) -> alt.X:
        return alt.X(
            f"{field}:Q",
            title=title,
            scale=alt.Scale(domain=[-span, span], nice=False),
            axis=alt.Axis(
                values=ticks(span),
                labelExpr="(datum.value > 0 ? '+' : '') + format(datum.value, '.2~f')",
            ),
        )

    y = alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=170))
    color = alt.Color(
        "side:N",
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
    if measure != "score":
        tooltip.append(alt.Tooltip(f"{measure}:Q", title="position", format="+.3f"))
    if intervals:
        tooltip.append(alt.Tooltip(f"{measure}_ci:N", title="95% CI"))
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
    # channels are given as Altair's own classes, not strings or dicts: Altair converts those
    # by hashing every class of its schema anew each time (about 6 ms each, a third of a lean
    # chart's time)
    base = alt.Chart(inline_values(frame))
    bar_style: dict[str, Any] = {"fillOpacity": 0.55} if intervals else {}
    bars = base.mark_bar(height={"band": 0.72}, cornerRadiusEnd=2, **bar_style).encode(
        x=x(measure), x2=alt.X2Datum(0), y=y, color=color, tooltip=tooltip
    )
    marks = pd.DataFrame({"x": [-1.0, 0.0, 1.0], "kind": ["group", "mid", "group"]})

    def mid(value: Any) -> dict[str, Any]:  # the midpoint's rule drawn apart from the groups'
        return {"test": "datum.kind == 'mid'", "value": value}

    rules = (
        alt.Chart(inline_values(marks))
        .mark_rule()
        .encode(
            x=alt.X("x:Q"),
            strokeDash=alt.StrokeDashValue(condition=mid([1, 0]), value=[3, 3]),
            color=alt.ColorValue("#5b6270"),
            opacity=alt.OpacityValue(condition=mid(0.9), value=0.5),
        )
    )
    layers: list[Any] = []
    band = band_of(frame)
    if band is not None:  # the equivalence band: leans inside it are too small to count
        shade = pd.DataFrame(
            {"x": [-band], "x2": [band], "label": [f"±{band:g}: too small to count"]}
        )
        layers.append(
            alt.Chart(inline_values(shade))
            .mark_rect(color=BAND_COLOR, opacity=0.35)
            .encode(
                x=alt.X("x:Q"),
                x2=alt.X2("x2:Q"),
                tooltip=[alt.Tooltip("label:N", title="equivalence band")],
            )
        )
    layers.append(rules)
    if intervals:
        layers.append(
            base.mark_rule(color=INTERVAL_COLOR, strokeWidth=2, strokeCap="round").encode(
                x=x(f"{measure}_ci_low"), x2=alt.X2(f"{measure}_ci_high:Q"), y=y, tooltip=tooltip
            )
        )
    layers.append(bars)
    if tested:  # a star just past the end of each significant lean (and its interval)
        stars = frame[frame["significant"].astype(bool)]
        if not stars.empty:
            reach = stars[[c for c in extent if c in stars.columns]]
            tip = np.where(stars[measure] >= 0, reach.max(axis=1), reach.min(axis=1))
            offset = np.where(stars[measure] >= 0, 0.06 * span, -0.06 * span)
            stars = stars.assign(star_x=np.clip(tip + offset, -span, span))
            layers.append(
                alt.Chart(inline_values(stars))
                .mark_text(text="★", fontSize=11, color=INTERVAL_COLOR, baseline="middle")
                .encode(x=alt.X("star_x:Q"), y=y, tooltip=tooltip)
            )
    height = max(60, _ROW_PX * len(order))
    chart = alt.layer(*layers).properties(width=width, height=height)
    return configure(chart)


def band_of(frame: pd.DataFrame) -> float | None:
    """The min_effect rule's band of a lean table, or None under another rule."""
    if "rule" not in frame.columns or "min_effect" not in frame.columns or frame.empty:
        return None
    if str(frame["rule"].iloc[0]) != "min_effect":
        return None
    band = float(frame["min_effect"].iloc[0])
    return band if math.isfinite(band) and band > 0 else None


def steps_chart(steps: pd.DataFrame, width: Width = "container") -> alt.Chart:
    """Lean score of each concept at each kept denoising step (``steps.parquet``, one axis)."""
    frame = steps.assign(label=concept_labels(steps))
    chart = (
        alt.Chart(inline_values(frame))
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
    return configure(chart)


def defaults_chart(
    defaults: pd.DataFrame, groups: list[str], width: Width = "container"
) -> alt.LayerChart:
    """How close each unmarked concept is to each group-marked variant (one axis).

    One row per concept; a dot per group at the cosine of ``H(unmarked)`` with ``H(marked)``,
    joined by a thin rule. The rank-1 group is the model's default for that concept.
    """
    frame = defaults.assign(label=concept_labels(defaults))
    firsts = frame[frame["rank"] == 1].sort_values("margin", ascending=False)
    order = list(dict.fromkeys(firsts["label"].tolist() + frame["label"].tolist()))
    y = alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=170))
    x = alt.X("cosine:Q", title="cosine of unmarked prompt with marked variant")
    base = alt.Chart(inline_values(frame))
    span = base.mark_rule(color="#c7ccd4").encode(x="min(cosine):Q", x2="max(cosine):Q", y=y)
    dots = base.mark_point(filled=True, size=70, opacity=0.95).encode(
        x=x,
        y=y,
        color=alt.Color(
            "group:N", title="marked with", scale=group_scale(groups), sort=list(groups)
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
    return configure(alt.layer(span, dots).properties(width=width, height=height))
