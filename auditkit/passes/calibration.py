"""The captioner's calibration (``captions.calibration``): how well it reads labelled images.

The captioner reads a labelled set (:mod:`auditkit.labelled`: a folder with a labels CSV, or a
toyworld draw) and, per attribute an axis names, the reads are counted against the labels
(:func:`auditkit.analyze.confusion.calibration_tables`): the confusion matrix with Wilson
intervals (``captions/reader_confusion.parquet``) and the accuracy per group, the captioner's
own bias (``captions/reader_accuracy.parquet``). The outputs analysis corrects the captioned
shares for that confusion (:mod:`auditkit.analyses.outputs`).

No pipeline is needed: the set is read once per (captioner key, set digest), recorded in
``captions/calibration.json``; a rerun with both unchanged reads nothing.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit.caption import Captioner
from auditkit.caption.models import captioner_values
from auditkit.errors import UsageError
from auditkit.labelled import LabelledSet, load_labelled
from auditkit.rundir import RunDir
from auditkit.spec.audit import AuditSpec

CALIBRATION_TABLES = ("reader_confusion", "reader_accuracy")
"""The tables the calibration writes (the ``reader`` slice declares them)."""
WHERE = "captions.calibration"


@dataclass(frozen=True)
class ReaderCalibration:
    """A captioner's calibration: its tables and what it was measured on."""

    confusion: pd.DataFrame
    accuracy: pd.DataFrame
    record: dict[str, Any]


def axis_groups(spec: AuditSpec) -> dict[str, list[str]]:
    """Attribute -> groups: every axis of the spec (an axis and a captioner attribute match by
    name)."""
    return {axis.name: [str(g) for g in axis.groups] for axis in spec.axes}


def load_calibration_set(spec: AuditSpec) -> LabelledSet:
    """The labelled set ``captions.calibration`` names (a UsageError, located, when it is
    missing or mislabelled)."""
    if spec.captions is None or spec.captions.calibration is None:
        raise UsageError(
            f"the spec has no {WHERE} section.",
            hint="add captions.calibration: {folder: DIR} (or {toyworld: 400} for a toyworld).",
        )
    return load_labelled(
        spec.captions.calibration,
        resolution=spec.model.resolution,
        groups=axis_groups(spec),
        model_id=spec.model.id,
        where=WHERE,
    )


def measure_reader(
    spec: AuditSpec,
    captioner: Captioner,
    record: dict[str, Any],
    labelled: LabelledSet | None = None,
) -> ReaderCalibration:
    """Read the calibration set with ``captioner`` and count the reads against the labels.

    Raises:
        UsageError: the set is unusable, or its labels name no attribute that both an axis
            names and the captioner reads.
    """
    from auditkit.analyze.confusion import calibration_tables

    labelled = labelled if labelled is not None else load_calibration_set(spec)
    reads_of = captioner_values(captioner, spec.model.resolution)
    labelled_any = {a for a in labelled.attributes if (labelled.labels[a].astype(str) != "").any()}
    groups = {a: g for a, g in axis_groups(spec).items() if a in labelled_any and a in reads_of}
    if not groups:
        raise UsageError(
            f"{WHERE}: the labels ({labelled.attributes}) name no attribute that both an axis "
            f"names ({sorted(axis_groups(spec))}) and the captioner reads ({sorted(reads_of)}).",
            hint="name the label columns after the axes (gender, skin, ...).",
        )
    batch = spec.captions.batch_size if spec.captions and spec.captions.batch_size else 0
    batch = batch or spec.batch_size
    reads: list[dict[str, str]] = []
    for start in range(0, len(labelled.images), batch):
        part = captioner.read(labelled.images[start : start + batch])
        if len(part) != len(labelled.images[start : start + batch]):
            raise RuntimeError(f"captioner {captioner.id!r} returned {len(part)} reads")
        reads.extend(part)
    confusion, accuracy = calibration_tables(labelled.labels, reads, groups)
    return ReaderCalibration(
        confusion,
        accuracy,
        {
            "key": calibration_key(record, labelled),
            "captioner_key": record["key"],
            "captioner_id": record["id"],
            "set_sha256": labelled.digest,
            "source": labelled.source,
            "n_images": len(labelled.images),
            "attributes": sorted(groups),
        },
    )


def calibration_key(record: dict[str, Any], labelled: LabelledSet) -> str:
    """What a stored calibration is valid for: the captioner key and the set's digest."""
    return hashlib.sha256(f"{record['key']}:{labelled.digest}".encode()).hexdigest()


def calibrate_run(
    spec: AuditSpec, captioner: Captioner, record: dict[str, Any], root: Path
) -> dict[str, Any]:
    """Measure the captioner on the calibration set into the run's ``captions/`` folder
    (``root``), unless a calibration for this captioner and set is there already. Returns the
    manifest record of the stage."""
    run = RunDir.of_folder(root)
    started = time.perf_counter()
    labelled = load_calibration_set(spec)
    key = calibration_key(record, labelled)
    stored = run.read_json("calibration") if run.has_json("calibration") else None
    have = all(run.has_table(name) for name in CALIBRATION_TABLES)
    if stored is not None and have and stored.get("calibration", {}).get("key") == key:
        return {**stored["calibration"], "images_read": 0, "seconds": 0.0}
    measured = measure_reader(spec, captioner, record, labelled)
    meta = {"captioner_id": str(record["id"]), "captioner_sha256": str(record["sha256"])}
    run.write_table("reader_confusion", measured.confusion, meta)
    run.write_table("reader_accuracy", measured.accuracy, meta)
    run.write_json(
        "calibration",
        {"schema_version": 1, "kind": "auditkit.calibration", "calibration": measured.record},
    )
    seconds = round(time.perf_counter() - started, 3)
    return {**measured.record, "images_read": len(labelled.images), "seconds": seconds}


__all__ = [
    "CALIBRATION_TABLES",
    "ReaderCalibration",
    "axis_groups",
    "calibrate_run",
    "calibration_key",
    "load_calibration_set",
    "measure_reader",
]
