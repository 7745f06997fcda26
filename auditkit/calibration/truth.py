"""What a model draws: per concept and attribute, the share of images its own reader reads as
the attribute's first group, at many seeds. This is the truth the calibration suite scores
every significance rule against (a model trained on 50/50 data can still draw 60/40).

The truth is stored with the model, as ``truth.json`` beside its weights, so that the suite
runs offline and the number a rule is scored against never moves between runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditkit.analyze.stats import wilson_interval
from auditkit.errors import UsageError
from auditkit.rundir import read_versioned_json

TRUTH_FILE = "truth.json"
TRUTH_SCHEMA_VERSION = 1
TRUTH_SEED_OFFSET = 100_000
"""Truth seeds start here, so they never overlap the seeds an audit or the suite samples."""

Reader = Callable[[np.ndarray], list[dict[str, str]]]


@dataclass(frozen=True)
class TruthSettings:
    """How the truth was sampled: the audit settings it stands for, and the reader."""

    templates: tuple[str, ...]
    concepts: tuple[str, ...]
    attributes: dict[str, tuple[str, str]]
    seeds: int
    guidance_scale: float
    steps: int


def measure_truth(
    generate: Callable[[list[str], list[int]], np.ndarray],
    read: Reader,
    settings: TruthSettings,
) -> list[dict[str, Any]]:
    """Sample ``settings.seeds`` images per concept (the templates take turns by seed), read
    them, and return one row per (attribute, concept): the share read as the first group,
    with its Wilson 95% interval.

    ``generate(prompts, seeds)`` returns uint8 images, prompt-major, one per (prompt, seed).
    """
    n_templates = len(settings.templates)
    seeds = [TRUTH_SEED_OFFSET + i for i in range(settings.seeds)]
    rows: list[dict[str, Any]] = []
    readings: dict[str, list[dict[str, str]]] = {c: [] for c in settings.concepts}
    for t, template in enumerate(settings.templates):
        own = [s for i, s in enumerate(seeds) if i % n_templates == t]
        prompts = [template.replace("{term}", c) for c in settings.concepts]
        images = generate(prompts, own)
        read_back = read(images)
        for i, concept in enumerate(settings.concepts):
            readings[concept].extend(read_back[i * len(own) : (i + 1) * len(own)])
    for attribute, (first, second) in settings.attributes.items():
        for concept in settings.concepts:
            values = [r[attribute] for r in readings[concept]]
            hits = sum(v == first for v in values)
            low, high = wilson_interval(hits, len(values))
            rows.append(
                {
                    "attribute": attribute,
                    "concept": concept,
                    "first_group": first,
                    "second_group": second,
                    "share": round(hits / len(values), 5),
                    "ci_low": round(low, 5),
                    "ci_high": round(high, 5),
                    "images": len(values),
                }
            )
    return rows


def write_truth(
    folder: Path,
    rows: list[dict[str, Any]],
    settings: TruthSettings,
    *,
    reader: dict[str, str],
    seconds: float,
) -> Path:
    """Write ``truth.json`` into a model folder and return its path."""
    document = {
        "schema_version": TRUTH_SCHEMA_VERSION,
        "kind": "auditkit.calibration.truth",
        "meaning": "share of the model's images its reader reads as first_group, per concept",
        "settings": {
            "templates": list(settings.templates),
            "concepts": list(settings.concepts),
            "attributes": {a: list(g) for a, g in settings.attributes.items()},
            "seeds": settings.seeds,
            "first_seed": TRUTH_SEED_OFFSET,
            "guidance_scale": settings.guidance_scale,
            "steps": settings.steps,
        },
        "reader": reader,
        "seconds": round(seconds, 1),
        "rows": rows,
    }
    path = Path(folder) / TRUTH_FILE
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def read_truth(folder: Path) -> dict[str, Any]:
    """The truth stored with a model, or a located error."""
    path = Path(folder) / TRUTH_FILE
    if not path.is_file():
        raise UsageError(
            f"{str(path)!r} does not exist: this model has no stored truth.",
            hint="measure it with 'auditkit calibrate truth MODEL_FOLDER'.",
        )
    return read_versioned_json(path, newest=TRUTH_SCHEMA_VERSION, kind="calibration truth")


def toyworld_truth(
    folder: Path,
    captioner_dir: Path,
    *,
    templates: Sequence[str],
    concepts: Sequence[str],
    attributes: dict[str, tuple[str, str]],
    seeds: int = 512,
    guidance_scale: float = 4.0,
    steps: int = 10,
    device: str = "cpu",
    words: dict[str, str] | None = None,
) -> Path:
    """Measure and store the truth of a toyworld-style checkpoint read by its captioner;
    ``words`` maps the reader's labels to the words of the model's world ("young" ->
    "junior" in the reworded world)."""
    import torch
    from diffusers import StableDiffusionPipeline

    from auditkit.models.loading import dtype_keyword, quiet_libraries
    from auditkit.toyworld.captioner import load_captioner
    from auditkit.toyworld.evaluate import generate

    quiet_libraries()
    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), local_files_only=True, **{dtype_keyword(): torch.float32}
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    captioner = load_captioner(Path(captioner_dir))
    settings = TruthSettings(
        tuple(templates), tuple(concepts), dict(attributes), seeds, guidance_scale, steps
    )
    started = time.perf_counter()
    rows = measure_truth(
        lambda prompts, own: generate(
            pipe, prompts, own, guidance_scale=guidance_scale, steps=steps
        ),
        lambda images: [
            {a: (words or {}).get(v, v) for a, v in r.items()} for r in captioner.read(images)
        ],
        settings,
    )
    reader = {"id": captioner.id, "sha256": captioner.sha256}
    return write_truth(folder, rows, settings, reader=reader, seconds=time.perf_counter() - started)
