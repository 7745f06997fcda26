"""Seed products for an audit too large to hold every unit's h in memory.

The bootstrap and the permuted-labels null need inner products of per-seed latents,
``h(p, n)·h(q, m)``, for the prompt pairs the measures combine (:mod:`auditkit.analyze.gram`).
At real size the per-seed latents do not fit (SD 1.5, 1,160 prompts x 16 seeds x 81,920 values
is 6 GB in float32), and the full product tensor would cost prompts² x seeds² x values. This
module reads the store twice, streaming, and keeps only what the measures use:

- **pass 1**: each prompt's seed mean H(p) (what the point estimates use), each stored step's
  seed mean, and per seed each concept set's *reference parts* (the mean of its concepts'
  prompts under each template), so that a centring reference is one row, not a thousand;
- **pass 2**: the products of every row with every *direction* row (the axes' group prompts,
  the slices' marked prompts, the base prompt, the reference parts), and of each concept's
  prompts with themselves. A concept vector is then never multiplied by another concept's,
  except through a direction; pairs of two different concepts' prompts stay unknown (NaN), and
  only the similarity intervals need them.

Each latent is split into its prompt's seed mean and the seed's deviation from it, h(p, n) =
C(p) + e(p, n). C·C is computed in float64; C·e, e·C and e·e, the bulk of the work (every
row's seeds against every direction's), as int8 products with exact int32 sums (about 9x the
float32 rate on an AVX-512 VNNI CPU), each vector rounded to 8 bits against its largest value.
On a 4-seed synthetic SD 1.5-shaped store and on the default audit the interval bounds moved
by at most 0.6% of the intervals' width for the lean table and 1.8% for the lean by step (the
bootstrap's own Monte Carlo error on a bound is about 2%; ``tests/test_streamed.py``). Each C
is shifted by the mean over prompts first: every measure is a function of differences of
latents, so a shift common to all changes nothing but the size of the numbers. The point
estimates still come from H in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from auditkit.analyze.measures import AuditLayout

if TYPE_CHECKING:
    import torch

    from auditkit.extract.store import ActivationStore

LATENT_MEMORY_BUDGET = 1 << 30
"""Per-seed latents larger than this (float32 bytes) are streamed into :class:`SeedProducts`
instead of held in memory."""

INT_SPAN = 131_072
"""Values per int8 product: 127² x 131,072 stays inside int32."""

SMALL_SET_VECTORS = 4096
"""A concept set with at most this many per-seed latents (256 prompts x 16 seeds) keeps every
product of its concepts with each other (the similarity intervals need them)."""

ROW_BLOCK = 12
"""Prompts read at once in pass 2 (each with every seed)."""


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


def seed_quadratic(tensor: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_nm w[b, n] w[b, m] T[..., n, m]`` for seed weights [B, N] and products whose last
    two axes are the two seeds: [B, ...], as one matrix product with the outer products of the
    weights."""
    N = weights.shape[1]
    outer = np.einsum("bn,bm->nmb", weights, weights).reshape(N * N, -1)
    flat = tensor.reshape(-1, N * N)
    out = (flat @ outer.astype(flat.dtype)).astype(np.float64)  # [..., B]
    return np.moveaxis(out.reshape(*tensor.shape[:-2], -1), -1, 0)


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
) -> np.ndarray:
    """Q [B, V, V] for coefficient matrices [B, V, rows] and seed weights [B, N] from the
    products kept: exact for every pair of vectors where one is a combination of direction
    rows or both lie in one concept's group; NaN for the others. With ``plan`` (made for these
    coefficients' pattern) the result is its buffer, overwritten by the next call."""
    B, V, _ = coeffs.shape
    if plan is None:
        plan = ProductPlan.of(products, np.any(coeffs != 0, axis=0))
    if plan.buffer is None or plan.buffer.shape[0] < B:
        plan.buffer = np.full((B, V, V), np.nan)
    Q = plan.buffer[:B]
    D, dirs = products.directions, plan.dirs
    if dirs.size:
        Mxd = seed_quadratic(products.cross, weights)  # [B, rows, Pd]
        Y = Mxd @ coeffs[:, dirs][:, :, D].transpose(0, 2, 1)  # [B, rows, Vd]
        # coeffs @ Y over the coefficients' few nonzero entries per vector
        vs, rs, used, starts = plan.support
        terms = coeffs[:, vs, rs][:, :, None] * Y[:, rs, :]  # [B, nonzero, Vd]
        block = np.add.reduceat(terms, starts, axis=1)  # [B, used, Vd]
        Q[:, used[:, None], dirs[None, :]] = block
        Q[:, dirs[:, None], used[None, :]] = block.transpose(0, 2, 1)
    if plan.members:
        groups = [g for g, _vs, _rows in plan.members]
        width = products.groups.shape[1]
        per = max(len(vs) for _g, vs, _rows in plan.members)
        A = np.zeros((B, len(groups), per, width))
        gi, slot, rslot, vs, rs = plan.coeff_index
        A[:, gi, slot, rslot] = coeffs[:, vs, rs]
        M = seed_quadratic(products.own[groups], weights)  # [B, G, width, width]
        Qg = A @ M @ A.transpose(0, 1, 3, 2)
        qa, qb, qi, q1, q2 = plan.q_index
        Q[:, qa, qb] = Qg[:, qi, q1, q2]
    return Q


