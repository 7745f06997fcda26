"""Seed products for an audit too large to hold every unit's h in memory.

The bootstrap and the permuted-labels null need inner products of per-seed latents,
``h(p, n)·h(q, m)``, for the prompt pairs the measures combine (:mod:`auditkit.analyze.gram`).
At real size the per-seed latents do not fit (SD 1.5, 1,160 prompts x 16 seeds x 81,920 values
is 6 GB in float32). This module says which products are kept and combines them:

- the *direction* rows (the axes' group prompts, the slices' marked prompts, the base prompt,
  the reference parts, and every concept of a small set) are multiplied with every row;
- each concept's prompts with themselves;
- pairs of two different concepts' prompts of a large set stay unknown (NaN): only the
  similarity intervals need them.

:mod:`auditkit.analyze.product_reading` reads the store into them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from auditkit.analyze.measures import AuditLayout

LATENT_MEMORY_BUDGET = 1 << 30
"""Per-seed latents larger than this (float32 bytes) are streamed into :class:`SeedProducts`
instead of held in memory."""

SMALL_SET_VECTORS = 4096
"""A concept set with at most this many per-seed latents (256 prompts x 16 seeds) keeps every
product of its concepts with each other (the similarity intervals need them)."""


@dataclass(frozen=True)
class RefPart:
    """One row standing for part of a concept set's centring reference: the weighted sum
    ``sum(factor x h(row))`` over its concepts' prompts under template ``template``."""

    concept_set: str
    template: int
    parts: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class SeedProducts:
    """The per-seed products the measures use, for one aggregate of h (the mean over steps, or
    one stored step).

    Rows ``0 .. n_prompts-1`` are the plan's prompts, the rows after them the
    :class:`RefPart` s (``refs``). ``directions`` lists the direction rows; ``cross[i, j, n, m]``
    is ``h(i, n)·h(directions[j], m)`` for every row i. ``groups[g]`` lists one concept's rows
    (padded with -1), ``own[g, a, b, n, m]`` their products with each other.
    """

    n_prompts: int
    refs: tuple[RefPart, ...]
    directions: np.ndarray  # [Pd] int
    cross: np.ndarray  # [rows, Pd, N, N] float32
    groups: np.ndarray  # [G, width] int, -1 = padding
    own: np.ndarray  # [G, width, width, N, N] float32

    @property
    def n_rows(self) -> int:
        return self.n_prompts + len(self.refs)

    @property
    def ref_rows(self) -> dict[tuple[str, int], int]:
        """(concept set, template) -> the row of that reference part."""
        return {(p.concept_set, p.template): self.n_prompts + j for j, p in enumerate(self.refs)}


def ref_parts(layout: AuditLayout) -> tuple[RefPart, ...]:
    """Each concept set's centring reference split by template (one part when the set has
    no templates): the reference is the sum of its parts weighted by template weight. None
    when the reference is the base prompt (a direction row already)."""
    if layout.centring == "base" and layout.base is not None:
        return ()
    out = []
    for cset in layout.concepts:
        per_concept = 1.0 / max(len(cset.terms), 1)
        by_template: dict[int, list[tuple[int, float]]] = {}
        for rows in cset.terms.values():
            for t, r in enumerate(rows):
                factor = per_concept if cset.templates else per_concept / len(rows)
                by_template.setdefault(t if cset.templates else 0, []).append((r, factor))
        out += [RefPart(cset.name, t, tuple(parts)) for t, parts in sorted(by_template.items())]
    return tuple(out)


