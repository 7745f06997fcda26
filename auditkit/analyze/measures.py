"""The method's measures over prompt latents (METHOD.md, "From prompts to directions").

Everything here is a pure function of a latent matrix ``H`` ([prompts, features]) and an
:class:`AuditLayout` that says which rows hold which prompts, so the same code serves the point
estimates and, later, resampled seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from auditkit.plan import prompt_id, slice_prompts
from auditkit.spec.audit import AuditSpec
from auditkit.spec.vocabulary import fill


@dataclass(frozen=True)
class AxisLayout:
    """Rows of an axis's prompts: ``groups[g][t]`` lists the term rows under template t."""

    name: str
    group_names: tuple[str, ...]
    groups: dict[str, list[list[int]]]
    templates: tuple[str, ...] = ()

    @property
    def two_group(self) -> bool:
        """Whether the axis has a direction (exactly two groups)."""
        return len(self.group_names) == 2


@dataclass(frozen=True)
class ConceptLayout:
    """Rows of a concept set: ``terms[c]`` lists the row of concept c under each template."""

    name: str
    term_names: tuple[str, ...]
    terms: dict[str, list[int]]
    templates: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuditLayout:
    """Which latent rows belong to which part of the spec."""

    base: int | None
    axes: tuple[AxisLayout, ...]
    concepts: tuple[ConceptLayout, ...]
    marked: dict[tuple[str, ...], list[int]]
    """Rows of the prompts the analysis slices add to the plan (``auditkit.plan.slice_prompts``)
    by the key each slice gives them, in plan order: e.g. (axis, concept set, group, concept) ->
    the row of that concept marked with that group under each of the set's templates."""
    centring: str


def build_layout(spec: AuditSpec, rows: dict[str, int]) -> AuditLayout:
    """Map the spec's structure onto latent rows (``rows``: prompt id -> row)."""

    def row(text: str) -> int:
        return rows[prompt_id(text)]

    axes = tuple(
        AxisLayout(
            name=axis.name,
            group_names=tuple(axis.groups),
            groups={
                g: [[row(fill(t, term)) for term in terms] for t in axis.templates]
                for g, terms in axis.groups.items()
            },
            templates=tuple(axis.templates),
        )
        for axis in spec.analysis_axes
    )
    concepts = tuple(
        ConceptLayout(
            name=cs.name,
            term_names=tuple(cs.terms),
            terms={c: [row(fill(t, c)) for t in cs.templates] for c in cs.terms},
            templates=tuple(cs.templates),
        )
        for cs in spec.concepts
    )
    marked: dict[tuple[str, ...], list[int]] = {}
    for extra in slice_prompts(spec):
        marked.setdefault(extra.key, []).append(row(extra.prompt.prompt))
    base = row(spec.centring.base_prompt) if spec.centring.reference == "base" else None
    return AuditLayout(base, axes, concepts, marked, spec.centring.reference)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flattened vectors (0 when either is zero)."""
    na = float(np.linalg.norm(a))
    nb = float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a.ravel(), b.ravel()) / (na * nb))


def group_means(H: np.ndarray, axis: AxisLayout) -> dict[str, np.ndarray]:
    """G(group): mean over templates of the mean over the group's terms."""
    return {
        g: np.mean([H[rows].mean(axis=0) for rows in per_template], axis=0)
        for g, per_template in axis.groups.items()
    }


def axis_direction(H: np.ndarray, axis: AxisLayout) -> np.ndarray:
    """g = G(first group) - G(second group), for a two-group axis."""
    means = group_means(H, axis)
    first, second = axis.group_names[:2]
    return np.asarray(means[first] - means[second])


def concept_latents(H: np.ndarray, cset: ConceptLayout) -> dict[str, np.ndarray]:
    """H(c): mean over the set's templates."""
    return {c: H[rows].mean(axis=0) for c, rows in cset.terms.items()}


def reference(H: np.ndarray, layout: AuditLayout, cset: ConceptLayout) -> np.ndarray:
    """The centring reference R for concepts of ``cset``."""
    if layout.centring == "base" and layout.base is not None:
        return np.asarray(H[layout.base])
    rows = [r for rows in cset.terms.values() for r in rows]
    return np.asarray(H[rows].mean(axis=0))


@dataclass(frozen=True)
class Lean:
    """A concept's lean along a two-group axis."""

    cosine: float
    projection: float
    score: float


def lean(
    concept: np.ndarray, ref: np.ndarray, means: dict[str, np.ndarray], order: tuple[str, ...]
) -> Lean:
    """Cosine with the axis of the centred concept, and its projection from the midpoint."""
    pos, neg = means[order[0]], means[order[1]]
    g = pos - neg
    norm = float(np.linalg.norm(g))
    mid = (pos + neg) / 2.0
    projection = float(np.dot((concept - mid).ravel(), g.ravel()) / norm) if norm else 0.0
    score = projection / (norm / 2.0) if norm else 0.0
    return Lean(cosine(concept - ref, g), projection, score)


def default_cosines(
    H: np.ndarray,
    unmarked_rows: list[int],
    marked_rows: dict[str, list[int]],
    ref: np.ndarray,
) -> dict[str, float]:
    """Per group: mean over templates of cos(H(unmarked) - R, H(marked by group) - R)."""
    return {
        g: float(
            np.mean(
                [cosine(H[u] - ref, H[m] - ref) for u, m in zip(unmarked_rows, rows, strict=True)]
            )
        )
        for g, rows in marked_rows.items()
    }


def ranked_groups(key: Mapping[str, str], cosines: Mapping[str, float]) -> list[dict[str, Any]]:
    """One table row per group, the most aligned first: ``key``'s columns, the group, its cosine
    and its rank (1 = the highest cosine; ties keep the order given). The descriptor ranking
    and the defaults rank a concept's groups this way."""
    ordered = sorted(cosines, key=lambda g: -cosines[g])
    return [
        {**key, "group": g, "cosine": cosines[g], "rank": rank}
        for rank, g in enumerate(ordered, start=1)
    ]


def step_consistency(step_axes: list[np.ndarray]) -> float:
    """Mean pairwise cosine between per-step axes (NaN with fewer than two steps)."""
    if len(step_axes) < 2:
        return float("nan")
    sims = [
        cosine(step_axes[i], step_axes[j])
        for i in range(len(step_axes))
        for j in range(i + 1, len(step_axes))
    ]
    return float(np.mean(sims))
