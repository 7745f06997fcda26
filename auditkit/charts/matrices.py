"""Matrix charts: descriptor and similarity heatmaps, per-step axis agreement."""

from __future__ import annotations

from typing import Any, Final

import altair as alt
import pandas as pd

from auditkit.charts.style import (
    _CELL_PX,
    _ROW_PX,
    HEATMAP_SCHEME,
    concept_labels,
    configure,
    has_interval,
    inline_values,
    interval_tooltip,
    json_number,
    with_interval_text,
)


def descriptor_heatmap(descriptors: pd.DataFrame, groups: list[str]) -> alt.LayerChart:
    """Concept x group heatmap of cos(H(c) − R, G(group) − R) for one axis."""
    frame = with_interval_text(descriptors, "cosine").assign(label=concept_labels(descriptors))
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
        tooltip=[
            alt.Tooltip("concept:N", title="concept"),
            alt.Tooltip("group:N", title="group"),
            alt.Tooltip("cosine:Q", title="cosine", format="+.3f"),
            *interval_tooltip(frame),
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


def similarity_heatmap(
    similarity: pd.DataFrame, order: list[str] | None = None, block: int = 1
) -> alt.LayerChart:
    """Concept x concept cosine matrix of one concept set (``similarity.parquet`` rows), rows
    and columns in ``order`` (the clustering's leaf order, so clusters show as blocks; default
    the table's order). With ``block`` above 1 each cell is a square of that many concepts a
    side (an overview of a large set): the mean cosine of its pairs (a concept with itself left
    out), the lowest and highest in the tooltip.

    The data is inlined as one record per row of the matrix, its cosines (and interval ends)
    as arrays that a ``flatten`` transform unrolls and a ``lookup`` names: an n-concept matrix
    costs n records instead of n², which keeps a 200-concept report small.
    """
    present = list(dict.fromkeys(similarity["concept_a"].tolist()))
    wanted = [c for c in order or [] if c in present]
    order = wanted + [c for c in present if c not in wanted]
    if block > 1:
        blocks, labels = _block_means(similarity, order, block)
        spread = ("cosine_min", "cosine_max", "range of the pairs")
        return _cosine_matrix(blocks, labels, spread, overview=True)
    spread = ("cosine_ci_low", "cosine_ci_high", "95% CI")
    intervals = has_interval(similarity, "cosine")
    return _cosine_matrix(similarity, order, spread if intervals else None, overview=False)


def _block_means(
    similarity: pd.DataFrame, order: list[str], block: int
) -> tuple[pd.DataFrame, list[str]]:
    """The matrix of one concept set cut into ``block`` x ``block`` squares along ``order``:
    per pair of squares the mean, lowest and highest cosine (a concept with itself left out),
    as rows shaped like ``similarity.parquet``'s, named by their squares' first and last
    concept."""
    import numpy as np

    n = len(order)
    position = {name: i for i, name in enumerate(order)}
    matrix = np.full((n, n), np.nan)
    rows = similarity["concept_a"].map(position).to_numpy()
    cols = similarity["concept_b"].map(position).to_numpy()
    matrix[rows, cols] = similarity["cosine"].to_numpy(dtype=float)
    np.fill_diagonal(matrix, np.nan)
    starts = list(range(0, n, block))
    labels = [
        f"{start + 1}–{min(start + block, n)}: {order[start]} … {order[min(start + block, n) - 1]}"
        for start in starts
    ]
    records = []
    for i, a in enumerate(starts):
        for j, b in enumerate(starts):
            cell = matrix[a : a + block, b : b + block]
            cell = cell[np.isfinite(cell)]
            stats = (cell.mean(), cell.min(), cell.max()) if cell.size else (np.nan,) * 3
            records.append((labels[i], labels[j], *stats))
    columns = ["concept_a", "concept_b", "cosine", "cosine_min", "cosine_max"]
    return pd.DataFrame(records, columns=columns), labels


def _cosine_matrix(
    frame: pd.DataFrame,
    order: list[str],
    spread: tuple[str, str, str] | None,
    *,
    overview: bool,
) -> alt.LayerChart:
    """The heatmap of ``frame``'s cosines in ``order``; ``spread`` names two columns shown in
    the tooltip as one ``[low, high]`` under its title; an ``overview``'s cells are blocks."""
    position = {name: i for i, name in enumerate(order)}
    arrays = ["cosine", *spread[:2]] if spread else ["cosine"]
    records = []
    for name, rows in frame.groupby("concept_a", sort=False):
        rows = rows.sort_values("concept_b", key=lambda c: c.map(position))
        record: dict[str, Any] = {
            "concept_a": str(name),
            "k": [position[b] for b in rows["concept_b"]],
        }
        for column in arrays:
            record[column] = [json_number(v) for v in rows[column]]
        records.append(record)
    names = alt.Data(values=[{"k": i, "concept_b": name} for i, name in enumerate(order)])
    chart = (
        alt.Chart(alt.Data(values=records))
        .transform_flatten(["k", *arrays])
        .transform_lookup(lookup="k", from_=alt.LookupData(names, key="k", fields=["concept_b"]))
    )
    if spread:
        low, high = spread[:2]
        text = "replace(format(datum.{0}, '+.3f'), '-', '−')"
        chart = chart.transform_calculate(
            spread=f"isValid(datum.{low}) ? '[' + {text.format(low)} + ', ' + "
            f"{text.format(high)} + ']' : '—'"
        )
    labels = matrix_labelled(len(order))
    return _heatmap(
        frame,
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
        tooltip=[
            alt.Tooltip("concept_a:N", title="concepts" if overview else "concept"),
            alt.Tooltip("concept_b:N", title="with"),
            alt.Tooltip("cosine:Q", title="mean cosine" if overview else "cosine", format="+.3f"),
            *([alt.Tooltip("spread:N", title=spread[2])] if spread else []),
        ],
        symmetric_to_one=True,
    )


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
    tooltip: list[alt.Tooltip],
    symmetric_to_one: bool,
    chart: alt.Chart | None = None,
) -> alt.LayerChart:
    """Cosine cells of ``frame`` (or of ``chart``, its data transformed), columns ``x`` and rows
    ``y``; their ``sort`` lists name every column and row, so they size the matrix. The colour
    scale spans ±1 when ``symmetric_to_one``, else the largest absolute cosine."""
    n_x, n_y = len(x["sort"]), len(y["sort"])
    finite = frame["cosine"].abs().dropna()
    peak = 1.0 if symmetric_to_one or finite.empty else max(float(finite.max()), 1e-6)
    color = alt.Color(
        "cosine:Q",
        title="cosine",
        scale=alt.Scale(scheme=HEATMAP_SCHEME, domain=[-peak, peak]),
        legend=alt.Legend(orient="right", gradientLength=max(80, min(200, _ROW_PX * n_y))),
    )
    base = (chart if chart is not None else alt.Chart(inline_values(frame))).encode(x=x, y=y)
    large = max(n_x, n_y) > LARGE_MATRIX
    cells = (base.mark_rect() if large else base.mark_rect(stroke="white", strokeWidth=1)).encode(
        color=color, tooltip=tooltip
    )
    layers: list[Any] = [cells]
    if n_x * n_y <= 400:
        text = base.mark_text(fontSize=10).encode(
            text=alt.Text("cosine:Q", format=".2f"),
            color=alt.ColorValue(  # Altair's own class: a dict is converted slowly
                condition={"test": f"abs(datum.cosine) > {0.6 * peak}", "value": "white"},
                value="#1d232c",
            ),
            tooltip=tooltip,
        )
        layers.append(text)
    cell_w = _CELL_PX + 14 if n_x * n_y <= 400 else _CELL_PX
    cell_h = _ROW_PX
    if large:  # an overview that fits the page: square cells of at least 2 px
        cell_w = cell_h = max(2, _MATRIX_WIDTH_PX // max(n_x, 1))
    layered = alt.layer(*layers).properties(width=cell_w * n_x, height=cell_h * max(n_y, 1) + 4)
    return configure(layered)


def matrix_labelled(n: int) -> bool:
    """Whether an n x n heatmap names its rows and columns (see :data:`LARGE_MATRIX`)."""
    return n <= LARGE_MATRIX or _MATRIX_WIDTH_PX // max(n, 1) >= MIN_LABELLED_CELL_PX
