"""The image-grounded axes' pass: labelled images read through the denoiser (``grounding:``).

The spec's ``grounding.images`` names labelled images (a folder with a labels CSV, or a toyworld
draw: :mod:`auditkit.labelled`). For every grounded axis (``grounding.axes``, or every two-group
axis the labels name) the first ``per_group`` images labelled with each of its two groups are
chosen; each chosen image is encoded with the model's VAE, noised to every step of the audit's
schedule and read at the audit's hook (:mod:`auditkit.extract.images`), and its h is stored in
the run's grounding store (``grounding/activations``, an activation store like the audit's),
keyed by a unit id of the extraction settings, the grounding prompt, the noise seed and the
image's pixels. Every image is noised with the same noise (``grounding.noise_seed``), so that
the noise's part of h cancels between the groups, as the audit's prompts share their seeds. A
rerun reads only the images whose units are missing, and loads the pipeline only if some are.
``grounding/grounding_images.parquet`` says which stored unit is which image of which group;
the ``grounding`` analysis slice (:mod:`auditkit.analyses.grounding`) reads both.

:func:`grounding_selection` loads and checks the images and is called before extraction, so a
missing image or a label that names no group stops the run before anything is sampled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from auditkit.analyze.grounding_fit import design_problem
from auditkit.errors import UsageError
from auditkit.extract.images import ImageUnit, extract_images
from auditkit.extract.runner import ExtractStats
from auditkit.extract.store import ActivationStore
from auditkit.labelled import LabelledSet, load_labelled
from auditkit.plan import WorkUnit, extraction_fingerprint
from auditkit.rundir import RunDir
from auditkit.spec.audit import AuditSpec
from auditkit.spec.base import listed
from auditkit.spec.grounding import GroundingSpec

if TYPE_CHECKING:
    from auditkit.executors import Executor
    from auditkit.models.loading import LoadedPipeline

IMAGES_TABLE = "grounding_images"
"""The table (declared by the grounding slice) that maps stored units to images and groups."""
IMAGE_COLUMNS = ("axis", "group", "file", "unit_id", "seed", "covariates")
WHERE = "grounding"


@dataclass(frozen=True)
class GroundingSelection:
    """The labelled images and, per grounded axis, the rows of its two groups' images."""

    labelled: LabelledSet
    axes: dict[str, tuple[np.ndarray, np.ndarray]]
    """axis -> (rows of its first group's images, rows of its second's), in labels order."""
    groups: dict[str, tuple[str, str]]
    """axis -> (first group, second group)."""
    adjusted: dict[str, list[str]] = field(default_factory=dict)
    """axis -> the label columns its image-derived axis is adjusted for."""

    @property
    def rows(self) -> list[int]:
        """Every chosen image's row, once, in labels order."""
        chosen = {int(r) for pos, neg in self.axes.values() for r in (*pos, *neg)}
        return sorted(chosen)


@dataclass
class GroundingStats(ExtractStats):
    """What the pass did (the manifest's ``stages.grounding``): extraction's counts, plus the
    labelled set and the axes grounded."""

    source: str = ""
    digest: str = ""
    images: int = 0
    axes: list[str] = field(default_factory=list)


def section_of(spec: AuditSpec) -> GroundingSpec:
    """``spec.grounding``; ValueError when the spec has none."""
    if spec.grounding is None:
        raise ValueError("the spec has no grounding section")
    return spec.grounding


