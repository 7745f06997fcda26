"""Reading an activation store into seed products (:mod:`auditkit.analyze.products`).

The store is read twice, streaming:

- **pass 1**: each prompt's seed mean H(p) (what the point estimates use), each stored step's
  seed mean, and per seed each concept set's *reference parts* (the mean of its concepts'
  prompts under each template), so that a centring reference is one row, not a thousand;
- **pass 2**: the products the measures use (:func:`auditkit.analyze.products.row_roles`),
  a block of prompts at a time.

Each latent is split into its prompt's seed mean and the seed's deviation from it, h(p, n) =
C(p) + e(p, n). C·C is computed in float64; C·e, e·C and e·e, the bulk of the work (every
row's seeds against every direction's), as int8 products with exact int32 sums (6-9x the
float32 rate on the AVX-512 VNNI CPUs measured; on a CPU without int8 instructions the same
int8 values are multiplied as float32, bit for bit equal: :mod:`auditkit.analyze.int8`), each
vector rounded to 8 bits against its largest value. The deviations of N seeds sum to zero, so the
int8 products are taken of their N - 1 contrasts (:func:`seed_contrasts`) and mapped back to
seeds. On the default audit read this way, the interval bounds moved by at most 0.3% of the
intervals' width for the lean table, 0.5% for the lean by step and 0.9% for the defaults (the
bootstrap's own Monte Carlo error on a bound is about 2%; ``tests/test_streamed.py``). Each C
is shifted by the mean over prompts first: every measure is a function of differences of
latents, so a shift common to all changes nothing but the size of the numbers. The point
estimates still come from H in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from auditkit.analyze.int8 import int_products, quantised
from auditkit.analyze.measures import AuditLayout
from auditkit.analyze.products import RefPart, SeedProducts, ref_parts, row_roles
from auditkit.threads import torch_threads

if TYPE_CHECKING:
    import torch

    from auditkit.extract.store import ActivationStore

ROW_BLOCK = 12
"""Prompts read at once in pass 2 (each with every seed)."""

ASSEMBLE_ROWS = 48
"""Prompts whose int8 products with the directions are computed in one matrix product: the
int8 kernel runs about 30% faster on 720 rows (48 prompts x 15 seed contrasts) than on 180,
and a block of int8 contrasts is a quarter the size of the float deviations it comes from."""


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
    # one thread for this pass: its adds of one latent at a time are too small to share, and
    # the store checks the next shard in a thread of its own meanwhile (pass 1 of B2 on two
    # cores: 14.7 s against 17-19 s with two threads, 30 s with both; benchmarks/NOTES.md)
    with torch_threads(1):
        H_sum, steps_sum, ref_total = _first_pass(
            store, unit_pos, contributions, n_prompts, n_seeds, len(refs)
        )
    if H_sum is None or steps_sum is None or ref_total is None:
        raise ValueError("the plan has no work units")
    H, steps, ref_sums = H_sum.numpy(), steps_sum.numpy(), ref_total.numpy()
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


def _first_pass(
    store: ActivationStore,
    unit_pos: dict[str, tuple[int, int]],
    contributions: dict[int, list[tuple[int, float]]],
    n_prompts: int,
    n_seeds: int,
    n_refs: int,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Pass 1 of :func:`build_products`: per prompt the sums over seeds of the mean over steps
    (float64) and of each stored step, and per seed each reference part's weighted sums."""
    import torch

    # accumulated as torch tensors, in the order the store yields the units
    H_sum: torch.Tensor | None = None
    steps_sum: torch.Tensor | None = None
    ref_total: torch.Tensor | None = None
    for uid, tensor, mean in store.iter_stored(unit_pos):
        p, n = unit_pos[uid]
        at_steps = tensor.reshape(tensor.shape[0], -1)
        avg = mean.reshape(-1) if mean is not None else at_steps.mean(dim=0)
        if H_sum is None:
            width = at_steps.shape[1]
            H_sum = torch.zeros((n_prompts, width), dtype=torch.float64)
            steps_sum = torch.zeros((n_prompts, at_steps.shape[0], width))
            ref_total = torch.zeros(
                (1 + at_steps.shape[0], n_refs, n_seeds, width), dtype=torch.float64
            )
        assert steps_sum is not None and ref_total is not None
        H_sum[p] += avg
        steps_sum[p] += at_steps
        for j, factor in contributions.get(p, []):
            ref_total[0, j, n] += factor * avg
            ref_total[1:, j, n] += factor * at_steps
    return H_sum, steps_sum, ref_total


