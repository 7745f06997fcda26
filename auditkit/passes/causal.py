"""The causal check (optional): a dose-response curve per axis.

Association is not causation (METHOD.md): that the concept "nurse" lies towards "woman" in
h-space does not show that the model *uses* that direction to draw women. The causal check
intervenes. For each selected two-group axis, with direction g = G(first group) - G(second
group) computed from the run's stored prompt latents exactly as the analysis computes it
(:func:`auditkit.analyze.causal.steering_directions`), the concept prompts are sampled again
while ``alpha * g`` is added to the hook point's output (:func:`auditkit.extract.hooks.steer_h`),
the images are decoded and read by the captioner, and the share read as the first group is
tabulated against alpha.

**Units of alpha.** g is one step-mean h difference, reshaped to the hook output's shape
[C, H, W]; it is added unchanged at *every* denoising step and to *both* classifier-free-guidance
halves (the unconditional half too, so guidance does not cancel the shift). alpha = 1 moves h
by the whole gap between the two groups' prompts, alpha = -1 by the same amount the other way,
alpha = 0 samples exactly as extraction and the captioning stage do. That needs the stored h to
be the full output (``probe.spatial_pool: none``) averaged over steps (``aggregation: mean``);
the spec refuses other settings.

**Sampling.** Through :class:`auditkit.sampling.Sampler`: every image starts from the same
seeded per-unit noise as extraction, so the curve compares the *same* trajectories at different
alphas: paired, not independent, samples.

**Resume.** A steered image is a *job* (axis, alpha, unit) whose id hashes the axis, alpha,
unit id, captioner key and the sha256 of the direction (so new activations or another captioner
never reuse stale readings). Readings are stored in atomic chunks
(:class:`auditkit.caption.store.CaptionStore` under ``captions/causal/``); an interrupted stage
resumes with the missing jobs, and a rerun with every job done does not load the diffusion model.

At the end of every pass the tables of :func:`auditkit.analyze.causal.causal_tables`
(``captions/causal.parquet``, ``causal_curve.parquet``, ``causal_axes.parquet``; schema:
docs/run-directory.md) are rewritten from the stored readings.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from auditkit.analyze.causal import (
    IMAGE_COLUMNS,
    SteeringDirection,
    causal_tables,
    steering_directions,
)
from auditkit.caption.models import captioner_values
from auditkit.caption.stage import CaptionedPass, CaptionStats, read_batch
from auditkit.caption.store import CaptionStore
from auditkit.errors import UsageError
from auditkit.extract.store import ActivationStore
from auditkit.plan import AuditPlan, PlannedPrompt, WorkUnit
from auditkit.rundir import RunDir
from auditkit.sampling import Draw, Steering
from auditkit.spec.audit import AuditSpec
from auditkit.spec.captions import CausalSpec
from auditkit.spec.vocabulary import AxisSpec

DEFAULT_CAUSAL_SEEDS = 16
"""Seeds per concept prompt and alpha when ``captions.causal.seeds`` is not given."""
STEERING = "add alpha*g to the hook output at every step, both guidance halves (v1)"
"""What a job's alpha means; part of every job id, so a change of method never reuses readings."""


CausalStats = CaptionStats
"""What one pass of the causal check did (the manifest's ``stages.causal``): the same counts
as a captioning pass."""


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


def run_causal_check(inputs: CaptionedPass, store: ActivationStore) -> CausalStats:
    """Sample, read and store every job not done yet, then (re)write the causal tables.

    ``store`` is the run's activation store (for g).
    """
    spec, plan, root, captioner = inputs.spec, inputs.plan, inputs.root, inputs.captioner
    record = inputs.record
    started = time.perf_counter()
    axes = select_axes(spec, captioner_values(captioner, spec.model.resolution))
    directions = steering_directions(spec, plan, store, axes)
    jobs = plan_jobs(spec, plan, directions, str(record["key"]))
    chunks = CaptionStore(root / "causal", record)
    done = chunks.completed()
    todo = [j for j in jobs if j.job_id not in done]  # axis by axis, as plan_jobs orders them
    stats = CausalStats(len(jobs), 0, len(jobs) - len(todo), 0.0, False)
    sampler = inputs.sampler()

    def draw(job: CausalJob) -> Draw:
        return Draw(job.unit, steering=Steering(job.axis, directions[job.axis].vector, job.alpha))

    for batch, images in sampler.sample(todo, draw, "causal"):
        # A chunk row is keyed by the job id (the store's ``unit_id`` column).
        keyed = [WorkUnit(j.job_id, j.unit.prompt_id, j.unit.prompt, j.unit.seed) for j in batch]
        chunks.write_chunk(read_batch(captioner, keyed, images))
        stats.units_run += len(batch)
    stats.model_loaded = sampler.model_loaded
    write_causal_tables(root, chunks, causal_prompts(spec, plan), directions, jobs)
    stats.seconds = round(time.perf_counter() - started, 3)
    return stats


def write_causal_tables(
    root: Path,
    chunks: CaptionStore,
    prompts: Sequence[PlannedPrompt],
    directions: Mapping[str, SteeringDirection],
    jobs: Sequence[CausalJob],
) -> None:
    """(Re)write the three causal tables (:func:`auditkit.analyze.causal.causal_tables`) from
    the stored readings of ``jobs`` (steered samples of ``prompts``, the check's concept
    prompts)."""
    stored = chunks.rows().set_index("unit_id")["readings"]
    value = {
        j.job_id: str(json.loads(str(stored.loc[j.job_id])).get(j.axis, "unknown")) for j in jobs
    }
    images = pd.DataFrame(
        [
            {
                "axis": j.axis,
                "alpha": j.alpha,
                "prompt_id": j.unit.prompt_id,
                "seed": j.unit.seed,
                "value": value[j.job_id],
            }
            for j in jobs
        ],
        columns=IMAGE_COLUMNS,
    )
    meta = {"captioner_id": str(chunks.record["id"]), "captioner_sha256": chunks.record["sha256"]}
    run = RunDir.of_folder(root)
    for name, frame in causal_tables(images, prompts, directions).items():
        run.write_table(name, frame, meta)


__all__ = [
    "DEFAULT_CAUSAL_SEEDS",
    "STEERING",
    "CausalJob",
    "CausalStats",
    "causal_prompts",
    "causal_seeds",
    "causal_units",
    "plan_jobs",
    "run_causal_check",
    "select_axes",
    "write_causal_tables",
]
