"""Stage 4b (optional): the causal check, a dose-response curve per axis.

Association is not causation (METHOD.md): that the concept "nurse" lies towards "woman" in
h-space does not show that the model *uses* that direction to draw women. The causal check
intervenes. For each selected two-group axis, with direction g = G(first group) - G(second
group) computed from the run's stored prompt latents exactly as the analysis computes it
(:func:`auditkit.analyze.measures.axis_direction` on the seed-mean, step-mean latents), the
concept prompts are sampled again while ``alpha * g`` is added to the hook point's output
(:func:`auditkit.extract.hooks.steer_h`), the images are decoded and read by the captioner, and
the share read as the first group is tabulated against alpha.

**Units of alpha.** g is one step-mean h difference, reshaped to the hook output's shape
[C, H, W]; it is added unchanged at *every* denoising step and to *both* classifier-free-guidance
halves (the unconditional half too, so guidance does not cancel the shift). alpha = 1 moves h
by the whole gap between the two groups' prompts, alpha = -1 by the same amount the other way,
alpha = 0 samples exactly as extraction and the captioning stage do. That needs the stored h to
be the full output (``probe.spatial_pool: none``) averaged over steps (``aggregation: mean``);
the spec refuses other settings.

**Sampling.** Every image starts from the same seeded per-unit noise as extraction
(:func:`auditkit.extract.runner.pipeline_inputs`), so the curve compares the *same* trajectories
at different alphas: paired, not independent, samples.

**Resume.** A steered image is a *job* (axis, alpha, unit) whose id hashes the axis, alpha,
unit id, captioner key and the sha256 of the direction (so new activations or another captioner
never reuse stale readings). Readings are stored in atomic chunks
(:class:`auditkit.caption.stage.CaptionStore` under ``captions/causal/``); an interrupted stage
resumes with the missing jobs, and a rerun with every job done does not load the diffusion model.

Tables (schema: docs/run-directory.md), rewritten at the end of every pass:

* ``captions/causal.parquet``: per (axis, alpha, concept set, concept): the share read as the
  axis's first group, with a Wilson interval.
* ``captions/causal_curve.parquet``: the same, pooled over the selected concepts.
* ``captions/causal_axes.parquet``: per axis: Spearman's rho of alpha against the reading over
  all images, whether the pooled share is monotone non-decreasing in alpha, the least-squares
  slope, and the share change from the lowest to the highest alpha.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditkit.caption import Captioner
from auditkit.caption.causal_tables import (
    AXIS_COLUMNS,
    CAUSAL_COLUMNS,
    CAUSAL_SCHEMA_VERSION,
    CURVE_COLUMNS,
    read_causal,
    write_causal_tables,
)
from auditkit.caption.stage import CaptionStats, CaptionStore, read_batch
from auditkit.errors import RuntimeFailure, UsageError
from auditkit.extract.store import ActivationStore
from auditkit.models.loading import LoadedPipeline
from auditkit.plan import AuditPlan, PlannedPrompt, WorkUnit, prompt_id
from auditkit.progress import Progress
from auditkit.spec.audit import AuditSpec
from auditkit.spec.captions import CausalSpec
from auditkit.spec.vocabulary import AxisSpec, fill

DEFAULT_CAUSAL_SEEDS = 16
"""Seeds per concept prompt and alpha when ``captions.causal.seeds`` is not given."""
STEERING = "add alpha*g to the hook output at every step, both guidance halves (v1)"
"""What a job's alpha means; part of every job id, so a change of method never reuses readings."""


CausalStats = CaptionStats
"""What one pass of the causal check did (the manifest's ``stages.causal``): the same counts
as a captioning pass."""


@dataclass(frozen=True)
class SteeringDirection:
    """An axis's direction g, shaped like one sample of the hook point's output."""

    axis: str
    groups: tuple[str, str]
    vector: np.ndarray  # float32, [C, H, W]
    sha256: str

    @property
    def norm(self) -> float:
        """Euclidean norm of g (the distance alpha = 1 moves h)."""
        return float(np.linalg.norm(self.vector.astype(np.float64)))


