"""The method's measures over prompt latents (METHOD.md, "From prompts to directions").

Everything here is a pure function of a latent matrix ``H`` ([prompts, features]) and an
:class:`AuditLayout` that says which rows hold which prompts, so the same code serves the point
estimates and, later, resampled seeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
        g: np.mean([H[rows].mean(axis=0, dtype=np.float64) for rows in per_template], axis=0)
        for g, per_template in axis.groups.items()
    }


def axis_direction(H: np.ndarray, axis: AxisLayout) -> np.ndarray:
    """g = G(first group) - G(second group), for a two-group axis."""
    means = group_means(H, axis)
    first, second = axis.group_names[:2]
    return np.asarray(means[first] - means[second])


def concept_latents(H: np.ndarray, cset: ConceptLayout) -> dict[str, np.ndarray]:
    """H(c): mean over the set's templates."""
    return {c: H[rows].mean(axis=0, dtype=np.float64) for c, rows in cset.terms.items()}


def reference(H: np.ndarray, layout: AuditLayout, cset: ConceptLayout) -> np.ndarray:
    """The centring reference R for concepts of ``cset``."""
    if layout.centring == "base" and layout.base is not None:
        return np.asarray(H[layout.base], dtype=np.float64)
    rows = [r for rows in cset.terms.values() for r in rows]
    # row after row into one float64 sum: the order numpy's mean over axis 0 adds them in (the
    # same bits), without copying the rows out first (a thousand-concept set's are 650 MB)
    total = np.zeros(H.shape[1:])
    for r in rows:
        total += H[r]
    return np.asarray(total / len(rows))


@dataclass(frozen=True)
class Lean:
    """A concept's lean along a two-group axis."""

    cosine: float
    projection: float
    score: float


@dataclass(frozen=True)
class AxisParts:
    """What every lean along one axis shares: g = pos − neg, its norm and the midpoint."""

    g: np.ndarray
    norm: float
    mid: np.ndarray


def axis_parts(means: dict[str, np.ndarray], order: tuple[str, ...]) -> AxisParts:
    """The :class:`AxisParts` of the axis from ``order[0]``'s group to ``order[1]``'s."""
    pos, neg = means[order[0]], means[order[1]]
    g = pos - neg
    return AxisParts(g, float(np.linalg.norm(g)), (pos + neg) / 2.0)


def lean(
    concept: np.ndarray,
    ref: np.ndarray,
    means: dict[str, np.ndarray] | AxisParts,
    order: tuple[str, ...] = (),
) -> Lean:
    """Cosine with the axis of the centred concept, and its projection from the midpoint
    (``means``: the groups' means and ``order``, or the axis's :class:`AxisParts`, the same
    numbers worked out once for many concepts)."""
    parts = means if isinstance(means, AxisParts) else axis_parts(means, order)
    g, norm = parts.g, parts.norm
    projection = float(np.dot((concept - parts.mid).ravel(), g.ravel()) / norm) if norm else 0.0
    score = projection / (norm / 2.0) if norm else 0.0
    return Lean(cosine(concept - ref, g), projection, score)


ROW_LOOP_LIMIT = 64
"""Concept sets up to this size have their measures worked out concept by concept (the
numbers every earlier audit has); a larger set has them as matrix products over all its
concepts at once, equal to within rounding (:func:`set_leans`)."""


