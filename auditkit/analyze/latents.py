"""Prompt latents from the activation store: H(p) per seed, and per-step means."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from auditkit.analyze.products import LATENT_MEMORY_BUDGET, SeedProducts
from auditkit.extract.store import ActivationStore
from auditkit.plan import AuditPlan
from auditkit.spec.audit import AuditSpec


@dataclass(frozen=True)
class LatentSet:
    """Latents of every distinct prompt of a plan.

    ``per_seed[p, n]`` is prompt p's h for seed n, aggregated over the kept steps (mean, or the
    concatenated trajectory for ``per_step``), flattened. ``step_means[p, s]`` is the seed-mean
    h of prompt p at stored step s (``steps``: every kept step, or the ``probe.per_step_h``
    ones), used for per-step leans and step consistency.

    An audit whose per-seed latents would not fit in memory (:data:`LATENT_MEMORY_BUDGET`) has
    ``per_seed`` None: ``seed_means`` holds H(p), and ``products`` the per-seed inner products
    its resampled measures use (:mod:`auditkit.analyze.products`: the mean over steps first,
    then each stored step).
    """

    prompt_ids: tuple[str, ...]
    seeds: tuple[int, ...]
    per_seed: np.ndarray | None
    step_means: np.ndarray
    steps: tuple[int, ...]
    timesteps: tuple[float, ...]
    aggregation: str
    seed_means: np.ndarray | None = None
    products: tuple[SeedProducts, ...] = ()

    def row_map(self) -> dict[str, int]:
        """Prompt id -> row in the arrays."""
        return {pid: i for i, pid in enumerate(self.prompt_ids)}

    def means(self, seed_index: np.ndarray | None = None) -> np.ndarray:
        """H(p) for every prompt: mean over all seeds, or over the seeds at ``seed_index``."""
        if self.per_seed is None:
            if seed_index is not None or self.seed_means is None:
                raise ValueError("per-seed latents of a streamed audit are not kept in memory")
            return self.seed_means
        chosen = self.per_seed if seed_index is None else self.per_seed[:, seed_index]
        return chosen.mean(axis=1)

    @property
    def width(self) -> int:
        """Values per latent."""
        return int(self.step_means.shape[-1])

    def at_step(self, s: int) -> LatentSet:
        """The latents of stored step ``s`` alone (its per-seed latents, or its products)."""
        if self.per_seed is not None:
            raise ValueError("at_step reads a streamed audit's products; load the step instead")
        return LatentSet(
            self.prompt_ids, self.seeds, None, self.step_means[:, s : s + 1],
            (self.steps[s],), (self.timesteps[s],), "mean",
            seed_means=self.step_means[:, s], products=(self.products[1 + s],),
        )  # fmt: skip


def load_latents(
    store: ActivationStore,
    plan: AuditPlan,
    aggregation: str,
    *,
    spec: AuditSpec | None = None,
    budget: int = LATENT_MEMORY_BUDGET,
) -> LatentSet:
    """Read every unit of ``plan`` from ``store`` into a :class:`LatentSet`; with ``spec``, an
    audit whose per-seed latents exceed ``budget`` bytes (float32) is streamed into seed
    products instead (:mod:`auditkit.analyze.products`; ``aggregation: mean`` only)."""
    prompt_ids = tuple(dict.fromkeys(u.prompt_id for u in plan.units))
    seeds = tuple(dict.fromkeys(u.seed for u in plan.units))
    p_row = {pid: i for i, pid in enumerate(prompt_ids)}
    s_row = {seed: i for i, seed in enumerate(seeds)}
    unit_pos = {u.unit_id: (p_row[u.prompt_id], s_row[u.seed]) for u in plan.units}
    if spec is not None and aggregation == "mean" and plan.units:
        width = _stored_width(store, plan.units[0].unit_id)
        if len(prompt_ids) * len(seeds) * width * 4 > budget:
            return _streamed(store, plan, spec, prompt_ids, seeds, unit_pos)
    per_seed: np.ndarray | None = None
    step_sums: np.ndarray | None = None
    for uid, tensor, mean in store.iter_stored(unit_pos):
        arr = tensor.numpy().reshape(tensor.shape[0], -1).astype(np.float64)  # [S, D]
        p, n = unit_pos[uid]
        if per_seed is None or step_sums is None:
            width = arr.size if aggregation == "per_step" else arr.shape[1]
            per_seed = np.zeros((len(prompt_ids), len(seeds), width), dtype=np.float32)
            step_sums = np.zeros((len(prompt_ids), *arr.shape), dtype=np.float64)
        per_seed[p, n] = aggregate(arr, mean, aggregation)
        step_sums[p] += arr
    if per_seed is None or step_sums is None:
        raise ValueError("the plan has no work units")
    first = store.index().iloc[0]
    return LatentSet(
        prompt_ids=prompt_ids,
        seeds=seeds,
        per_seed=per_seed,
        step_means=(step_sums / len(seeds)).astype(np.float32),
        steps=tuple(int(s) for s in json.loads(str(first["steps"]))),
        timesteps=tuple(float(t) for t in json.loads(str(first["timesteps"]))),
        aggregation=aggregation,
    )


def aggregate(steps: np.ndarray, mean: Any, aggregation: str) -> np.ndarray:
    """One unit's latent from what the store holds: its h at the stored steps ``steps``
    [S, D] and its stored mean over the kept steps (None when every kept step is stored),
    aggregated as ``probe.aggregation`` says: the concatenated trajectory (``per_step``) or
    the mean over the kept steps (``mean``), flattened."""
    if aggregation == "per_step":
        return steps.reshape(-1)
    if mean is not None:  # the mean over every kept step, accumulated at capture
        return np.asarray(mean.numpy() if hasattr(mean, "numpy") else mean).reshape(-1)
    return steps.mean(axis=0)  # every kept step is stored


def unit_latents(
    store: ActivationStore, unit_ids: Sequence[str], aggregation: str
) -> dict[str, np.ndarray]:
    """Each unit's latent (float32, :func:`aggregate`), by unit id."""
    out: dict[str, np.ndarray] = {}
    wanted = list(dict.fromkeys(unit_ids))
    for uid, tensor, mean in store.iter_stored(wanted, stored_mean_only=aggregation == "mean"):
        steps = None if tensor is None else tensor.numpy().reshape(tensor.shape[0], -1)
        if steps is None:
            out[uid] = np.asarray(mean.numpy(), dtype=np.float32).reshape(-1)
        else:
            out[uid] = aggregate(steps.astype(np.float64), mean, aggregation).astype(np.float32)
    return out