@dataclass(frozen=True)
class CausalJob:
    """One steered image: ``unit`` sampled with ``alpha * g`` of ``axis`` added."""

    job_id: str
    axis: str
    alpha: float
    unit: WorkUnit


# --- what is steered -------------------------------------------------------------------------


def causal_section(spec: AuditSpec) -> CausalSpec:
    """The spec's ``captions.causal`` section (ValueError when the check is off)."""
    if spec.captions is None or spec.captions.causal is None:
        raise ValueError("the spec has no captions.causal section: the causal check is off")
    return spec.captions.causal


def causal_seeds(spec: AuditSpec) -> list[int]:
    """The first ``causal.seeds`` seeds of the audit (default :data:`DEFAULT_CAUSAL_SEEDS`)."""
    wanted = causal_section(spec).seeds or min(DEFAULT_CAUSAL_SEEDS, len(spec.seed_list))
    return spec.seed_list[:wanted]


def causal_prompts(spec: AuditSpec, plan: AuditPlan) -> list[PlannedPrompt]:
    """The selected concept prompts (every template of every set listing a selected term)."""
    chosen = causal_section(spec).concepts
    return [p for p in plan.prompts if p.role == "concept" and (chosen is None or p.term in chosen)]


def causal_units(spec: AuditSpec, plan: AuditPlan) -> list[WorkUnit]:
    """The units steered at every alpha: selected concept prompts x the causal seeds."""
    seeds = set(causal_seeds(spec))
    prompt_ids = {p.prompt_id for p in causal_prompts(spec, plan)}
    return [u for u in plan.units if u.prompt_id in prompt_ids and u.seed in seeds]


def captioner_values(captioner: Captioner, resolution: int) -> dict[str, set[str] | None]:
    """Attribute -> the values ``captioner`` can write (None where it does not say).

    From the captioner's ``attributes`` table (image-to-text, CLIP) or heads (toyworld); a
    captioner that exposes neither is asked to read one grey image to learn its attributes.
    """
    table = getattr(captioner, "attributes", None)
    if isinstance(table, Mapping):
        return {str(a): {str(v) for v in values} for a, values in table.items()}
    from auditkit.toyworld.captioner import HEADS, ToyworldCaptioner

    if isinstance(captioner, ToyworldCaptioner):
        return {a: set(values) for a, values in HEADS.items()}
    grey = np.full((1, resolution, resolution, 3), 128, dtype=np.uint8)
    return {str(a): None for a in captioner.read(grey)[0]}


def select_axes(spec: AuditSpec, values: Mapping[str, set[str] | None]) -> list[AxisSpec]:
    """The axes to steer: those the spec names, or every two-group axis the captioner reads.

    Raises:
        UsageError: no axis to steer, a named axis the captioner does not read, or an axis
            whose group names are not values the captioner writes for its attribute.
    """
    named = causal_section(spec).axes
    two_group = [a for a in spec.axes if len(a.groups) == 2]
    if named is not None:
        axes = [a for a in spec.axes if a.name in named]
    else:
        axes = [a for a in two_group if a.name in values]
    if not axes:
        raise UsageError(
            "captions.causal: no axis to steer: none of the two-group axes "
            f"{[a.name for a in two_group]} is an attribute the captioner reads "
            f"({sorted(values)}).",
            hint="name an axis after an attribute the captioner reads, or remove captions.causal.",
        )
    for axis in axes:
        if axis.name not in values:
            raise UsageError(
                f"captions.causal.axes: the captioner does not read an attribute named "
                f"{axis.name!r} (it reads {sorted(values)}), so images steered along that axis "
                "cannot be scored.",
                hint="list only axes named after attributes the captioner reads.",
            )
        known = values[axis.name]
        missing = [g for g in axis.groups if known is not None and g not in known]
        if missing:
            raise UsageError(
                f"captions.causal: axis {axis.name!r} has groups {list(axis.groups)} but the "
                f"captioner writes {sorted(known or [])} for {axis.name!r}; {missing} can never "
                "be read.",
                hint="name the axis's groups after the values the captioner writes.",
            )
    return axes