def _deviations(
    store: ActivationStore,
    unit_pos: dict[str, tuple[int, int]],
    units_of: dict[int, list[str]],
    rows: Sequence[int],
    chosen: list[int],
    centres: list[np.ndarray],
    n_seeds: int,
    reuse: list[torch.Tensor],
):
    """[len(chosen), len(rows), N, D] float32 torch tensor: each unit's chosen aggregates (0 =
    the mean over steps, s = stored step s - 1) minus its prompt's seed mean there
    (``centres[k]`` [P, D] for the k-th chosen), in :func:`_scratch` ``reuse``."""
    import torch

    place = {r: i for i, r in enumerate(rows)}
    out = _scratch(reuse, (len(chosen), len(rows), n_seeds, centres[0].shape[1]))
    wanted = [uid for r in rows for uid in units_of.get(r, [])]
    # as stored (float16): the copy into ``out`` converts, exactly, without a float32 copy
    # of every latent first
    read = store.iter_stored(
        wanted, stored_mean_only=chosen == [0], need_mean=0 in chosen, as_stored=True
    )
    for uid, tensor, mean in read:
        p, n = unit_pos[uid]
        at_steps = tensor.reshape(tensor.shape[0], -1) if tensor is not None else None
        for i, k in enumerate(chosen):
            if k == 0 and mean is not None:
                value = mean.reshape(-1)
            else:
                assert at_steps is not None
                value = at_steps.float().mean(dim=0) if k == 0 else at_steps[k - 1]
            out[i, place[p], n] = value
    # every unit's prompt mean subtracted at once, in float32 (the deviations are rounded to
    # 8 bits next)
    mean_of = np.stack([np.stack([centres[i][r] for r in rows]) for i in range(len(chosen))])
    out -= torch.from_numpy(mean_of.astype(np.float32, copy=False))[:, :, None, :]
    return out


