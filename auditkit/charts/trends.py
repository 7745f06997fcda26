"""Charts across the checkpoints of a model line (``auditkit history report``).

Each takes tidy rows with a ``point`` column (the checkpoint, as the report labels it) and the
order of the checkpoints along the line; x is always the checkpoint, in that order. The trend
charts, one small panel per concept, label the x axis with the short ``tick`` of each
checkpoint (its step, or its position in the line) and name the checkpoint in the tooltip.
"""

from __future__ import annotations

import math

import altair as alt
import pandas as pd

from auditkit.charts.style import (
    BAND_COLOR,
    GROUP_SCHEME,
    INTERVAL_COLOR,
    configure,
    inline_values,
    interval_text,
    share_position,
    share_text,
)

PASS_COLOR = "#1f7a4d"
FAIL_COLOR = "#9b1c1c"
PANEL_WIDTH = 150
PANEL_HEIGHT = 120
COLUMNS = 4


def _checkpoint(order: list[str]) -> alt.X:
    """The x channel of a trend panel: the checkpoints' ticks, in the line's order."""
    return alt.X("tick:N", sort=order, title=None, axis=alt.Axis(labelAngle=0, labelLimit=60))


def _tooltip(*rows: alt.Tooltip) -> list[alt.Tooltip]:
    """A trend panel's tooltip: the checkpoint's name and the concept, then ``rows``."""
    return [
        alt.Tooltip("point:N", title="checkpoint"),
        alt.Tooltip("label:N", title="concept"),
        *rows,
    ]


def _panels(layered: alt.LayerChart | alt.FacetChart, labels: list[str]) -> alt.FacetChart:
    """One small panel per concept (``label``), :data:`COLUMNS` to a row, each with its own x
    axis (a short last row leaves no empty axes), scales shared."""
    return (
        layered.properties(width=PANEL_WIDTH, height=PANEL_HEIGHT)
        .facet(facet=alt.Facet("label:N", title=None, sort=labels), columns=COLUMNS)
        .resolve_axis(x="independent")
    )


def lean_trend_chart(rows: pd.DataFrame, order: list[str]) -> alt.FacetChart:
    """The lean score of every concept along one axis at each checkpoint: one panel per
    concept, the score as a line through dots, its 95% interval as a rule, the band of leans
    too small to count (``min_effect``) shaded, and a significant lean drawn as a filled dot.

    ``rows``: one row per (checkpoint, concept) with ``point``, ``tick``, ``label`` (the panel's
    title),
    ``score``, ``score_ci_low``, ``score_ci_high``, ``significant`` and ``min_effect``."""
    ends = zip(rows["score_ci_low"], rows["score_ci_high"], strict=True)
    frame = rows.assign(
        finding=["significant" if bool(s) else "not significant" for s in rows["significant"]],
        ci=[interval_text(lo, hi) for lo, hi in ends],
        band_low=-rows["min_effect"].astype(float),
        band_high=rows["min_effect"].astype(float),
    )[["point", "tick", "label", "score", "score_ci_low", "score_ci_high", "finding", "ci",
       "band_low", "band_high"]]  # fmt: skip
    extent = frame[["score", "score_ci_low", "score_ci_high"]].abs().max().max()
    span = max(1.0, math.ceil(float(extent) * 2) / 2) if math.isfinite(float(extent)) else 1.0
    x = _checkpoint(order)
    judged = set(rows["effect"]) if "effect" in rows.columns else {"score"}
    title = "lean score" if judged == {"score"} else "judged lean (score or marked position)"
    y = alt.Y("score:Q", title=title, scale=alt.Scale(domain=[-span, span], nice=False))
    tooltip = _tooltip(
        alt.Tooltip("score:Q", format="+.3f"),
        alt.Tooltip("ci:N", title="95% CI"),
        alt.Tooltip("finding:N", title="lean"),
    )
    base = alt.Chart()
    band = base.mark_area(color=BAND_COLOR, opacity=0.6).encode(
        x=x, y=alt.Y("band_low:Q", title=title), y2="band_high:Q"
    )
    zero = base.mark_rule(color="#999", strokeDash=[2, 2]).encode(y=alt.datum(0))
    error = base.mark_rule(color=INTERVAL_COLOR, strokeWidth=1.5).encode(
        x=x, y=alt.Y("score_ci_low:Q", title=title), y2="score_ci_high:Q", tooltip=tooltip
    )
    line = base.mark_line(color=INTERVAL_COLOR, strokeWidth=1).encode(x=x, y=y)
    dots = base.mark_point(size=55, strokeWidth=1.5, opacity=1, color=INTERVAL_COLOR).encode(
        x=x,
        y=y,
        fill=alt.Fill(
            "finding:N",
            title="lean",
            scale=alt.Scale(
                domain=["significant", "not significant"], range=[INTERVAL_COLOR, "#ffffff"]
            ),
        ),
        tooltip=tooltip,
    )
    layered = alt.layer(band, zero, error, line, dots, data=inline_values(frame))
    return configure(_panels(layered, list(dict.fromkeys(frame["label"]))))


