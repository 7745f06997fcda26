"""Guidance sweep (optional): the concept prompts' images again, at other guidance scales.

Classifier-free guidance sharpens what a model draws: a concept drawn as a man 70% of the time
without guidance can be drawn as a man 95% of the time at the usual scale. For every scale in
``captions.guidance`` the captioned concept units are sampled again with that scale (same
seeds, noise, steps and resolution; only the guidance differs) and read by the same captioner.
Readings are stored like the captioning stage's, per unit and in atomic chunks, under a key of
the captioner *and* the scale (``captions/guidance/units/<key[:16]>/``), so the sweep resumes
and a rerun does nothing.

At the end ``captions/guidance_readings.parquet`` is (re)written: the readings table's columns
plus ``guidance``. The analysis turns it into per-scale output shares and the amplification
(``results/guidance.parquet``, ``results/amplification.parquet``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit.caption.stage import CaptionedPass, read_batch
from auditkit.caption.store import (
    READING_COLUMNS,
    CaptionStore,
    caption_prompts,
    reading_records,
    select_caption_units,
    typed_strings,
)
from auditkit.plan import AuditPlan, PlannedPrompt, WorkUnit
from auditkit.rundir import RunDir
from auditkit.sampling import Draw
from auditkit.spec.audit import AuditSpec

GUIDANCE_READING_COLUMNS = ["guidance", *READING_COLUMNS]


def sweep_record(record: dict[str, Any], scale: float) -> dict[str, Any]:
    """The captioner record of one guidance scale: its key also hashes the scale."""
    key = hashlib.sha256(f"{record['key']}|guidance={float(scale)!r}".encode()).hexdigest()
    return {**record, "key": key, "guidance_scale": float(scale)}


def sweep_units(spec: AuditSpec, plan: AuditPlan) -> list[WorkUnit]:
    """The captioned units of concept prompts (the sweep's units at every scale)."""
    concepts = {p.prompt_id for p in caption_prompts(spec, plan) if p.role == "concept"}
    return [u for u in select_caption_units(spec, plan) if u.prompt_id in concepts]


def run_guidance_sweep(inputs: CaptionedPass) -> dict[str, Any]:
    """Sample and read every missing (scale, unit); then write the readings table.

    Returns the manifest's ``stages.guidance`` entry.
    """
    spec, plan, root, record = inputs.spec, inputs.plan, inputs.root, inputs.record
    scales = list(spec.captions.guidance) if spec.captions is not None else []
    units = sweep_units(spec, plan)
    started = time.perf_counter()
    stores = {s: CaptionStore(root / "guidance", sweep_record(record, s)) for s in scales}
    done = {s: stores[s].completed() for s in scales}
    todo = {s: [u for u in units if u.unit_id not in done[s]] for s in scales}
    missing = sum(len(t) for t in todo.values())
    sampler = inputs.sampler()
    draws = [(scale, unit) for scale, pending in todo.items() for unit in pending]
    for batch, images in sampler.sample(draws, _draw, "guidance"):
        scale = batch[0][0]
        stores[scale].write_chunk(read_batch(inputs.captioner, [u for _, u in batch], images))
    _write_readings(root, spec, plan, stores, units)
    return {
        "scales": scales,
        "units_total": len(units) * len(scales),
        "units_run": missing,
        "units_skipped": len(units) * len(scales) - missing,
        "seconds": round(time.perf_counter() - started, 3),
        "model_loaded": sampler.model_loaded,
    }


def _draw(item: tuple[float, WorkUnit]) -> Draw:
    """The image of one unit at one swept scale."""
    scale, unit = item
    return Draw(unit, guidance_scale=scale)


def _write_readings(
    root: Path,
    spec: AuditSpec,
    plan: AuditPlan,
    stores: dict[float, CaptionStore],
    units: list[WorkUnit],
) -> None:
    run = RunDir.of_folder(root)
    if not stores:
        run.remove(run.table_path("guidance_readings"))
        return
    by_prompt: dict[str, list[PlannedPrompt]] = {}
    for prompt in caption_prompts(spec, plan):
        if prompt.role == "concept":
            by_prompt.setdefault(prompt.prompt_id, []).append(prompt)
    rows: list[dict[str, Any]] = []
    for scale, store in stores.items():
        stored = store.rows().set_index("unit_id")
        for unit in units:
            values = json.loads(str(stored.loc[unit.unit_id, "readings"]))
            for p in by_prompt[unit.prompt_id]:
                rows.extend(
                    {"guidance": float(scale), **record}
                    for record in reading_records(unit, p, values)
                )
    frame = pd.DataFrame(rows, columns=GUIDANCE_READING_COLUMNS)
    guidance = frame.pop("guidance").astype("float64")
    frame = typed_strings(frame)
    frame.insert(0, "guidance", guidance)
    run.write_table("guidance_readings", frame, {"captioner_id": str(_first(stores)["id"])})


def _first(stores: dict[float, CaptionStore]) -> dict[str, Any]:
    return next(iter(stores.values())).record


def read_guidance_readings(root: Path) -> pd.DataFrame | None:
    """``captions/guidance_readings.parquet`` of a run's captions folder, or None."""
    return RunDir.of_folder(root).table("guidance_readings")


__all__ = [
    "GUIDANCE_READING_COLUMNS",
    "read_guidance_readings",
    "run_guidance_sweep",
    "sweep_record",
    "sweep_units",
]