def row_roles(
    layout: AuditLayout, n_prompts: int, n_seeds: int = 1
) -> tuple[np.ndarray, list[list[int]]]:
    """(direction prompt rows, concept groups): the rows of axes, marked prompts and the base
    are directions; each concept's prompts form a group, unless one of them is a direction or
    belongs to another concept too, in which case the whole concept's prompts are directions.
    A concept set small enough (:data:`SMALL_SET_VECTORS` per-seed latents) is made of
    directions too, so that its concepts' products with each other are kept. Rows no part of
    the layout names are groups of their own."""
    direction = np.zeros(n_prompts, dtype=bool)
    for axis in layout.axes:
        for per_template in axis.groups.values():
            for rows in per_template:
                direction[rows] = True
    for rows in layout.marked.values():
        direction[rows] = True
    if layout.base is not None:
        direction[layout.base] = True
    owner = np.full(n_prompts, -1)
    concepts = [rows for cset in layout.concepts for rows in cset.terms.values()]
    shared = np.zeros(n_prompts, dtype=bool)
    for c, rows in enumerate(concepts):
        for r in rows:
            shared[r] |= owner[r] not in (-1, c)
            owner[r] = c
    for rows in concepts:
        if direction[rows].any() or shared[rows].any():
            direction[rows] = True
    for cset in layout.concepts:
        rows_of_set = list(dict.fromkeys(r for rows in cset.terms.values() for r in rows))
        if len(rows_of_set) * n_seeds <= SMALL_SET_VECTORS:
            direction[rows_of_set] = True
    groups: list[list[int]] = []
    for rows in concepts:
        distinct = list(dict.fromkeys(rows))
        if not direction[distinct].any() and distinct not in groups:
            groups.append(distinct)
    grouped = {r for g in groups for r in g}
    groups += [[r] for r in range(n_prompts) if not direction[r] and r not in grouped]
    return np.flatnonzero(direction), groups


def seed_quadratic(
    tensor: np.ndarray, weights: np.ndarray, dtype: type[np.floating] = np.float64
) -> np.ndarray:
    """``sum_nm w[b, n] w[b, m] T[..., n, m]`` for seed weights [B, N] and products whose last
    two axes are the two seeds: [B, ...], as one matrix product with the outer products of the
    weights, computed in the products' precision and returned as ``dtype``."""
    N = weights.shape[1]
    outer = np.einsum("bn,bm->nmb", weights, weights).reshape(N * N, -1)
    flat = tensor.reshape(-1, N * N)
    # resamples first in memory: a chunk of them is then one contiguous block (a [..., B]
    # product moved to the front made every chunk's copy a strided gather, 5 ms where 0.1 do)
    out = (outer.T.astype(flat.dtype) @ flat.T).astype(dtype, copy=False)  # [B, ...]
    return out.reshape(-1, *tensor.shape[:-2])


CROSS_BUDGET = 128 << 20
"""Bytes of :func:`seed_quadratic` of the cross products held for a run of resamples
(:func:`cross_quadratics`)."""


