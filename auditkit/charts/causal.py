"""Report chart for the causal check: a pure DataFrame -> Altair function.

Companion of :mod:`auditkit.charts.style` (same colours, fonts and inlined data): the
dose-response of one steered axis, the share of images read as its first group against the
steering strength alpha, pooled over concepts with Wilson intervals, each concept a faint line.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from auditkit.charts.style import (
    INTERVAL_COLOR,
    NEUTRAL_COLOR,
    POSITIVE_COLOR,
    Width,
    concept_labels,
    configure,
    inline_values,
    share_interval_texts,
    share_position,
)


def _alpha_label(alpha: float) -> str:
    return "0" if alpha == 0 else f"{alpha:+g}".replace("-", "−")


def dose_response_chart(
    curve: pd.DataFrame,
    per_concept: pd.DataFrame | None = None,
    width: Width = "container",
) -> alt.LayerChart:
    """Share of images read as the axis's first group at each alpha (one steered axis).

    ``curve`` holds the axis's rows of ``causal_curve`` (pooled over concepts): a dot per alpha
    at its share, joined by a line, with a dark rule across its 95% Wilson interval.
    ``per_concept``, optionally, the axis's rows of ``causal``: one faint grey line per concept.
    A dotted rule marks alpha = 0 (unsteered sampling) when it is in range.
    """
    positive = str(curve["positive_group"].iloc[0]) if len(curve) else "the first group"
    alphas = sorted(float(a) for a in curve["alpha"].unique())
    frame = curve.assign(
        share_ci=share_interval_texts(curve),
        alpha_label=[_alpha_label(float(a)) for a in curve["alpha"]],
    )
    label_expr = "datum.value > 0 ? '+' + format(datum.value, '~g') : format(datum.value, '~g')"

    def x(field: str = "alpha") -> alt.X:
        return alt.X(
            f"{field}:Q",
            title=[
                "α: steering strength",
                "1 = the full gap between the groups' mean latents",
            ],
            scale=alt.Scale(nice=False, padding=12),
            axis=alt.Axis(values=alphas, labelExpr=label_expr),
        )

    def y(field: str) -> alt.Y:
        return share_position(alt.Y, field, f"share of images read as {positive}")

    tooltip = [
        alt.Tooltip("alpha_label:N", title="α"),
        alt.Tooltip("share:Q", title=f"share read as {positive}", format=".1%"),
        alt.Tooltip("share_ci:N", title="95% CI"),
        alt.Tooltip("n_images:Q", title="images read"),
        alt.Tooltip("n_unread:Q", title="unread images"),
    ]
    layers: list[alt.Chart] = []
    if alphas and alphas[0] <= 0 <= alphas[-1]:
        zero = pd.DataFrame({"alpha": [0.0], "what": ["α = 0: sampled as in the audit"]})
        layers.append(
            alt.Chart(inline_values(zero))
            .mark_rule(strokeDash=[2, 3], color="#5b6270", opacity=0.7)
            .encode(x=x(), tooltip=[alt.Tooltip("what:N", title="line")])
        )
    if per_concept is not None and len(per_concept):
        concepts = per_concept.assign(
            label=concept_labels(per_concept),
            alpha_label=[_alpha_label(float(a)) for a in per_concept["alpha"]],
        )
        layers.append(
            alt.Chart(inline_values(concepts))
            .mark_line(color=NEUTRAL_COLOR, opacity=0.35, strokeWidth=1, point=False)
            .encode(
                x=x(),
                y=y("share"),
                detail="label:N",
                order="alpha:Q",
                tooltip=[
                    alt.Tooltip("label:N", title="concept"),
                    alt.Tooltip("alpha_label:N", title="α"),
                    alt.Tooltip("share:Q", title=f"share read as {positive}", format=".1%"),
                    alt.Tooltip("n_images:Q", title="images read"),
                ],
            )
        )
    base = alt.Chart(inline_values(frame))
    layers += [
        base.mark_rule(color=INTERVAL_COLOR, strokeWidth=2, strokeCap="round").encode(
            x=x(), y=y("share_low"), y2="share_high:Q", tooltip=tooltip
        ),
        base.mark_line(color=POSITIVE_COLOR, strokeWidth=2.5).encode(
            x=x(), y=y("share"), order="alpha:Q"
        ),
        base.mark_point(filled=True, size=80, opacity=1, color=POSITIVE_COLOR).encode(
            x=x(), y=y("share"), tooltip=tooltip
        ),
    ]
    return configure(alt.layer(*layers).properties(width=width, height=260))


__all__ = ["dose_response_chart"]