def grounding_selection(spec: AuditSpec) -> GroundingSelection:
    """Load the labelled images ``grounding.images`` names and choose each grounded axis's.

    Raises:
        UsageError: the images or labels cannot be read, a label names no group of its axis,
            the labels name no grounded axis, or a group has fewer than two images (every
            problem is listed with where it is).
    """
    section = section_of(spec)
    two_group = {a.name: a for a in spec.axes if len(a.groups) == 2}
    labelled = load_labelled(
        section.images,
        resolution=spec.model.resolution,
        groups={name: list(axis.groups) for name, axis in two_group.items()},
        model_id=spec.model.id,
        where=f"{WHERE}.images",
    )
    columns = labelled.attributes
    named = section.axes
    if named is None:
        named = [name for name in two_group if name in columns]
        if not named:
            raise UsageError(
                f"{WHERE}.images: the labels ({labelled.source}) have no column named after a "
                f"two-group axis of the spec ({listed(two_group)}); their columns are "
                f"{listed(columns)}.",
                hint="name a label column after the axis (e.g. 'gender') with its groups in the "
                "cells, or list the axes to ground in grounding.axes.",
            )
    problems: list[str] = []
    chosen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    groups: dict[str, tuple[str, str]] = {}
    adjusted: dict[str, list[str]] = {}
    for j, extra in enumerate(section.adjust_for or []):
        if extra not in columns:
            problems.append(
                f"{WHERE}.adjust_for[{j}]: the labels have no column {extra!r} (their columns: "
                f"{listed(columns)})"
            )
    for j, name in enumerate(named):
        where = f"{WHERE}.axes[{j}]" if section.axes is not None else f"{WHERE}.images"
        if name not in columns:
            problems.append(
                f"{where}: the labels have no column {name!r} (their columns: {listed(columns)})"
            )
            continue
        first, second = list(two_group[name].groups)[:2]
        rows = []
        for group in (first, second):
            found = labelled.of(name, group)[: section.per_group]
            if len(found) < 2:
                problems.append(
                    f"{where}: {len(found)} image(s) labelled {name} = {group!r}; grounding "
                    "needs at least 2 per group"
                )
            rows.append(found)
        chosen[name] = (rows[0], rows[1])
        groups[name] = (first, second)
        wanted = section.adjust_for if section.adjust_for is not None else columns
        adjusted[name] = [c for c in wanted if c != name and c in columns]
        if all(len(r) >= 2 for r in rows):
            problem = design_problem(
                np.concatenate([np.ones(len(rows[0]), bool), np.zeros(len(rows[1]), bool)]),
                {c: labelled.labels[c].astype(str).to_numpy()[np.concatenate(rows)]
                 for c in adjusted[name]},
            )  # fmt: skip
            if problem:
                problems.append(f"{WHERE}.adjust_for: axis {name!r}: {problem}")
    if problems:
        raise UsageError(
            f"{WHERE}: {len(problems)} problem(s) with the labelled images "
            f"({labelled.source}):\n  " + "\n  ".join(problems),
            hint="fix each problem listed: at least two labelled images per group of every "
            "grounded axis, and attributes to adjust for that the labels name and that do not "
            "separate the groups.",
        )
    return GroundingSelection(labelled, chosen, groups, adjusted)


def image_units(spec: AuditSpec, selection: GroundingSelection) -> dict[int, ImageUnit]:
    """The store unit of every chosen image, by its row. A unit id names the extraction
    settings (as a prompt's unit does), the grounding prompt, the noise seed (the same for
    every image: ``grounding.noise_seed``) and the image's pixels, so the same image read the
    same way is one unit."""
    section = section_of(spec)
    prompt, seed = section.prompt, section.noise_seed
    settings = json.dumps(extraction_fingerprint(spec), sort_keys=True, default=str)
    fingerprint = hashlib.sha256(settings.encode()).hexdigest()
    units = {}
    for row in selection.rows:
        pixels = np.ascontiguousarray(selection.labelled.images[row])
        pixel_sha = hashlib.sha256(pixels.tobytes()).hexdigest()
        unit_id = hashlib.sha256(
            json.dumps([fingerprint, "grounding", prompt, seed, pixel_sha]).encode()
        ).hexdigest()[:24]
        units[row] = ImageUnit(WorkUnit(unit_id, f"image-{pixel_sha[:16]}", prompt, seed), row)
    return units


def images_table(selection: GroundingSelection, units: dict[int, ImageUnit]) -> pd.DataFrame:
    """One row per (grounded axis, chosen image): which stored unit holds it."""
    labels = selection.labelled.labels
    rows: list[dict[str, Any]] = []
    for axis, (pos, neg) in selection.axes.items():
        columns = selection.adjusted.get(axis, [])
        for group, found in zip(selection.groups[axis], (pos, neg), strict=True):
            for row in found:
                unit = units[int(row)].unit
                rows.append(
                    {
                        "axis": axis,
                        "group": group,
                        "file": str(labels["file"].iloc[int(row)]),
                        "unit_id": unit.unit_id,
                        "seed": int(unit.seed),
                        "covariates": json.dumps(
                            {c: str(labels[c].iloc[int(row)]) for c in columns}, sort_keys=True
                        ),
                    }
                )
    return pd.DataFrame(rows, columns=[*IMAGE_COLUMNS])


def run_grounding(
    spec: AuditSpec,
    selection: GroundingSelection,
    run: RunDir,
    source: Executor | LoadedPipeline,
    *,
    show_progress: bool = True,
) -> GroundingStats:
    """Read every chosen image not yet in the run's grounding store and store its h; write the
    images table. Damaged shards of the store are set aside first (their images are read
    again)."""
    import sys

    store = ActivationStore(run.grounding_activations)
    for line in store.heal():
        print(f"auditkit: {line}", file=sys.stderr)
    units = image_units(spec, selection)
    run.write_table(IMAGES_TABLE, images_table(selection, units))
    distinct = list({u.unit.unit_id: u for u in units.values()}.values())
    stats = extract_images(
        source, spec, distinct, selection.labelled.images, store, show_progress=show_progress
    )
    return GroundingStats(
        **stats.__dict__,
        source=selection.labelled.source,
        digest=selection.labelled.digest,
        images=len(units),
        axes=list(selection.axes),
    )


__all__ = [
    "IMAGES_TABLE",
    "GroundingSelection",
    "GroundingStats",
    "grounding_selection",
    "image_units",
    "images_table",
    "run_grounding",
]
