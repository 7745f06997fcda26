"""Prompt latents from the activation store: H(p) per seed, and per-step means."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from auditkit.extract.store import ActivationStore
from auditkit.plan import AuditPlan


@dataclass(frozen=True)
class LatentSet:
    """Latents of every distinct prompt of a plan.

    ``per_seed[p, n]`` is prompt p's h for seed n, aggregated over the kept steps (mean, or the
    concatenated trajectory for ``per_step``), flattened. ``step_means[p, s]`` is the seed-mean
    h of prompt p at stored step s (``steps``: every kept step, or the ``probe.per_step_h``
    ones), used for per-step leans and step consistency.
    """

    prompt_ids: tuple[str, ...]
    seeds: tuple[int, ...]
    per_seed: np.ndarray
    step_means: np.ndarray
    steps: tuple[int, ...]
    timesteps: tuple[float, ...]
    aggregation: str

    def row_map(self) -> dict[str, int]:
        """Prompt id -> row in the arrays."""
        return {pid: i for i, pid in enumerate(self.prompt_ids)}

    def means(self, seed_index: np.ndarray | None = None) -> np.ndarray:
        """H(p) for every prompt: mean over all seeds, or over the seeds at ``seed_index``."""
        chosen = self.per_seed if seed_index is None else self.per_seed[:, seed_index]
        return chosen.mean(axis=1)


def load_latents(store: ActivationStore, plan: AuditPlan, aggregation: str) -> LatentSet:
    """Read every unit of ``plan`` from ``store`` into a :class:`LatentSet`."""
    prompt_ids = tuple(dict.fromkeys(u.prompt_id for u in plan.units))
    seeds = tuple(dict.fromkeys(u.seed for u in plan.units))
    p_row = {pid: i for i, pid in enumerate(prompt_ids)}
    s_row = {seed: i for i, seed in enumerate(seeds)}
    unit_pos = {u.unit_id: (p_row[u.prompt_id], s_row[u.seed]) for u in plan.units}
    per_seed: np.ndarray | None = None
    step_sums: np.ndarray | None = None
    for uid, tensor, mean in store.iter_stored(unit_pos):
        arr = tensor.numpy().reshape(tensor.shape[0], -1).astype(np.float64)  # [S, D]
        p, n = unit_pos[uid]
        if per_seed is None or step_sums is None:
            width = arr.size if aggregation == "per_step" else arr.shape[1]
            per_seed = np.zeros((len(prompt_ids), len(seeds), width), dtype=np.float32)
            step_sums = np.zeros((len(prompt_ids), *arr.shape), dtype=np.float64)
        if aggregation == "per_step":
            per_seed[p, n] = arr.reshape(-1)
        elif mean is not None:  # the mean over every kept step, accumulated at capture
            per_seed[p, n] = mean.numpy().reshape(-1)
        else:  # every kept step is stored
            per_seed[p, n] = arr.mean(axis=0)
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