def _stored_width(store: ActivationStore, unit_id: str) -> int:
    """Values per latent of the stored units (from the index's shape of ``unit_id``)."""
    frame = store.index()
    row = frame[frame["unit_id"] == unit_id]
    if row.empty:
        raise KeyError(f"unit {unit_id} is not in the activation store")
    shape = json.loads(str(row["shape"].iloc[0]))
    return int(np.prod(shape[1:]))


def _streamed(
    store: ActivationStore,
    plan: AuditPlan,
    spec: AuditSpec,
    prompt_ids: tuple[str, ...],
    seeds: tuple[int, ...],
    unit_pos: dict[str, tuple[int, int]],
) -> LatentSet:
    from auditkit.analyze.measures import build_layout
    from auditkit.analyze.product_reading import build_products

    layout = build_layout(spec, {pid: i for i, pid in enumerate(prompt_ids)})
    H, steps, products = build_products(store, unit_pos, layout, len(prompt_ids), len(seeds))
    first = store.index().iloc[0]
    return LatentSet(
        prompt_ids=prompt_ids,
        seeds=seeds,
        per_seed=None,
        step_means=steps,
        steps=tuple(int(s) for s in json.loads(str(first["steps"]))),
        timesteps=tuple(float(t) for t in json.loads(str(first["timesteps"]))),
        aggregation="mean",
        seed_means=H,
        products=tuple(products),
    )
