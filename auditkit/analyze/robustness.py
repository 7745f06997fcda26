"""Robustness of leans to template wording and to the centring choice.

* Leave-one-template-out: the lean score is recomputed with each axis template, and each
  concept template, left out in turn (where a list has more than one).
* Alternative centring: the lean cosine is recomputed with the other reference (the set mean
  when the audit centres on a base prompt, the base prompt when it was planned).

A lean whose sign flips under any of these is flagged ``fragile``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from auditkit.analyze.measures import (
    AuditLayout,
    AxisLayout,
    ConceptLayout,
    concept_latents,
    group_means,
    lean,
    reference,
)


def _drop_axis_template(axis: AxisLayout, t: int) -> AxisLayout:
    return replace(
        axis,
        groups={
            g: [rows for i, rows in enumerate(per_t) if i != t] for g, per_t in axis.groups.items()
        },
    )


def _drop_concept_template(cset: ConceptLayout, t: int) -> ConceptLayout:
    return replace(
        cset, terms={c: [r for i, r in enumerate(rows) if i != t] for c, rows in cset.terms.items()}
    )


def _variants(layout: AuditLayout, axis: AxisLayout) -> list[tuple[AxisLayout, AuditLayout]]:
    """(axis, layout) pairs with one axis template or one concept template left out."""
    out = []
    n_axis = len(next(iter(axis.groups.values())))
    if n_axis > 1:
        out += [(_drop_axis_template(axis, t), layout) for t in range(n_axis)]
    n_concept = max((len(rows) for cs in layout.concepts for rows in cs.terms.values()), default=1)
    for t in range(n_concept if n_concept > 1 else 0):
        concepts = tuple(
            _drop_concept_template(cs, t) if len(next(iter(cs.terms.values()))) > 1 else cs
            for cs in layout.concepts
        )
        out.append((axis, replace(layout, concepts=concepts)))
    return out


def add_robustness(lean_table: pd.DataFrame, H: np.ndarray, layout: AuditLayout) -> None:
    """Add ``loto_min_score``, ``loto_max_score``, ``cosine_alt_centring``, ``fragile``."""
    if lean_table.empty:
        return
    lows, highs, alt_cos = [], [], []
    axes = {a.name: a for a in layout.axes}
    alt = _alternative_centring(layout)
    for row in lean_table.itertuples():
        axis = axes[str(row.axis)]
        scores = [float(row.score)]  # type: ignore[arg-type]
        for variant_axis, variant_layout in _variants(layout, axis):
            cset = next(c for c in variant_layout.concepts if c.name == row.concept_set)
            vec = concept_latents(H, cset)[str(row.concept)]
            scores.append(
                lean(
                    vec,
                    reference(H, variant_layout, cset),
                    group_means(H, variant_axis),
                    axis.group_names,
                ).score
            )
        lows.append(min(scores))
        highs.append(max(scores))
        if alt is None:
            alt_cos.append(float("nan"))
        else:
            cset = next(c for c in layout.concepts if c.name == row.concept_set)
            vec = concept_latents(H, cset)[str(row.concept)]
            alt_cos.append(
                lean(vec, reference(H, alt, cset), group_means(H, axis), axis.group_names).cosine
            )
    lean_table["loto_min_score"] = lows
    lean_table["loto_max_score"] = highs
    lean_table["cosine_alt_centring"] = alt_cos
    flips = np.sign(lean_table["loto_min_score"]) != np.sign(lean_table["loto_max_score"])
    cos_flip = np.sign(lean_table["cosine_alt_centring"].fillna(lean_table["cosine"])) != np.sign(
        lean_table["cosine"]
    )
    lean_table["fragile"] = (flips | cos_flip).astype(bool)


def _alternative_centring(layout: AuditLayout) -> AuditLayout | None:
    if layout.centring == "base":
        return replace(layout, centring="set_mean")
    if layout.base is not None:
        return replace(layout, centring="base")
    return None
