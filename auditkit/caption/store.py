"""The captions a run keeps: per-unit captions of each captioner in atomic chunks
(:class:`CaptionStore`, under ``captions/units/<key>/``), which units are selected for reading,
and the tidy tables written from the chunks of the current captioner:

* ``captions/captions.parquet``: one row per (selected prompt occurrence, seed): the caption.
* ``captions/readings.parquet``: one row per (selected prompt occurrence, seed, attribute).
* ``captions/captioner.json``: the captioner's kind, id, sha256, key and options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit.caption.thumbnails import (
    ThumbnailStore,
    UnitChunks,
    exemplar_seeds,
    exemplar_table,
    write_exemplars,
)
from auditkit.plan import AuditPlan, PlannedPrompt, WorkUnit
from auditkit.rundir import (
    REGISTRY,
    RunDir,
    parquet_bytes,
    read_versioned_parquet,
    write_bytes_atomic,
    write_json_atomic,
)
from auditkit.spec.audit import AuditSpec
from auditkit.spec.captions import CaptionsSpec

CAPTIONS_SCHEMA_VERSION = 1
CAPTION_COLUMNS = REGISTRY["captions"].names
READING_COLUMNS = REGISTRY["readings"].names
_CHUNK_COLUMNS = ["unit_id", "prompt_id", "seed", "caption", "readings"]


def caption_prompts(spec: AuditSpec, plan: AuditPlan) -> list[PlannedPrompt]:
    """Planned prompts whose role the captions section selects, in plan order."""
    captions = section(spec)
    return [p for p in plan.prompts if p.role in captions.roles]


def select_caption_units(spec: AuditSpec, plan: AuditPlan) -> list[WorkUnit]:
    """The units to decode and caption: selected roles x the first ``captions.seeds`` seeds."""
    captions = section(spec)
    seeds = set(spec.seed_list[: captions.seeds] if captions.seeds else spec.seed_list)
    prompt_ids = {p.prompt_id for p in caption_prompts(spec, plan)}
    return [u for u in plan.units if u.prompt_id in prompt_ids and u.seed in seeds]


class CaptionStore(UnitChunks):
    """Per-unit captions of one captioner under ``root/units/<key[:16]>/``, in atomic chunks.

    A chunk is a parquet file of complete rows (unit id, caption, readings as JSON); a unit
    counts as captioned once a chunk holding it is on disk, so an interrupted stage loses at
    most the batch in flight.
    """

    columns = _CHUNK_COLUMNS

    def __init__(self, root: Path, record: dict[str, Any]) -> None:
        self.root = root
        self.record = record
        self.folder = root / "units" / str(record["key"])[:16]

    def read_chunk(self, path: Path) -> pd.DataFrame:
        return read_versioned_parquet(path, newest=CAPTIONS_SCHEMA_VERSION)

    def write_chunk(self, rows: list[dict[str, Any]]) -> None:
        """Store one batch of rows atomically (its first unit id names the file)."""
        if not rows:
            return
        if not (self.folder / "captioner.json").is_file():
            write_json_atomic(self.folder / "captioner.json", self.captioner_json())
        frame = pd.DataFrame(rows, columns=_CHUNK_COLUMNS)
        path = self.folder / f"chunk-{rows[0]['unit_id']}.parquet"
        write_bytes_atomic(path, parquet_bytes(frame, CAPTIONS_SCHEMA_VERSION))

    def captioner_json(self) -> dict[str, Any]:
        """The content of ``captioner.json``: the record, versioned."""
        return {
            "schema_version": CAPTIONS_SCHEMA_VERSION,
            "kind": "auditkit.captioner",
            "captioner": self.record,
        }


def write_caption_tables(root: Path, store: CaptionStore, spec: AuditSpec, plan: AuditPlan) -> None:
    """(Re)write ``captions.parquet``, ``readings.parquet`` and ``captioner.json`` from the
    stored chunks of the current captioner, for the currently selected units only."""
    stored = store.rows().set_index("unit_id")
    by_prompt: dict[str, list[PlannedPrompt]] = {}
    for prompt in caption_prompts(spec, plan):
        by_prompt.setdefault(prompt.prompt_id, []).append(prompt)
    caption_rows: list[dict[str, Any]] = []
    reading_rows: list[dict[str, Any]] = []
    for unit in select_caption_units(spec, plan):
        row = stored.loc[unit.unit_id]
        values = json.loads(str(row["readings"]))
        for p in by_prompt[unit.prompt_id]:
            caption_rows.append(
                {
                    "unit_id": unit.unit_id,
                    **p.record(),
                    "seed": int(unit.seed),
                    "caption": str(row["caption"]),
                }
            )
            reading_rows.extend(reading_records(unit, p, values))
    meta = {"captioner_id": str(store.record["id"]), "captioner_sha256": store.record["sha256"]}
    tables = {
        "captions": typed_strings(pd.DataFrame(caption_rows, columns=CAPTION_COLUMNS)),
        "readings": typed_strings(pd.DataFrame(reading_rows, columns=READING_COLUMNS)),
    }
    run = RunDir.of_folder(root)
    for name, frame in tables.items():
        run.write_table(name, frame, meta)
    run.write_json("captioner", store.captioner_json())
    exemplar = set(exemplar_seeds(spec))
    captions = tables["captions"]
    chosen = captions[captions["seed"].isin(exemplar)] if exemplar else captions.iloc[:0]
    thumbs = ThumbnailStore(root, section(spec).exemplars)
    write_exemplars(root, exemplar_table(chosen, stored["readings"], thumbs), meta)


def reading_records(
    unit: WorkUnit, prompt: PlannedPrompt, values: dict[str, str]
) -> list[dict[str, Any]]:
    """Rows of the readings table (:data:`READING_COLUMNS`) for one unit read as ``values``,
    under one of its prompt's occurrences."""
    return [
        {
            "unit_id": unit.unit_id,
            "prompt_id": prompt.prompt_id,
            "role": prompt.role,
            "concept_set": prompt.set_name,
            "concept": prompt.term,
            "group": prompt.group,
            "template": prompt.template,
            "seed": int(unit.seed),
            "attribute": attribute,
            "value": value,
        }
        for attribute, value in values.items()
    ]


def read_captions(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The captions and readings tables of a run's ``captions/`` folder and its captioner.

    Raises:
        UsageError: the run has no captions.
        SchemaVersionError: a file was written by a newer auditkit.
    """
    run = RunDir.of_folder(root)
    record = run.read_json("captioner")
    captions = run.table("captions", required=True)
    readings = run.table("readings", required=True)
    assert captions is not None and readings is not None
    return captions, readings, dict(record["captioner"])


def section(spec: AuditSpec) -> CaptionsSpec:
    if spec.captions is None:
        raise ValueError("the spec has no captions section: the captioning stage is off")
    return spec.captions


def typed_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Strings as str and ``seed`` as int64, also for an empty table."""
    for column in frame.columns:
        frame[column] = frame[column].astype("int64" if column == "seed" else str)
    return frame


__all__ = [
    "CAPTIONS_SCHEMA_VERSION",
    "CAPTION_COLUMNS",
    "READING_COLUMNS",
    "CaptionStore",
    "caption_prompts",
    "read_captions",
    "reading_records",
    "section",
    "select_caption_units",
    "typed_strings",
    "write_caption_tables",
]