def steering_directions(
    spec: AuditSpec, plan: AuditPlan, store: ActivationStore, axes: Sequence[AxisSpec]
) -> dict[str, SteeringDirection]:
    """g = G(first group) - G(second group) of each axis, from the stored prompt latents.

    The same computation as the analysis (:func:`auditkit.analyze.latents.load_latents` with
    aggregation ``mean``, then :func:`auditkit.analyze.measures.axis_direction`), over the
    units of the axes' prompts only (which is all g depends on), reshaped to the stored h's
    per-step shape, which is the hook output's per-sample shape.
    """
    from auditkit.analyze.latents import load_latents
    from auditkit.analyze.measures import AxisLayout, axis_direction

    texts = {
        fill(t, term)
        for a in axes
        for terms in a.groups.values()
        for t in a.templates
        for term in terms
    }
    wanted = {prompt_id(text) for text in texts}
    units = tuple(u for u in plan.units if u.prompt_id in wanted)
    missing = {u.unit_id for u in units} - store.completed()
    if missing:
        raise RuntimeFailure(
            f"the causal check needs the stored h of the axes' prompts, and {len(missing)} of "
            f"their {len(units)} units are not in {store.root}.",
            hint="rerun 'auditkit run' so extraction completes first.",
        )
    latents = load_latents(store, AuditPlan(**{**plan.__dict__, "units": units}), "mean")
    H = latents.means().astype(np.float64)
    rows = latents.row_map()
    index = store.index().set_index("unit_id")
    shape = json.loads(str(index.loc[units[0].unit_id, "shape"]))[1:]
    if len(shape) < 2:
        raise UsageError(
            f"captions.causal: the stored h of {spec.probe.hook!r} has shape {shape} per step "
            "(pooled), so it cannot be added back to the module's output.",
            hint="steer a hook point whose output is a feature map (a U-Net block such as "
            "'unet.mid_block'), stored with probe.spatial_pool 'none'.",
        )
    directions: dict[str, SteeringDirection] = {}
    for axis in axes:
        layout = AxisLayout(
            name=axis.name,
            group_names=tuple(axis.groups),
            groups={
                g: [[rows[prompt_id(fill(t, term))] for term in terms] for t in axis.templates]
                for g, terms in axis.groups.items()
            },
        )
        vector = axis_direction(H, layout).astype(np.float32).reshape(shape)
        digest = hashlib.sha256(json.dumps(list(vector.shape)).encode())
        digest.update(np.ascontiguousarray(vector).tobytes())
        first, second = layout.group_names[:2]
        directions[axis.name] = SteeringDirection(
            axis.name, (first, second), vector, digest.hexdigest()
        )
    return directions


def plan_jobs(
    spec: AuditSpec,
    plan: AuditPlan,
    directions: Mapping[str, SteeringDirection],
    captioner_key: str,
) -> list[CausalJob]:
    """Every (axis, alpha, unit) to sample, grouped by axis, with content-addressed ids."""
    units = causal_units(spec, plan)
    jobs = []
    for name, direction in directions.items():
        for alpha in causal_section(spec).alphas:
            for unit in units:
                key = [STEERING, name, float(alpha), unit.unit_id, captioner_key, direction.sha256]
                text = json.dumps(key, separators=(",", ":"))
                job_id = hashlib.sha256(text.encode()).hexdigest()[:24]
                jobs.append(CausalJob(job_id, name, float(alpha), unit))
    return jobs


# --- sampling ----------------------------------------------------------------------------------