def build_products(
    store: ActivationStore,
    unit_pos: dict[str, tuple[int, int]],
    layout: AuditLayout,
    n_prompts: int,
    n_seeds: int,
) -> tuple[np.ndarray, np.ndarray, list[SeedProducts]]:
    """Both passes over ``store`` (``unit_pos``: unit id -> (prompt row, seed row)): the seed
    means H [P, D] (float64) and step means [P, S, D] (float32), and the products of the mean
    over steps followed by those of each stored step."""
    refs = ref_parts(layout)
    directions, groups = row_roles(layout, n_prompts, n_seeds)
    units_of: dict[int, list[str]] = {}
    for uid, (p, _n) in unit_pos.items():
        units_of.setdefault(p, []).append(uid)
    # pass 1: seed means, step means, reference parts per seed
    contributions: dict[int, list[tuple[int, float]]] = {}
    for j, part in enumerate(refs):
        for r, factor in part.parts:
            contributions.setdefault(r, []).append((j, factor))
    H: np.ndarray | None = None
    steps: np.ndarray | None = None
    ref_sums: np.ndarray | None = None
    for uid, tensor, mean in store.iter_stored(unit_pos):
        p, n = unit_pos[uid]
        at_steps = tensor.reshape(tensor.shape[0], -1)
        avg = mean.reshape(-1) if mean is not None else at_steps.mean(dim=0)
        if H is None:
            width = at_steps.shape[1]
            H = np.zeros((n_prompts, width))
            steps = np.zeros((n_prompts, at_steps.shape[0], width), dtype=np.float32)
            ref_sums = np.zeros((1 + at_steps.shape[0], len(refs), n_seeds, width))
        assert steps is not None and ref_sums is not None
        H[p] += avg.numpy()
        steps[p] += at_steps.numpy()
        for j, factor in contributions.get(p, []):
            ref_sums[0, j, n] += factor * avg.numpy()
            ref_sums[1:, j, n] += factor * at_steps.numpy()
    if H is None or steps is None or ref_sums is None:
        raise ValueError("the plan has no work units")
    H /= n_seeds
    steps /= n_seeds
    # pass 2: the mean over steps, then every stored step at once
    products = _products_pass(
        store, unit_pos, units_of, [0], [H], ref_sums, refs, directions, groups, n_seeds
    )
    stored = list(range(steps.shape[1]))
    products += _products_pass(
        store, unit_pos, units_of, [1 + s for s in stored], [steps[:, s] for s in stored],
        ref_sums, refs, directions, groups, n_seeds,
    )  # fmt: skip
    return H, steps, products


def _deviations(
    store: ActivationStore,
    unit_pos: dict[str, tuple[int, int]],
    units_of: dict[int, list[str]],
    rows: Sequence[int],
    chosen: list[int],
    centres: list[np.ndarray],
    n_seeds: int,
):
    """[len(chosen), len(rows), N, D] float32 torch tensor: each unit's chosen aggregates (0 =
    the mean over steps, s = stored step s - 1) minus its prompt's seed mean there
    (``centres[k]`` [P, D] for the k-th chosen)."""
    import torch

    place = {r: i for i, r in enumerate(rows)}
    out = torch.empty((len(chosen), len(rows), n_seeds, centres[0].shape[1]))
    wanted = [uid for r in rows for uid in units_of.get(r, [])]
    for uid, tensor, mean in store.iter_stored(wanted, stored_mean_only=chosen == [0]):
        p, n = unit_pos[uid]
        at_steps = tensor.reshape(tensor.shape[0], -1) if tensor is not None else None
        for i, k in enumerate(chosen):
            if k == 0 and mean is not None:
                value = mean.reshape(-1)
            else:
                assert at_steps is not None
                value = at_steps.mean(dim=0) if k == 0 else at_steps[k - 1]
            out[i, place[p], n] = value - torch.from_numpy(centres[i][p])
    return out


