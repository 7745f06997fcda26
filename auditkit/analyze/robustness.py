"""Robustness of leans to template wording and to the centring choice.

* Leave-one-template-out: the lean score is recomputed with each axis template, and each
  concept template, left out in turn (where a list has more than one).
* Alternative centring: the lean cosine is recomputed with the other reference (the set mean
  when the audit centres on a base prompt, the base prompt when it was planned).

A lean whose sign flips under any of these is flagged ``fragile``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from auditkit.analyze.measures import (
    AuditLayout,
    AxisLayout,
    ConceptLayout,
    Lean,
    axis_parts,
    concepts_of,
    group_means,
    leans_of,
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


def _concept_variants(layout: AuditLayout) -> list[AuditLayout]:
    """The layout with one concept template left out, for each template (none when every set
    has one template)."""
    out = []
    n_concept = max((len(rows) for cs in layout.concepts for rows in cs.terms.values()), default=1)
    for t in range(n_concept if n_concept > 1 else 0):
        concepts = tuple(
            _drop_concept_template(cs, t) if len(next(iter(cs.terms.values()))) > 1 else cs
            for cs in layout.concepts
        )
        out.append(replace(layout, concepts=concepts))
    return out


def _variants(
    layout: AuditLayout, axis: AxisLayout, concept_variants: list[AuditLayout]
) -> list[tuple[AxisLayout, AuditLayout]]:
    """(axis, layout) pairs with one axis template or one concept template left out."""
    out = []
    n_axis = len(next(iter(axis.groups.values())))
    if n_axis > 1:
        out += [(_drop_axis_template(axis, t), layout) for t in range(n_axis)]
    return out + [(axis, variant) for variant in concept_variants]


def add_robustness(lean_table: pd.DataFrame, H: np.ndarray, layout: AuditLayout) -> None:
    """Add ``loto_min_score``, ``loto_max_score``, ``cosine_alt_centring``, ``fragile``."""
    if lean_table.empty:
        return
    lows, highs, alt_cos = [], [], []
    axes = {a.name: a for a in layout.axes}
    alt = _alternative_centring(layout)
    concept_variants = _concept_variants(layout)
    variants = {name: _variants(layout, axis, concept_variants) for name, axis in axes.items()}
    latents: dict[int, Any] = {}
    refs: dict[tuple[int, int], np.ndarray] = {}
    computed: dict[tuple[str, int, str], dict[str, Lean]] = {}

    def leans(name: str, v: int, set_name: str) -> dict[str, Lean]:
        """The leans of one concept set along variant ``v`` of one axis (-1: the alternative
        centring), worked out once for every concept of the set (a large audit has thousands
        of rows per variant). The variants share their concept layouts, so ``id`` names them
        while ``variants`` holds them."""
        key = (name, v, set_name)
        if key not in computed:
            axis = axes[name]
            variant_axis, variant_layout = variants[name][v] if v >= 0 else (axis, alt)
            assert variant_layout is not None
            cset = next(c for c in variant_layout.concepts if c.name == set_name)
            if id(cset) not in latents:
                latents[id(cset)] = concepts_of(H, cset)
            where = (id(variant_layout), id(cset))
            if where not in refs:
                refs[where] = reference(H, variant_layout, cset)
            parts = axis_parts(group_means(H, variant_axis), axis.group_names)
            computed[key] = dict(leans_of(latents[id(cset)], refs[where], parts))
        return computed[key]

    for row in lean_table.itertuples():
        name, set_name, concept = str(row.axis), str(row.concept_set), str(row.concept)
        scores = [float(row.score)]  # type: ignore[arg-type]
        scores += [leans(name, v, set_name)[concept].score for v in range(len(variants[name]))]
        lows.append(min(scores))
        highs.append(max(scores))
        alt_cos.append(float("nan") if alt is None else leans(name, -1, set_name)[concept].cosine)
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