def generate_steered_images(
    loaded: LoadedPipeline,
    spec: AuditSpec,
    direction: np.ndarray,
    units: Sequence[WorkUnit],
    alphas: Sequence[float],
) -> np.ndarray:
    """uint8 images [N, H, W, 3] of ``units``, sampled as extraction samples them, with
    ``alphas[i] * direction`` added to the hook point's output for unit i at every step."""
    import torch

    from auditkit.extract.hooks import steer_h
    from auditkit.extract.runner import pipeline_inputs

    g = torch.from_numpy(np.ascontiguousarray(direction, dtype=np.float32)).to(loaded.device)
    scale = torch.tensor([float(a) for a in alphas], dtype=torch.float32)
    with (
        torch.inference_mode(),
        steer_h(loaded.pipe.components, spec.probe.hook, g, scale, expected_batch=len(units)),
    ):
        images = loaded.pipe(**pipeline_inputs(loaded, spec, units), output_type="np").images
    return (np.clip(np.asarray(images), 0.0, 1.0) * 255).round().astype(np.uint8)


def run_causal_check(
    spec: AuditSpec,
    plan: AuditPlan,
    root: Path,
    store: ActivationStore,
    captioner: Captioner,
    record: dict[str, Any],
    *,
    pipeline: Callable[[], LoadedPipeline],
    show_progress: bool = True,
) -> CausalStats:
    """Sample, read and store every job not done yet, then (re)write the causal tables.

    ``root`` is the run's ``captions/`` folder, ``store`` its activation store (for g),
    ``record`` the :func:`auditkit.caption.stage.captioner_record` of ``captioner``.
    ``pipeline`` is called (once) only when some job is missing.
    """
    started = time.perf_counter()
    axes = select_axes(spec, captioner_values(captioner, spec.model.resolution))
    directions = steering_directions(spec, plan, store, axes)
    jobs = plan_jobs(spec, plan, directions, str(record["key"]))
    chunks = CaptionStore(root / "causal", record)
    done = chunks.completed()
    todo = [j for j in jobs if j.job_id not in done]
    stats = CausalStats(len(jobs), 0, len(jobs) - len(todo), 0.0, False)
    if todo:
        loaded = pipeline()
        stats.model_loaded = True
        assert spec.captions is not None
        size = spec.captions.batch_size or spec.batch_size
        progress = Progress("causal", len(todo), enabled=show_progress)
        for name, direction in directions.items():
            mine = [j for j in todo if j.axis == name]
            for start in range(0, len(mine), size):
                batch = mine[start : start + size]
                units = [j.unit for j in batch]
                images = generate_steered_images(
                    loaded, spec, direction.vector, units, [j.alpha for j in batch]
                )
                # A chunk row is keyed by the job id (the store's ``unit_id`` column).
                keyed = [
                    WorkUnit(j.job_id, u.prompt_id, u.prompt, u.seed)
                    for j, u in zip(batch, units, strict=True)
                ]
                chunks.write_chunk(read_batch(captioner, keyed, images))
                stats.units_run += len(batch)
                progress.advance(len(batch))
    write_causal_tables(root, chunks, causal_prompts(spec, plan), directions, jobs)
    stats.seconds = round(time.perf_counter() - started, 3)
    return stats


__all__ = [
    "AXIS_COLUMNS",
    "CAUSAL_COLUMNS",
    "CAUSAL_SCHEMA_VERSION",
    "CURVE_COLUMNS",
    "DEFAULT_CAUSAL_SEEDS",
    "STEERING",
    "CausalJob",
    "CausalStats",
    "SteeringDirection",
    "captioner_values",
    "causal_prompts",
    "causal_seeds",
    "causal_units",
    "generate_steered_images",
    "plan_jobs",
    "read_causal",
    "run_causal_check",
    "select_axes",
    "steering_directions",
    "write_causal_tables",
]
