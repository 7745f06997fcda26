"""Report charts for the output side and concept structure: pure DataFrame -> Altair functions.

Companions of :mod:`auditkit.charts.style` (same colours, fonts and inlined data): output
shares with their intervals against a reference, latent lean against output share, and the
2-D concept map coloured by cluster. Each reads only the rows it is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import altair as alt
import pandas as pd

from auditkit.charts.style import (
    GROUP_SCHEME,
    INTERVAL_COLOR,
    POSITIVE_COLOR,
    Width,
    concept_labels,
    configure,
    group_scale,
    inline_values,
    share_interval_texts,
    share_position,
)

_ROW_PX = 16
_LABELLED_POINTS = 40
"""Concept maps with at most this many points name every point beside it."""
_LEGEND_CLUSTERS = 20
"""A concept map with more clusters than this has no colour legend (its colours repeat)."""


def share_chart(shares: pd.DataFrame, width: Width = "container") -> alt.LayerChart:
    """Share of each concept's images read as each group of one attribute, with intervals.

    ``shares`` holds the rows of one attribute from ``output_shares`` or, to draw each
    concept's reference, from ``compare_to_reference``. A dot per (concept, group) at its
    share, a rule across its Wilson interval; the reference is a dashed line at the even split
    1/k when it is uniform (or absent), else a dark tick per group at its reference value.
    """
    groups = list(dict.fromkeys(shares["group"].astype(str)))
    frame = shares.assign(label=concept_labels(shares), share_ci=share_interval_texts(shares))
    order = list(dict.fromkeys(frame["label"]))
    has_reference = "reference" in frame.columns
    tooltip = [
        alt.Tooltip("concept_set:N", title="concept set"),
        alt.Tooltip("concept:N", title="concept"),
        alt.Tooltip("group:N", title="read as"),
        alt.Tooltip("share:Q", title="share", format=".1%"),
        alt.Tooltip("share_ci:N", title="95% CI"),
        alt.Tooltip("count:Q", title="images"),
        alt.Tooltip("n_images:Q", title="of images read"),
        alt.Tooltip("n_unread:Q", title="unread images"),
    ]
    if has_reference:
        tooltip += [
            alt.Tooltip("reference:Q", title="reference", format=".1%"),
            alt.Tooltip("difference:Q", title="share − reference", format="+.1%"),
        ]
    y = alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=170))
    y_offset = alt.YOffset("group:N", sort=groups)

    def x(field: str) -> alt.X:
        title = "share of images read as each group (dot) with 95% interval (rule)"
        return share_position(alt.X, field, title)

    color = alt.Color("group:N", title="read as", scale=group_scale(groups), sort=groups)
    base = alt.Chart(inline_values(frame)).encode(y=y, yOffset=y_offset)
    error = base.mark_rule(strokeWidth=2, strokeCap="round", opacity=0.8).encode(
        x=x("share_low"),
        x2="share_high:Q",
        color=color,
        tooltip=tooltip,
    )
    dots = base.mark_point(filled=True, size=55, opacity=1).encode(
        x=x("share"), color=color, tooltip=tooltip
    )
    uniform = not has_reference or bool((frame["reference_kind"] == "uniform").all())
    even = 1.0 / max(1, len(groups)) if uniform else None
    reference = _reference_layer(base, x, tooltip, even, "even split")
    height = max(60, _ROW_PX * len(order) * max(2, len(groups)))
    return configure(alt.layer(reference, error, dots).properties(width=width, height=height))


def _reference_layer(
    base: alt.Chart, x: Any, tooltip: list[alt.Tooltip], even: float | None, label: str
) -> Any:
    """A dashed line at ``even`` (a uniform reference), else a dark tick per row at its
    ``reference`` value."""
    if even is not None:
        line = pd.DataFrame({"x": [even], "what": [label]})
        return (
            alt.Chart(inline_values(line))
            .mark_rule(strokeDash=[4, 3], color="#5b6270")
            .encode(x=x("x"), tooltip=[alt.Tooltip("what:N", title="line")])
        )
    return base.mark_tick(color=INTERVAL_COLOR, thickness=2, size=12).encode(
        x=x("reference"), tooltip=tooltip
    )


GUIDANCE_COLORS = ("#9aa3af", "#1d232c")
"""Lighter grey for the swept scales, the page's ink for the audit's own scale."""


def guidance_chart(rows: pd.DataFrame, width: Width = "container") -> alt.LayerChart:
    """Share of each concept's images read as one group at each guidance scale (one attribute).

    ``rows`` are the ``guidance`` table's rows of one attribute and group. A dot per scale
    (the audit's own scale dark, the swept ones grey) with its Wilson interval, a line joining a
    concept's dots: the longer the line, the more guidance moved the share. The reference is
    a dashed line when uniform, else a tick per concept.
    """
    frame = rows.assign(
        label=concept_labels(rows),
        scale=[
            f"guidance {g:g}" + (" (audit)" if audit else "")
            for g, audit in zip(rows["guidance"], rows["audit"], strict=True)
        ],
        share_ci=share_interval_texts(rows),
    )
    audit_rows = frame[frame["audit"].astype(bool)]
    order = list(audit_rows.sort_values("share", ascending=False)["label"].drop_duplicates())
    order += [c for c in dict.fromkeys(frame["label"]) if c not in order]
    scales = list(dict.fromkeys(frame.sort_values("guidance")["scale"]))
    audit_scale = next(iter(dict.fromkeys(audit_rows["scale"])), None)
    colors = [GUIDANCE_COLORS[1] if s == audit_scale else GUIDANCE_COLORS[0] for s in scales]
    group = str(rows["group"].iloc[0]) if len(rows) else ""
    tooltip = [
        alt.Tooltip("concept:N", title="concept"),
        alt.Tooltip("scale:N", title="sampled at"),
        alt.Tooltip("share:Q", title=f"share read as {group}", format=".1%"),
        alt.Tooltip("share_ci:N", title="95% CI"),
        alt.Tooltip("n_images:Q", title="images read"),
        alt.Tooltip("reference:Q", title="reference", format=".1%"),
    ]
    y = alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=170))

    def x(field: str) -> alt.X:
        title = f"share of images read as {group} (dot) with 95% interval (rule)"
        return share_position(alt.X, field, title)

    color = alt.Color(
        "scale:N", title=None, sort=scales, scale=alt.Scale(domain=scales, range=colors)
    )
    base = alt.Chart(inline_values(frame)).encode(y=y)
    line = base.mark_line(color="#c3c8cf", strokeWidth=2).encode(
        x=x("share"), detail="label:N", order="guidance:Q"
    )
    error = base.mark_rule(strokeWidth=1.5, opacity=0.55).encode(
        x=x("share_low"), x2="share_high:Q", color=color, tooltip=tooltip
    )
    dots = base.mark_point(filled=True, size=60, opacity=1).encode(
        x=x("share"), color=color, tooltip=tooltip
    )
    uniform = bool((frame["reference_kind"] == "uniform").all())
    even = float(frame["reference"].iloc[0]) if uniform else None
    reference = _reference_layer(base, x, tooltip, even, "reference")
    height = max(60, 22 * len(order))
    return configure(alt.layer(reference, line, error, dots).properties(width=width, height=height))


def agreement_chart(
    points: pd.DataFrame,
    summary: Mapping[str, Any] | None = None,
    width: Width = "container",
) -> alt.LayerChart:
    """Latent lean score against output share, one point per concept (one axis).

    ``points`` holds the rows of one axis from ``agreement_points``; ``summary``, optionally,
    that axis's row of ``agreement``, shown as the subtitle (rho, its interval, the verdict).
    A vertical rule spans each share's Wilson interval.
    """
    positive = str(points["positive_group"].iloc[0]) if len(points) else "the positive group"
    frame = points.assign(
        label=concept_labels(points) if len(points) else [],
        share_ci=share_interval_texts(points),
    )
    tooltip = [
        alt.Tooltip("concept_set:N", title="concept set"),
        alt.Tooltip("concept:N", title="concept"),
        alt.Tooltip("score:Q", title="lean score", format="+.3f"),
        alt.Tooltip("share:Q", title=f"share read as {positive}", format=".1%"),
        alt.Tooltip("share_ci:N", title="95% CI"),
        alt.Tooltip("n_images:Q", title="images read"),
    ]
    x = alt.X("score:Q", title=f"latent lean score (+ = towards {positive})")

    def y(field: str) -> alt.Y:
        return share_position(alt.Y, field, f"share of images read as {positive}")

    base = alt.Chart(inline_values(frame))
    error = base.mark_rule(color=INTERVAL_COLOR, opacity=0.45, strokeWidth=1.5).encode(
        x=x,
        y=y("share_low"),
        y2="share_high:Q",
        tooltip=tooltip,
    )
    dots = base.mark_point(filled=True, size=70, opacity=0.9, color=POSITIVE_COLOR).encode(
        x=x, y=y("share"), tooltip=tooltip
    )
    subtitle = _agreement_subtitle(summary) if summary is not None else ""
    chart = alt.layer(error, dots).properties(width=width, height=260)
    if subtitle:
        chart = chart.properties(title=alt.TitleParams(text="", subtitle=subtitle))
    return configure(chart)


def _agreement_subtitle(summary: Mapping[str, Any]) -> str:
    rho = summary.get("rho", math.nan)
    low, high = summary.get("rho_ci_low", math.nan), summary.get("rho_ci_high", math.nan)
    statement = str(summary.get("statement", ""))
    n = summary.get("n_concepts", "")
    if not math.isfinite(float(rho)):
        return f"{statement} ({n} concepts)"
    interval = f" [{low:+.2f}, {high:+.2f}]" if math.isfinite(float(low)) else ""
    return f"Spearman ρ = {rho:+.2f}{interval} over {n} concepts: {statement}".replace("-", "−")


def concept_map_chart(points: pd.DataFrame, width: Width = "container") -> alt.LayerChart:
    """The 2-D concept map (``concept_map`` rows), coloured by ``cluster`` when present.

    Axis titles give the share of variance each component explains; with few concepts each
    point is named beside it, otherwise names are in the tooltips.
    """
    clustered = "cluster" in points.columns
    frame = points.assign(cluster=points["cluster"].astype(str)) if clustered else points
    tooltip = [alt.Tooltip("concept:N", title="concept")]
    if clustered:
        tooltip.append(alt.Tooltip("cluster:N", title="cluster"))
    tooltip += [
        alt.Tooltip("x:Q", title="component 1", format="+.3f"),
        alt.Tooltip("y:Q", title="component 2", format="+.3f"),
    ]

    def title(component: int, column: str) -> str:
        share = float(frame[column].iloc[0]) if len(frame) else math.nan
        shown = f"{share:.0%}" if share >= 0.01 else f"{share:.1%}"
        explained = f" ({shown} of variance)" if math.isfinite(share) else ""
        return f"component {component}{explained}"

    x = alt.X("x:Q", title=title(1, "variance_x"), scale=alt.Scale(zero=False, padding=20))
    y = alt.Y("y:Q", title=title(2, "variance_y"), scale=alt.Scale(zero=False, padding=20))
    base = alt.Chart(inline_values(frame)).encode(x=x, y=y, tooltip=tooltip)
    style: dict[str, Any] = {}
    if clustered:
        many = frame["cluster"].nunique() > _LEGEND_CLUSTERS  # colours repeat: tooltips name it
        style["color"] = alt.Color(
            "cluster:N",
            title="cluster",
            scale=alt.Scale(scheme=GROUP_SCHEME),
            legend=None if many else alt.Undefined,
        )
    size = 80 if len(frame) <= _LABELLED_POINTS * 10 else 30
    dots = base.mark_point(filled=True, size=size, opacity=0.9).encode(**style)
    layers: list[Any] = [dots]
    if len(frame) <= _LABELLED_POINTS:
        layers.append(
            base.mark_text(align="left", dx=7, fontSize=10, color="#1d232c").encode(
                text="concept:N"
            )
        )
    return configure(alt.layer(*layers).properties(width=width, height=320))


BASIS_COLORS = ("#9aa3af", "#1d232c")
"""Raw shares in grey, corrected shares in the page's ink."""


def corrected_share_chart(rows: pd.DataFrame, width: Width = "container") -> alt.LayerChart:
    """Raw against corrected share of one group, per concept: for each concept a grey dot and
    rule (the raw share and its Wilson interval) and a dark one (the share corrected for the
    captioner's confusion and its bootstrap interval). ``rows``: the outputs rows of one
    attribute and group, with the correction columns."""
    raw = rows.assign(
        basis="raw (Wilson interval)",
        value=rows["share"],
        low=rows["share_low"],
        high=rows["share_high"],
    )
    fixed = rows.assign(
        basis="corrected (bootstrap interval)",
        value=rows["corrected"],
        low=rows["corrected_low"],
        high=rows["corrected_high"],
    )
    frame = pd.concat([raw, fixed], ignore_index=True)
    frame = frame.assign(label=concept_labels(frame))
    frame = frame[["label", "concept", "group", "basis", "value", "low", "high"]]
    order = list(dict.fromkeys(frame["label"]))
    kinds = ["raw (Wilson interval)", "corrected (bootstrap interval)"]
    tooltip = [
        alt.Tooltip("concept:N", title="concept"),
        alt.Tooltip("basis:N", title="share"),
        alt.Tooltip("value:Q", title="read as the group", format=".1%"),
        alt.Tooltip("low:Q", title="95% low", format=".1%"),
        alt.Tooltip("high:Q", title="95% high", format=".1%"),
    ]
    group = str(rows["group"].iloc[0]) if len(rows) else ""
    title = f"share of images read as {group}: raw and corrected, with 95% intervals"
    color = alt.Color(
        "basis:N",
        title=None,
        sort=kinds,
        scale=alt.Scale(domain=kinds, range=BASIS_COLORS),
        legend=alt.Legend(labelLimit=300),
    )
    base = alt.Chart(inline_values(frame)).encode(
        y=alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=170)),
        yOffset=alt.YOffset("basis:N", sort=kinds),
        color=color,
        tooltip=tooltip,
    )
    error = base.mark_rule(strokeWidth=2, strokeCap="round").encode(
        x=share_position(alt.X, "low", title), x2="high:Q"
    )
    dots = base.mark_point(filled=True, size=55, opacity=1).encode(
        x=share_position(alt.X, "value", title)
    )
    height = max(60, _ROW_PX * len(order) * 2)
    return configure(alt.layer(error, dots).properties(width=width, height=height))
