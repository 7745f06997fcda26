"""What a work unit stores, decided before planning (it is part of a unit's identity).

The size of h at the hook point comes from the model's config files (:func:`model_geometry`,
through the family's adapter). ``probe.store_dtype`` and ``probe.per_step_h`` 'auto' are made
concrete against it and ``probe.unit_budget_mb`` (:func:`resolve_storage`, with the hook point
first in :func:`resolve_spec`); :func:`stored_layout` says what a resolved spec stores per unit,
for the plan's storage figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditkit.models.adapters.base import Geometry
from auditkit.spec.audit import AuditSpec

REFERENCE_PARAMS = 860e6
"""Parameters of an SD 1.5-sized U-Net: the denoiser assumed when the config cannot tell."""


def kept_steps(spec: AuditSpec) -> list[int]:
    """The denoising steps that enter h: ``probe.steps`` within the model's steps (the last
    step when none of them is)."""
    steps = spec.model.steps
    if spec.probe.steps == "all":
        return list(range(steps))
    return [s for s in spec.probe.steps if s < steps] or [steps - 1]


def kept_step_count(spec: AuditSpec) -> int:
    """How many denoising steps enter h."""
    return len(kept_steps(spec))


@dataclass(frozen=True)
class StoredLayout:
    """What each unit stores: h at ``snapshots`` of the kept steps (their indices among the
    kept steps), plus the mean over every kept step when the snapshots are not all of them."""

    snapshots: tuple[int, ...]
    with_mean: bool
    dtype: str
    values: int  # numbers per stored vector

    @property
    def vectors(self) -> int:
        return len(self.snapshots) + int(self.with_mean)

    @property
    def bytes_per_unit(self) -> int:
        return self.vectors * self.values * (2 if self.dtype == "float16" else 4)


def stored_layout(spec: AuditSpec, h_shape: tuple[int, ...]) -> StoredLayout:
    """The layout a (resolved) spec stores for h of ``h_shape``."""
    order = kept_steps(spec)
    probe = spec.probe
    values = stored_per_step(h_shape, probe.spatial_pool, probe.tokens)
    chosen = probe.step_h_stored
    if chosen == "all":
        snapshots = tuple(range(len(order)))
    else:
        snapshots = tuple(order.index(s) for s in chosen if s in order)
    return StoredLayout(snapshots, len(snapshots) < len(order), probe.dtype_stored, values)


def resolve_storage(spec: AuditSpec, h_shape: tuple[int, ...] | None) -> AuditSpec:
    """``spec`` with ``probe.store_dtype`` and ``probe.per_step_h`` 'auto' made concrete for h
    of ``h_shape`` (before planning: they decide what a unit stores, so its id). Every kept step
    in float32 when that fits ``probe.unit_budget_mb``; else float16, and every kept step if
    that fits, else the mean over the kept steps plus as many evenly spaced kept steps (first
    and last included) as fit beside it, at least one. ``aggregation: per_step`` needs every
    kept step. A small model (toyworld, the tiny pipelines) keeps the full float32 layout, and
    so does a model whose h size the config files cannot tell (``h_shape`` None)."""
    probe = spec.probe
    if probe.store_dtype != "auto" and probe.per_step_h != "auto":
        return spec
    if h_shape is None:
        update = {"store_dtype": probe.dtype_stored, "per_step_h": probe.step_h_stored}
        return spec.model_copy(update={"probe": probe.model_copy(update=update)})
    budget = probe.unit_budget_mb * 2**20
    kept = kept_step_count(spec)
    values = stored_per_step(h_shape, probe.spatial_pool, probe.tokens)
    per_step_all = probe.per_step_h == "all" or probe.aggregation == "per_step"
    wanted = kept if probe.per_step_h == "auto" or per_step_all else len(probe.per_step_h) + 1
    dtype = probe.store_dtype
    if dtype == "auto":
        dtype = "float32" if wanted * values * 4 <= budget else "float16"
    step_h: Any = probe.per_step_h
    if step_h == "auto":
        item = 2 if dtype == "float16" else 4
        if per_step_all or kept * values * item <= budget:
            step_h = "all"
        else:
            room = max(1, int(budget // (values * item)) - 1)  # one vector is the mean
            order = kept_steps(spec)
            picks = sorted({round(i * (kept - 1) / max(room - 1, 1)) for i in range(room)})
            step_h = [order[i] for i in picks] if room > 1 else [order[-1]]
    update = {"store_dtype": dtype, "per_step_h": step_h}
    return spec.model_copy(update={"probe": probe.model_copy(update=update)})


def resolve_spec(spec: AuditSpec, cache_dir: Path) -> AuditSpec:
    """``spec`` with everything 'auto' that decides what a unit stores made concrete before
    planning: the hook point (:func:`resolve_hook`), then the stored dtype and per-step h for
    the size of h there, read from the model's config files
    (:func:`resolve_storage`; every step in float32 when they cannot tell)."""
    from auditkit.models.builtin import builtin_name
    from auditkit.models.loading import existing_model_folder, model_folder, resolve_hook

    spec = resolve_hook(spec, cache_dir)
    if spec.probe.store_dtype != "auto" and spec.probe.per_step_h != "auto":
        return spec
    builtin = builtin_name(spec.model.id) is not None
    folder = (model_folder if builtin else existing_model_folder)(spec.model, cache_dir)
    geometry = model_geometry(spec, folder)
    return resolve_storage(spec, geometry.h_shape if geometry.known else None)


def stored_per_step(h_shape: tuple[int, ...], spatial_pool: str, tokens: str = "pooled") -> int:
    """Numbers stored per step and unit for h of ``h_shape`` per sample: a feature map [C, H, W]
    keeps C x H x W, or C with ``spatial_pool: mean``; image tokens [T, D] are pooled to D,
    unless ``tokens: full`` (and no spatial pooling) keeps all T x D."""
    if len(h_shape) == 2:
        full = tokens == "full" and spatial_pool == "none"
        return int(h_shape[0]) * int(h_shape[1]) if full else int(h_shape[1])
    if spatial_pool == "mean":
        return int(h_shape[0])
    total = 1
    for dim in h_shape:
        total *= int(dim)
    return total


def model_geometry(spec: AuditSpec, model_dir: Path | None) -> Geometry:
    """h's shape at the spec's hook and the denoiser's size, from config files alone (the
    family's adapter reads them), or an SD 1.5-sized U-Net's when the folder cannot tell."""
    from auditkit.models.adapters import for_family, for_folder

    resolution = spec.model.resolution
    auto = spec.model.pipeline == "auto"
    adapter = for_folder(model_dir) if auto else for_family(spec.model.pipeline)
    known = adapter.geometry(model_dir, resolution, spec.probe.hook) if adapter else None
    if known is not None:
        return known
    side = max(1, resolution // 64)
    return Geometry(
        h_shape=(1280, side, side),
        params=REFERENCE_PARAMS,
        latent_area=(resolution // 8) ** 2,
        cfg_capable=adapter is None or adapter.guidance == "cfg",
        known=False,
    )