def cross_quadratics(
    products: SeedProducts, weights: np.ndarray, chunk: int
) -> Iterator[tuple[int, np.ndarray]]:
    """(first resample, [b, rows, Pd] float32) for the seed weights [B, N], for as many
    resamples at a time as :data:`CROSS_BUDGET` holds (a multiple of ``chunk``): every pass
    over the cross products, the bulk of a streamed audit's products, then serves many
    resamples instead of one chunk of them."""
    per_resample = max(1, products.cross[..., 0, 0].size * 4)
    span = chunk * max(1, CROSS_BUDGET // (per_resample * chunk))
    for start in range(0, weights.shape[0], span):
        yield start, seed_quadratic(products.cross, weights[start : start + span], np.float32)


DIRECTION_RUNS = 16
"""Runs of consecutive direction vectors up to which Q's direction rows and columns are
written run by run (as slices) rather than through index arrays."""


@dataclass
class ProductPlan:
    """How :func:`streamed_inner_products` combines one audit's products for its basis: the
    vectors made of direction rows alone (``dirs``), and per concept group the vectors made of
    its rows (``members``, with each group's rows), worked out once per bootstrap pass from
    the basis's coefficients; ``buffer`` is the Q array it fills, reused chunk after chunk
    (the entries it never fills stay NaN)."""

    dirs: np.ndarray
    members: list[tuple[int, np.ndarray, np.ndarray]]
    support: tuple[np.ndarray, ...] = ()
    """The coefficients' nonzero entries: (vector, row) pairs sorted by vector, the vectors
    that have any, and where each one's pairs start."""
    buffer: np.ndarray | None = None
    scratch: dict[str, np.ndarray] = field(default_factory=dict)
    """The intermediate arrays of :func:`streamed_inner_products`, by name, reused call after
    call: a fresh array of megabytes per call was mostly page faults (2-5 ms per call for a
    copy that takes 0.1 ms into memory already mapped)."""

    def scratch_array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float64 array of ``shape`` for ``name``, overwritten by the next call."""
        size = int(np.prod(shape))
        held = self.scratch.get(name)
        if held is None or held.size < size:
            held = self.scratch[name] = np.empty(size)
        return held[:size].reshape(shape)

    def __post_init__(self) -> None:
        # flat index arrays for the groups' coefficient blocks and their Q entries
        coeff: list[tuple[int, int, int, int, int]] = []  # (group, slot, row slot, vector, row)
        entries: list[tuple[int, int, int, int, int]] = []  # (vector, vector, group, slot, slot)
        for i, (_g, members, rows) in enumerate(self.members):
            for j, v in enumerate(members):
                coeff += [(i, j, k, int(v), int(r)) for k, r in enumerate(rows)]
                entries += [(int(v), int(w), i, j, j2) for j2, w in enumerate(members)]
        self.coeff_index = tuple(np.asarray(coeff, dtype=np.int64).reshape(-1, 5).T)
        self.q_index = tuple(np.asarray(entries, dtype=np.int64).reshape(-1, 5).T)
        self.group_ids = [g for g, _vs, _rows in self.members]
        self.per_group = max((len(vs) for _g, vs, _rows in self.members), default=0)
        # each vector's sum over its nonzero coefficients, term after term in order: the
        # first terms gathered at once, then the k-th terms of the vectors that have them
        # (a few; np.add.reduceat over thousands of one-term segments was 2 ms a call)
        empty = np.empty(0, dtype=np.int64)
        vs, _rs, used, starts = self.support or (empty, empty, empty, empty)
        counts = np.diff(np.append(starts, vs.size))  # each vector's number of terms
        self.later_terms: list[tuple[np.ndarray, np.ndarray]] = []
        for k in range(1, int(counts.max(initial=1))):
            has = np.flatnonzero(counts > k)
            self.later_terms.append((has, starts[has] + k))
        contiguous = used.size and used[-1] - used[0] + 1 == used.size
        self.used_rows: slice | np.ndarray = (
            slice(int(used[0]), int(used[-1]) + 1) if contiguous else used
        )
        """The vectors with coefficients: a slice when they are consecutive (a slice and one
        index array make a strided copy, two index arrays a gather)."""
        breaks = np.flatnonzero(np.diff(self.dirs) != 1) + 1
        bounds = [0, *breaks.tolist(), int(self.dirs.size)]
        self.dir_runs = [
            (slice(a, b), slice(int(self.dirs[a]), int(self.dirs[a]) + b - a))
            for a, b in itertools.pairwise(bounds)
            if b > a
        ]
        """The direction vectors as runs of consecutive vectors: (their place among the
        directions, their place in Q), so that Q's direction rows and columns are written as
        slices (an audit's directions are a few runs: the base, then its groups)."""

    @classmethod
    def of(cls, products: SeedProducts, pattern: np.ndarray) -> ProductPlan:
        """The plan for basis coefficients whose nonzero entries are ``pattern`` [V, rows]."""
        nonzero = np.asarray(pattern != 0)
        is_direction = np.zeros(products.n_rows, dtype=bool)
        is_direction[products.directions] = True
        pure = ~np.any(nonzero & ~is_direction, axis=1)
        where = np.full(products.n_rows, -1)
        for g, rows in enumerate(products.groups):
            where[rows[rows >= 0]] = g
        by_group: dict[int, list[int]] = {}
        for v in np.flatnonzero(~pure):
            owners = set(where[np.flatnonzero(nonzero[v])].tolist())
            if len(owners) == 1 and -1 not in owners:
                by_group.setdefault(owners.pop(), []).append(int(v))
        members = []
        for g in sorted(by_group):
            rows = products.groups[g]
            members.append((g, np.asarray(by_group[g]), rows[rows >= 0]))
        vs, rs = np.nonzero(nonzero)  # row-major: sorted by vector
        used, starts = np.unique(vs, return_index=True)
        return cls(np.flatnonzero(pure), members, support=(vs, rs, used, starts))


def streamed_inner_products(
    products: SeedProducts,
    coeffs: np.ndarray,
    weights: np.ndarray,
    plan: ProductPlan | None = None,
    cross: np.ndarray | None = None,
) -> np.ndarray:
    """Q [B, V, V] for coefficient matrices [B, V, rows] and seed weights [B, N] from the
    products kept: exact for every pair of vectors where one is a combination of direction
    rows or both lie in one concept's group; NaN for the others. With ``plan`` (made for these
    coefficients' pattern) the result is its buffer, overwritten by the next call. ``cross``:
    these weights' :func:`seed_quadratic` of ``products.cross``, when already computed
    (:func:`cross_quadratics`)."""
    B, V, _ = coeffs.shape
    if plan is None:
        plan = ProductPlan.of(products, np.any(coeffs != 0, axis=0))
    if plan.buffer is None or plan.buffer.shape[0] < B:
        plan.buffer = np.full((B, V, V), np.nan)
    Q = plan.buffer[:B]
    D, dirs = products.directions, plan.dirs
    if dirs.size:
        if cross is None:
            Mxd = seed_quadratic(products.cross, weights)  # [B, rows, Pd]
        else:
            Mxd = plan.scratch_array("Mxd", cross.shape)
            np.copyto(Mxd, cross)
        Y = np.matmul(  # [B, rows, Vd]
            Mxd, coeffs[:, dirs][:, :, D].transpose(0, 2, 1),
            out=plan.scratch_array("Y", (B, Mxd.shape[1], dirs.size)),
        )  # fmt: skip
        # coeffs @ Y over the coefficients' few nonzero entries per vector
        vs, rs, used, starts = plan.support
        terms = np.multiply(  # [B, nonzero, Vd]
            coeffs[:, vs, rs][:, :, None], Y[:, rs, :],
            out=plan.scratch_array("terms", (B, vs.size, dirs.size)),
        )  # fmt: skip
        block = np.take(  # [B, used, Vd]: each vector's terms summed in order
            terms, starts, axis=1, out=plan.scratch_array("block", (B, used.size, dirs.size))
        )
        for has, kth in plan.later_terms:
            block[:, has] += terms[:, kth]
        if isinstance(plan.used_rows, slice) and len(plan.dir_runs) <= DIRECTION_RUNS:
            # columns first, then rows: where both are directions the rows' values hold
            for among, at in plan.dir_runs:
                Q[:, plan.used_rows, at] = block[:, :, among]
            for among, at in plan.dir_runs:
                Q[:, at, plan.used_rows] = block[:, :, among].transpose(0, 2, 1)
        else:
            Q[:, used[:, None], dirs[None, :]] = block
            Q[:, dirs[:, None], used[None, :]] = block.transpose(0, 2, 1)
    if plan.members:
        groups = plan.group_ids
        width = products.groups.shape[1]
        A = plan.scratch_array("A", (B, len(groups), plan.per_group, width))
        A.fill(0.0)
        gi, slot, rslot, vs, rs = plan.coeff_index
        A[:, gi, slot, rslot] = coeffs[:, vs, rs]
        M = seed_quadratic(products.own[groups], weights)  # [B, G, width, width]
        Qg = A @ M @ A.transpose(0, 1, 3, 2)
        qa, qb, qi, q1, q2 = plan.q_index
        Q[:, qa, qb] = Qg[:, qi, q1, q2]
    return Q