def _quantised(E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 values and per-vector scales of E [..., D] (float32, overwritten): E ≈ scale x
    values (the rounding error is under 0.4% of each vector's largest value)."""
    import torch

    peak = torch.linalg.vector_norm(E, ord=float("inf"), dim=-1)
    scale = torch.where(peak > 0, peak / 127.0, torch.ones_like(peak))
    return E.mul_((1.0 / scale)[..., None]).round_().to(torch.int8), scale


def _int_products(
    qa: torch.Tensor, sa: torch.Tensor, qb: torch.Tensor, sb: torch.Tensor
) -> torch.Tensor:
    """(scale x int8 rows) · (scale x int8 rows) [M, Nb] in float64: int8 products with exact
    int32 sums over spans of :data:`INT_SPAN` values."""
    import torch

    total = torch.zeros((qa.shape[0], qb.shape[0]), dtype=torch.float64)
    for start in range(0, qa.shape[1], INT_SPAN):
        part = slice(start, start + INT_SPAN)
        total += torch._int_mm(qa[:, part].contiguous(), qb[:, part].T).double()
    return total * sa.double()[:, None] * sb.double()[None, :]


def _seeds_last(products: np.ndarray, rows: int, n_seeds: int, cols: int) -> np.ndarray:
    """[K, rows x N, cols x N] -> [K, rows, cols, N, N]."""
    K = products.shape[0]
    return products.reshape(K, rows, n_seeds, cols, n_seeds).transpose(0, 1, 3, 2, 4)


def _products_pass(
    store: ActivationStore,
    unit_pos: dict[str, tuple[int, int]],
    units_of: dict[int, list[str]],
    chosen: list[int],
    centres: list[np.ndarray],
    ref_sums: np.ndarray,
    refs: tuple[RefPart, ...],
    directions: np.ndarray,
    groups: list[list[int]],
    n_seeds: int,
) -> list[SeedProducts]:
    """The products of the chosen aggregates, each split as h(p, n) = C(p) + e(p, n) (C the
    seed mean): C·C in float64, C·e and e·C in float32, e·e in int8 (:func:`_int_products`);
    a concept's own products in float32. Every C is shifted by the mean over prompts first
    (the measures only see differences)."""
    import torch

    K = len(chosen)
    n_prompts, width = centres[0].shape
    n_rows = n_prompts + len(refs)
    ref_means = ref_sums[chosen].mean(axis=2)  # [K, R, D]: each reference part's seed mean
    shift = [c.mean(axis=0, dtype=np.float64) for c in centres]
    weights_total = np.asarray([sum(f for _r, f in part.parts) for part in refs])

    def centre(k: int, rows: Sequence[int]) -> torch.Tensor:
        """Shifted seed means of ``rows`` (float32)."""
        out = np.empty((len(rows), width), dtype=np.float32)
        for i, r in enumerate(rows):
            if r < n_prompts:
                out[i] = centres[k][r] - shift[k]
            else:
                out[i] = ref_means[k, r - n_prompts] - weights_total[r - n_prompts] * shift[k]
        return torch.from_numpy(out)

    D_rows = [int(r) for r in directions] + list(range(n_prompts, n_rows))
    Pd = len(D_rows)
    Cd = torch.stack([centre(k, D_rows) for k in range(K)])  # [K, Pd, D]
    Cd64 = Cd.double()
    # every row's centre in int8 too, for C·e and e·C
    Cq = torch.zeros((K, n_rows, width), dtype=torch.int8)
    Cs = torch.zeros((K, n_rows))
    for start in range(0, n_rows, 256):
        rows = list(range(start, min(start + 256, n_rows)))
        Cq[:, rows], Cs[:, rows] = _quantised(torch.stack([centre(k, rows) for k in range(K)]))
    Cdq, Cds = Cq[:, D_rows], Cs[:, D_rows]

    def with_centres(q: torch.Tensor, scale: torch.Tensor, k: int, rows: bool) -> torch.Tensor:
        """e·C of int8 deviations (q, scale) against the direction rows' centres (``rows``
        False) or C·e of every row's centre against them (``rows`` True), float64."""
        if rows:
            return _int_products(Cq[k], Cs[k], q, scale)
        return _int_products(q, scale, Cdq[k], Cds[k])

    Ed = torch.zeros((K, Pd, n_seeds, width), dtype=torch.int8)
    Ed_scale = torch.zeros((K, Pd, n_seeds))
    Ce = torch.zeros((K, n_rows, Pd, n_seeds), dtype=torch.float64)  # C(i)·e(j, m)
    eC_d = torch.zeros((K, Pd, n_seeds, Pd), dtype=torch.float64)  # e(i, n)·C(j), directions

    def take_directions(at: int, E: torch.Tensor) -> None:
        """Direction rows ``at .. at + len`` with deviations E [K, b, N, D] (float32)."""
        b = E.shape[1]
        q, scale = _quantised(E)
        Ed[:, at : at + b], Ed_scale[:, at : at + b] = q, scale
        for k in range(K):
            flat, flat_scale = q[k].reshape(b * n_seeds, width), scale[k].reshape(-1)
            Ce[k, :, at : at + b] = with_centres(flat, flat_scale, k, True).reshape(
                n_rows, b, n_seeds
            )
            eC_d[k, at : at + b] = with_centres(flat, flat_scale, k, False).reshape(b, n_seeds, Pd)

    prompts_d = [int(r) for r in directions]
    for start in range(0, len(prompts_d), ROW_BLOCK):
        rows = prompts_d[start : start + ROW_BLOCK]
        take_directions(
            start, _deviations(store, unit_pos, units_of, rows, chosen, centres, n_seeds)
        )
    if refs:
        E_ref = ref_sums[chosen] - ref_means[:, :, None]  # [K, R, N, D]
        take_directions(len(prompts_d), torch.from_numpy(E_ref.astype(np.float32)))
    Cq = torch.empty(0, dtype=torch.int8)  # every row's C·e is done: only Cdq is used on
    flat_d = Ed.reshape(K, Pd * n_seeds, width)
    flat_scale = Ed_scale.reshape(K, Pd * n_seeds)
    cross = np.zeros((K, n_rows, Pd, n_seeds, n_seeds), dtype=np.float32)

    def assemble(
        rows: Sequence[int], C: torch.Tensor, eC: torch.Tensor, q: torch.Tensor, scale: torch.Tensor
    ) -> None:
        """cross[rows] from the rows' shifted centres C [K, b, D], e·C [K, b, N, Pd] and their
        quantised deviations (int8 [K, b, N, D], scales [K, b, N])."""
        b = len(rows)
        CC = torch.bmm(C.double(), Cd64.transpose(1, 2))  # [K, b, Pd]
        ee = torch.stack([
            _int_products(q[k].reshape(b * n_seeds, width), scale[k].reshape(-1),
                          flat_d[k], flat_scale[k])
            for k in range(K)
        ])  # fmt: skip
        total = _seeds_last(ee.numpy(), b, n_seeds, Pd)
        total += CC.numpy()[:, :, :, None, None]
        total += Ce[:, list(rows)].numpy()[:, :, :, None, :]
        total += eC.permute(0, 1, 3, 2).numpy()[:, :, :, :, None]
        cross[:, list(rows)] = total

    for start in range(0, Pd, ROW_BLOCK):  # the direction rows, a block at a time
        part = slice(start, start + ROW_BLOCK)
        assemble(D_rows[part], Cd[:, part], eC_d[:, part], Ed[:, part], Ed_scale[:, part])
    span = max((len(g) for g in groups), default=1)
    group_rows = np.full((len(groups), span), -1)
    own = np.zeros((K, len(groups), span, span, n_seeds, n_seeds), dtype=np.float32)
    for g, rows in enumerate(groups):
        group_rows[g, : len(rows)] = rows
    per_block = max(1, ROW_BLOCK // span)
    for first in range(0, len(groups), per_block):
        chunk = groups[first : first + per_block]
        block = [r for g in chunk for r in g]
        E = _deviations(store, unit_pos, units_of, block, chosen, centres, n_seeds)
        C = torch.stack([centre(k, block) for k in range(K)])
        at = 0
        for g, rows in enumerate(chunk, start=first):
            size = len(rows)
            X = (E[:, at : at + size] + C[:, at : at + size, None]).reshape(
                K, size * n_seeds, width
            )
            own[:, g, :size, :size] = _seeds_last(
                torch.bmm(X, X.transpose(1, 2)).numpy(), size, n_seeds, size
            )
            at += size
        q, scale = _quantised(E)
        eC = torch.stack([
            with_centres(q[k].reshape(-1, width), scale[k].reshape(-1), k, False)
            for k in range(K)
        ]).reshape(K, len(block), n_seeds, Pd)  # fmt: skip
        assemble(block, C, eC, q, scale)
    return [
        SeedProducts(n_prompts, refs, np.asarray(D_rows), cross[k], group_rows, own[k])
        for k in range(K)
    ]