def share_trend_chart(rows: pd.DataFrame, order: list[str]) -> alt.FacetChart:
    """The share of every concept's images read as each group, at each checkpoint: one panel
    per concept, a line and dot per group with its 95% Wilson interval, the reference share
    dashed.

    ``rows``: one row per (checkpoint, concept, group) with ``point``, ``tick``, ``label``,
    ``group``, ``share``, ``share_low``, ``share_high``, ``reference`` and ``n_images``."""
    ends = zip(rows["share_low"], rows["share_high"], strict=True)
    columns = ["point", "tick", "label", "group", "share", "share_low", "share_high",
               "reference", "interval", "n_images"]  # fmt: skip
    frame = rows.assign(interval=[share_text(lo, hi) for lo, hi in ends])[columns]
    groups = list(dict.fromkeys(frame["group"]))
    x = _checkpoint(order)
    y = share_position(alt.Y, "share", "share of images")
    color = alt.Color(
        "group:N", title="read as", scale=alt.Scale(domain=groups, scheme=GROUP_SCHEME)
    )
    tooltip = _tooltip(
        alt.Tooltip("group:N", title="read as"),
        alt.Tooltip("share:Q", format=".1%"),
        alt.Tooltip("interval:N", title="95% interval"),
        alt.Tooltip("reference:Q", format=".1%"),
        alt.Tooltip("n_images:Q", title="images"),
    )
    base = alt.Chart()
    reference = base.mark_line(color="#777", strokeDash=[4, 3], strokeWidth=1).encode(
        x=x, y=alt.Y("reference:Q"), detail="group:N"
    )
    error = base.mark_rule(strokeWidth=1.5).encode(
        x=x, y=alt.Y("share_low:Q"), y2="share_high:Q", color=color, tooltip=tooltip
    )
    line = base.mark_line(strokeWidth=1).encode(x=x, y=y, color=color)
    dots = base.mark_circle(size=50, opacity=1).encode(x=x, y=y, color=color, tooltip=tooltip)
    layered = alt.layer(reference, error, line, dots, data=inline_values(frame))
    return configure(_panels(layered, list(dict.fromkeys(frame["label"]))))


def gate_grid_chart(rows: pd.DataFrame, order: list[str]) -> alt.LayerChart:
    """Every gate at every checkpoint: a cell per (gate, checkpoint), green when it passed and
    red when it failed, with the gate's value written in it (an empty cell: not gated there).

    ``rows``: one row per (checkpoint, gate) with ``point``, ``gate``, ``outcome`` ('pass' or
    'FAIL'), ``value`` and ``limit`` (the gate's bound as text, e.g. '≤ 0.5')."""
    frame = rows[["point", "gate", "outcome", "value", "limit"]].assign(
        shown=[
            "—" if v is None or not math.isfinite(float(v)) else f"{float(v):.3g}"
            for v in rows["value"]
        ]
    )
    gates = list(dict.fromkeys(frame["gate"]))
    x = alt.X(
        "point:N",
        sort=order,
        title="checkpoint",
        axis=alt.Axis(labelAngle=-35, labelLimit=160, orient="top"),
    )
    y = alt.Y("gate:N", sort=gates, title=None, axis=alt.Axis(labelLimit=320))
    tooltip = [
        alt.Tooltip("gate:N"),
        alt.Tooltip("point:N", title="checkpoint"),
        alt.Tooltip("outcome:N"),
        alt.Tooltip("shown:N", title="value"),
        alt.Tooltip("limit:N", title="limit"),
    ]
    base = alt.Chart(inline_values(frame))
    cells = base.mark_rect(stroke="#ffffff", strokeWidth=2).encode(
        x=x,
        y=y,
        color=alt.Color(
            "outcome:N",
            title="gate",
            scale=alt.Scale(domain=["pass", "FAIL"], range=[PASS_COLOR, FAIL_COLOR]),
        ),
        tooltip=tooltip,
    )
    text = base.mark_text(color="#ffffff", fontSize=11).encode(
        x=x, y=y, text="shown:N", tooltip=tooltip
    )
    width = max(240, 90 * len(order))
    return configure(alt.layer(cells, text).properties(width=width, height=34 * len(gates)))