@dataclass
class ConceptMatrix:
    """A large concept set's latents, never copied out of H: each concept is the mean of its
    rows of H (one per template), so its products with any vector are means of the rows'
    products, and the norms of the concepts centred on a reference are worked out a block of
    concepts at a time (once per reference). H may be float32 (a streamed audit's step
    means); the arithmetic is float64."""

    names: list[str]
    H: np.ndarray
    averaging: np.ndarray
    """[concepts, prompts]: each concept's weight on each row of H (1 / templates)."""
    _norms: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)
    _along: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, H: np.ndarray, cset: ConceptLayout) -> ConceptMatrix:
        averaging = np.zeros((len(cset.terms), len(H)))
        for i, rows in enumerate(cset.terms.values()):
            for r in rows:
                averaging[i, r] += 1.0 / len(rows)
        return cls(list(cset.terms), H, averaging)

    def block(self, start: int, stop: int) -> np.ndarray:
        """The latents of concepts ``start .. stop`` [concepts, features]."""
        weights = self.averaging[start:stop]
        own = weights == 1.0
        if own.any(axis=1).all() and np.count_nonzero(weights) == len(weights):
            # one row each (one template): the rows themselves, the values the weighted sum
            # gives, without a pass over the block's zero weights
            rows = np.argmax(own, axis=1)
            return self.H[rows].reshape(len(rows), -1).astype(np.float64, copy=False)
        used = np.flatnonzero(weights.any(axis=0))
        return np.asarray(weights[:, used] @ self.H[used].reshape(len(used), -1))

    def centred_norms(self, ref: np.ndarray) -> np.ndarray:
        """|c − ref| for every concept c (kept while ``ref`` is the same array)."""
        for seen, norms in self._norms:
            if seen is ref:
                return norms
        flat = ref.reshape(1, -1)
        norms = np.empty(len(self.names))
        for start in range(0, len(self.names), 64):
            norms[start : start + 64] = np.linalg.norm(self.block(start, start + 64) - flat, axis=1)
        self._norms.append((ref, norms))
        return norms

    def project(self, directions: list[np.ndarray]) -> None:
        """Work out every row of H's product with each of ``directions`` in one pass over H
        (in float64 a block of rows at a time: H may be float32), for
        :meth:`centred_products` to use."""
        H = self.H.reshape(len(self.H), -1)
        D = np.stack([d.reshape(-1) for d in directions], axis=1)
        along = np.empty((len(H), D.shape[1]))
        for start in range(0, len(H), 128):
            along[start : start + 128] = H[start : start + 128].astype(np.float64, copy=False) @ D
        for j, d in enumerate(directions):
            self._along.append((d, along[:, j]))

    def centred_products(self, ref: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """(c − ref)·direction for every concept c."""
        if not any(seen is direction for seen, _ in self._along):
            self.project([direction])
        along = next(a for seen, a in self._along if seen is direction)
        return np.asarray(self.averaging @ along - float(ref.reshape(-1) @ direction.reshape(-1)))

    def gram(self, ref: np.ndarray | None = None, basis: np.ndarray | None = None) -> np.ndarray:
        """(c − ref)·(c' − ref) for every pair of concepts (ref None: the concepts themselves),
        with the rows of ``basis`` (orthonormal) projected out first when given, from the
        Gram matrix of H."""
        H = self.H.reshape(len(self.H), -1)
        A = self.averaging
        gram = A @ (H @ H.T) @ A.T
        if basis is not None and basis.size:
            XB = A @ (H @ basis.T)
            gram -= XB @ XB.T
        if ref is not None:
            along = A @ (H @ ref.reshape(-1))
            gram += float(ref.reshape(-1) @ ref.reshape(-1)) - along[:, None] - along[None, :]
        return np.asarray(gram)


def set_leans(
    concepts: ConceptMatrix, ref: np.ndarray, parts: AxisParts
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cosine, projection, score) of every concept of a large set along one axis: :func:`lean`
    for many concepts at once."""
    n = len(concepts.names)
    if not parts.norm:
        projection = np.zeros(n)
    else:
        projection = concepts.centred_products(parts.mid, parts.g) / parts.norm
    score = projection / (parts.norm / 2.0) if parts.norm else np.zeros(n)
    lengths = concepts.centred_norms(ref) * parts.norm
    cosine = np.divide(
        concepts.centred_products(ref, parts.g), lengths, out=np.zeros(n), where=lengths > 0
    )
    return cosine, projection, score


def concepts_of(H: np.ndarray, cset: ConceptLayout) -> dict[str, np.ndarray] | ConceptMatrix:
    """A set's concept latents: by name, or for a large set (:data:`ROW_LOOP_LIMIT`) one
    :class:`ConceptMatrix`."""
    if len(cset.terms) > ROW_LOOP_LIMIT:
        return ConceptMatrix.of(H, cset)
    return concept_latents(H, cset)


def leans_of(
    latents: dict[str, np.ndarray] | ConceptMatrix, ref: np.ndarray, parts: AxisParts
) -> Iterable[tuple[str, Lean]]:
    """(concept, its lean) along one axis for :func:`concepts_of`'s latents."""
    if isinstance(latents, dict):
        for concept, vec in latents.items():
            yield concept, lean(vec, ref, parts)
        return
    cosine, projection, score = set_leans(latents, ref, parts)
    for i, concept in enumerate(latents.names):
        yield concept, Lean(float(cosine[i]), float(projection[i]), float(score[i]))


def marked_pair(
    layout: AuditLayout, axis: str, set_name: str, groups: tuple[str, str], concept: str
) -> tuple[list[int], list[int]] | None:
    """The rows of ``concept`` marked with each of two groups of ``axis`` (one per template of
    the set, as the defaults analysis plans them), or None where the axis has no marked
    prompts."""
    first = layout.marked.get((axis, set_name, groups[0], concept))
    second = layout.marked.get((axis, set_name, groups[1], concept))
    if first is None or second is None:
        return None
    return first, second


def marked_position(
    H: np.ndarray, unmarked_rows: list[int], first_rows: list[int], second_rows: list[int]
) -> float:
    """Where the unmarked prompt sits between its two marked variants, averaged over templates:
    ``2 (H(u) − m)·d / ‖d‖²`` with d = H(first) − H(second) and m their midpoint; −1 at the
    second group's variant, +1 at the first's, 0 midway (NaN where the variants coincide)."""
    values = []
    for u, a, b in zip(unmarked_rows, first_rows, second_rows, strict=True):
        first, second = H[a].astype(np.float64), H[b].astype(np.float64)
        d = first - second
        dd = float(d @ d)
        centred = H[u].astype(np.float64) - 0.5 * (first + second)
        values.append(2.0 * float(centred @ d) / dd if dd > 0 else float("nan"))
    return float(np.mean(values))


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