def _scratch(reuse: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor of ``shape`` viewing ``reuse[0]`` when that is large enough (else a new
    one takes its place): the next call overwrites it. Loops that allocated a fresh block of
    hundreds of megabytes per step spent more time in page faults than in their work."""
    import torch

    size = int(np.prod(shape))
    if not reuse or reuse[0].numel() < size:
        reuse[:] = [torch.empty(size)]
    return reuse[0][:size].view(shape)


def _seeds_last(products: np.ndarray, rows: int, n_seeds: int, cols: int) -> np.ndarray:
    """[K, rows x N, cols x N] -> [K, rows, cols, N, N]."""
    K = products.shape[0]
    return products.reshape(K, rows, n_seeds, cols, n_seeds).transpose(0, 1, 3, 2, 4)


def seed_contrasts(n_seeds: int) -> np.ndarray:
    """[N, N - 1] orthonormal columns orthogonal to the all-ones vector (the identity for one
    seed): a prompt's deviations from its seed mean lie in their span, so N - 1 contrasts
    e(p, ·) U carry all of them (e = f Uᵀ) and their products cost (N - 1)² instead of N²."""
    if n_seeds < 2:
        return np.eye(max(n_seeds, 1))
    centring = np.eye(n_seeds) - 1.0 / n_seeds
    basis, _ = np.linalg.qr(centring[:, : n_seeds - 1])
    return np.asarray(basis)


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
    seed mean): C·C in float64, C·e and e·C in float32, e·e in int8 (:func:`int_products`);
    a concept's own products in float32. Every C is shifted by the mean over prompts first
    (the measures only see differences). The int8 products are of each prompt's N - 1 seed
    contrasts (:func:`seed_contrasts`), mapped back to seeds afterwards."""
    import torch

    U = seed_contrasts(n_seeds)  # [N, M]
    M = U.shape[1]
    U_t = torch.from_numpy(U.T.astype(np.float32))  # [M, N]
    contrast_buffer: list[torch.Tensor] = []

    def contrasts(E: torch.Tensor) -> torch.Tensor:
        """The seed contrasts [K, b, M, D] of deviations E [K, b, N, D], in a buffer the next
        call overwrites."""
        shape = (E.shape[0], E.shape[1], M, E.shape[3])
        return torch.matmul(U_t, E, out=_scratch(contrast_buffer, shape))

    def to_seeds(products: np.ndarray) -> np.ndarray:
        """[..., M] products of contrasts -> [..., N] products of seeds."""
        return np.asarray(products @ U.T)

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
    Cd64 = torch.stack([centre(k, D_rows) for k in range(K)]).double()  # [K, Pd, D]
    # every row's C·C with the directions (float64), and its centre in int8 for C·e and e·C
    CC = torch.zeros((K, n_rows, Pd), dtype=torch.float64)
    Cq = torch.zeros((K, n_rows, width), dtype=torch.int8)
    Cs = torch.zeros((K, n_rows))
    for start in range(0, n_rows, 256):
        rows = list(range(start, min(start + 256, n_rows)))
        shifted = torch.stack([centre(k, rows) for k in range(K)])
        CC[:, rows] = torch.bmm(shifted.double(), Cd64.transpose(1, 2))
        Cq[:, rows], Cs[:, rows] = quantised(shifted)
    del Cd64
    Cdq, Cds = Cq[:, D_rows], Cs[:, D_rows]

    def with_centres(q: torch.Tensor, scale: torch.Tensor, k: int, rows: bool) -> torch.Tensor:
        """e·C of int8 deviations (q, scale) against the direction rows' centres (``rows``
        False) or C·e of every row's centre against them (``rows`` True), float64."""
        if rows:
            return int_products(Cq[k], Cs[k], q, scale)
        return int_products(q, scale, Cdq[k], Cds[k])

    Ed = torch.zeros((K, Pd, M, width), dtype=torch.int8)  # the directions' contrasts
    Ed_scale = torch.zeros((K, Pd, M))
    Ce = torch.zeros((K, n_rows, Pd, M), dtype=torch.float64)  # C(i)·f(j, m)
    eC_d = torch.zeros((K, Pd, M, Pd), dtype=torch.float64)  # f(i, n)·C(j), directions

    def take_directions(at: int, E: torch.Tensor) -> None:
        """Direction rows ``at .. at + len`` with deviations E [K, b, N, D] (float32)."""
        b = E.shape[1]
        q, scale = quantised(contrasts(E))
        Ed[:, at : at + b], Ed_scale[:, at : at + b] = q, scale
        for k in range(K):
            flat, flat_scale = q[k].reshape(b * M, width), scale[k].reshape(-1)
            Ce[k, :, at : at + b] = with_centres(flat, flat_scale, k, True).reshape(n_rows, b, M)
            eC_d[k, at : at + b] = with_centres(flat, flat_scale, k, False).reshape(b, M, Pd)

    block_buffer: list[torch.Tensor] = []  # the blocks' deviations, one block after another
    prompts_d = [int(r) for r in directions]
    for start in range(0, len(prompts_d), ROW_BLOCK):
        rows = prompts_d[start : start + ROW_BLOCK]
        take_directions(
            start,
            _deviations(store, unit_pos, units_of, rows, chosen, centres, n_seeds, block_buffer),
        )
    if refs:
        E_ref = ref_sums[chosen] - ref_means[:, :, None]  # [K, R, N, D]
        take_directions(len(prompts_d), torch.from_numpy(E_ref.astype(np.float32)))
    Cq = torch.empty(0, dtype=torch.int8)  # every row's C·e is done: only Cdq is used on
    flat_d = Ed.reshape(K, Pd * M, width)
    flat_scale = Ed_scale.reshape(K, Pd * M)
    cross = np.zeros((K, n_rows, Pd, n_seeds, n_seeds), dtype=np.float32)

    def assemble(
        rows: Sequence[int], eC: torch.Tensor, q: torch.Tensor, scale: torch.Tensor
    ) -> None:
        """cross[rows] from the rows' f·C [K, b, M, Pd] and their quantised contrasts (int8
        [K, b, M, D], scales [K, b, M])."""
        b = len(rows)
        ff = torch.stack([
            int_products(q[k].reshape(b * M, width), scale[k].reshape(-1),
                          flat_d[k], flat_scale[k])
            for k in range(K)
        ])  # fmt: skip
        # e(i, n)·e(j, m) = sum U[n, a] U[m, c] f(i, a)·f(j, c)
        total = to_seeds(U @ _seeds_last(ff.numpy(), b, M, Pd))  # [K, b, Pd, N, N]
        total += CC[:, list(rows)].numpy()[:, :, :, None, None]
        total += to_seeds(Ce[:, list(rows)].numpy())[:, :, :, None, :]
        total += to_seeds(eC.permute(0, 1, 3, 2).numpy())[:, :, :, :, None]
        cross[:, list(rows)] = total

    for start in range(0, Pd, ASSEMBLE_ROWS):  # the direction rows, a block at a time
        part = slice(start, start + ASSEMBLE_ROWS)
        assemble(D_rows[part], eC_d[:, part], Ed[:, part], Ed_scale[:, part])
    span = max((len(g) for g in groups), default=1)
    group_rows = np.full((len(groups), span), -1)
    own = np.zeros((K, len(groups), span, span, n_seeds, n_seeds), dtype=np.float32)
    for g, rows in enumerate(groups):
        group_rows[g, : len(rows)] = rows
    per_block = max(1, ROW_BLOCK // span)
    waiting: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []  # rows, f·C, scales
    filled = 0  # their rows
    q_waiting = torch.empty(  # their int8 contrasts
        (K, max(ASSEMBLE_ROWS, per_block * span), M, width), dtype=torch.int8
    )
    for first in range(0, len(groups), per_block):
        chunk = groups[first : first + per_block]
        block = [r for g in chunk for r in g]
        E = _deviations(store, unit_pos, units_of, block, chosen, centres, n_seeds, block_buffer)
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
        q, scale = quantised(contrasts(E), out=q_waiting[:, filled : filled + len(block)])
        eC = torch.stack([
            with_centres(q[k].reshape(-1, width), scale[k].reshape(-1), k, False)
            for k in range(K)
        ]).reshape(K, len(block), M, Pd)  # fmt: skip
        waiting.append((block, eC, scale))
        filled += len(block)
        if filled + per_block * span > q_waiting.shape[1] or first + per_block >= len(groups):
            assemble(
                [r for w in waiting for r in w[0]],
                torch.cat([w[1] for w in waiting], dim=1),
                q_waiting[:, :filled],
                torch.cat([w[2] for w in waiting], dim=1),
            )
            waiting, filled = [], 0
    return [
        SeedProducts(n_prompts, refs, np.asarray(D_rows), cross[k], group_rows, own[k])
        for k in range(K)
    ]
