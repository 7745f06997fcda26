"""Stage 4 (optional): decode the images of selected units and read them with a captioner.

Only when the spec has a ``captions`` section. The image captioned is the one whose h was
stored. Extraction decodes the batches that hold selected (prompt, seed) units in the pipeline
call that captures their h and hands the images to this stage's :class:`CaptionReader`, so a
run that extracts them pays one VAE decode and one captioner forward per image, not a second
trajectory. A selected unit whose h was stored earlier without its image (a run that had no
captions section, an older auditkit, a stage interrupted between the two) is sampled again
through :class:`auditkit.sampling.Sampler` with the inputs extraction used (the unit's seeded
initial noise and generator, the same steps, guidance and resolution), this time decoding to
pixels.

Captions are stored per unit under a *captioner key* (captioner kind, weights sha256 and every
option that changes what it reads), in chunks written atomically; an interrupted stage resumes
with the missing units only, and another captioner gets a folder of its own instead of mixing
its captions with the old ones. At the end the tidy tables of the current captioner are
(re)written:

* ``captions/captions.parquet``: one row per (selected prompt occurrence, seed): the caption.
* ``captions/readings.parquet``: one row per (selected prompt occurrence, seed, attribute).
* ``captions/captioner.json``: the captioner's kind, id, sha256, key and options.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditkit.caption import Captioner
from auditkit.caption.thumbnails import (
    ThumbnailStore,
    UnitChunks,
    exemplar_seeds,
    exemplar_table,
    write_exemplars,
)
from auditkit.executors import Executor
from auditkit.models.loading import LoadedPipeline
from auditkit.plan import AuditPlan, PlannedPrompt, WorkUnit
from auditkit.rundir import (
    REGISTRY,
    RunDir,
    parquet_bytes,
    read_versioned_parquet,
    write_bytes_atomic,
    write_json_atomic,
)
from auditkit.sampling import Draw, Sampler
from auditkit.spec.audit import AuditSpec
from auditkit.spec.captions import CaptionerSpec, CaptionsSpec

CAPTIONS_SCHEMA_VERSION = 1
CAPTION_COLUMNS = REGISTRY["captions"].names
READING_COLUMNS = REGISTRY["readings"].names
_CHUNK_COLUMNS = ["unit_id", "prompt_id", "seed", "caption", "readings"]


@dataclass
class CaptionStats:
    """What one captioning pass did (recorded in the manifest under ``stages.caption``)."""

    units_total: int
    units_run: int
    units_skipped: int
    seconds: float
    model_loaded: bool
    thumbnails: int = 0

    def to_json(self) -> dict[str, Any]:
        """Manifest form."""
        return dict(self.__dict__)


def caption_options(spec: CaptionerSpec) -> dict[str, Any]:
    """Keyword options for :func:`auditkit.caption.models.load_captioner` (none for toyworld;
    a custom reader's adapter, which also enters the captioner key, and device)."""
    if spec.kind == "toyworld":
        return {}
    if spec.kind == "custom":
        return {"adapter": spec.adapter, "device": spec.device}
    options: dict[str, Any] = {
        "device": spec.device,
        "dtype": spec.dtype,
        "revision": spec.revision,
        "trust_remote_code": spec.trust_remote_code,
    }
    if spec.attributes is not None:
        options["attributes"] = spec.attributes
    if spec.kind == "image-to-text":
        options["prompt"] = spec.prompt
        options["max_new_tokens"] = spec.max_new_tokens
    return options


def load_spec_captioner(spec: CaptionerSpec, *, deferred: bool = False) -> Captioner:
    """Load the captioner a spec names (see :func:`auditkit.caption.models.load_captioner`).

    ``deferred``: where the weight files name it, return a captioner whose model loads at its
    first read (:func:`auditkit.caption.models.deferred_captioner`), so a finished stage never
    loads it.
    """
    from auditkit.caption.models import deferred_captioner, load_captioner

    load = deferred_captioner if deferred else load_captioner
    captioner = load(spec.kind, spec.id, **caption_options(spec))
    if spec.misread is None:
        return captioner
    from auditkit.caption.misread import MisreadCaptioner

    return MisreadCaptioner(captioner, **spec.misread.model_dump())


def captioner_record(spec: CaptionerSpec, captioner: Captioner) -> dict[str, Any]:
    """Provenance of a loaded captioner; ``key`` addresses its stored captions.

    The key hashes what decides the captions: the kind, the weights' sha256 and the options
    that change what is read (keywords or label prompts, prompt, length, dtype). Where the
    weights sit, the device and the revision name do not enter it (the sha256 covers them).
    """
    options = caption_options(spec)
    identity = {k: v for k, v in options.items() if k not in ("device", "revision")}
    identity.pop("trust_remote_code", None)
    payload = {"kind": spec.kind, "sha256": captioner.sha256, "options": identity}
    if spec.misread is not None:  # a deliberate error: other reads, another key
        options["misread"] = spec.misread.model_dump()
        payload["misread"] = options["misread"]
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {
        "kind": spec.kind,
        "id": captioner.id,
        "sha256": captioner.sha256,
        "key": hashlib.sha256(text.encode()).hexdigest(),
        "options": options,
    }


def caption_prompts(spec: AuditSpec, plan: AuditPlan) -> list[PlannedPrompt]:
    """Planned prompts whose role the captions section selects, in plan order."""
    captions = _section(spec)
    return [p for p in plan.prompts if p.role in captions.roles]


def select_caption_units(spec: AuditSpec, plan: AuditPlan) -> list[WorkUnit]:
    """The units to decode and caption: selected roles x the first ``captions.seeds`` seeds."""
    captions = _section(spec)
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


@dataclass(frozen=True)
class CaptionedPass:
    """The inputs of a pass that samples images and reads them: the captioning stage, the
    guidance sweep and the causal check.

    ``root`` is the run's ``captions/`` folder; ``record`` is :func:`captioner_record` of
    ``captioner``; ``pipeline`` is called (once) only when some image is missing, so a finished
    pass never loads the diffusion model.
    """

    spec: AuditSpec
    plan: AuditPlan
    root: Path
    captioner: Captioner
    record: dict[str, Any]
    pipeline: Executor | Callable[[], LoadedPipeline]
    show_progress: bool = True

    def sampler(self) -> Sampler:
        """The sampling service for this pass's draws."""
        return Sampler(self.spec, self.pipeline, show_progress=self.show_progress)


class CaptionReader:
    """Reads the images of the selected units not yet read by this captioner (and keeps the
    exemplar seeds' thumbnails), wherever the images come from: extraction hands over the
    images of the batches it decodes (:class:`auditkit.extract.runner.ImageReader`), and
    :func:`caption_images` samples the rest again."""

    def __init__(self, inputs: CaptionedPass) -> None:
        spec, plan = inputs.spec, inputs.plan
        self.captioner = inputs.captioner
        self.store = CaptionStore(inputs.root, inputs.record)
        self.thumbs = ThumbnailStore(inputs.root, _section(spec).exemplars)
        self.units = select_caption_units(spec, plan)
        self.done = self.store.completed()
        exemplar = set(exemplar_seeds(spec))
        have_thumb = self.thumbs.completed() if exemplar else set()
        self.need_thumb = {
            u.unit_id for u in self.units if u.seed in exemplar and u.unit_id not in have_thumb
        }
        self.wanted = {u.unit_id for u in self.units if u.unit_id not in self.done}
        self.wanted |= self.need_thumb
        self.read = 0
        self.thumbnails = 0
        self.error: str | None = None

    def take(self, units: Sequence[WorkUnit], images: np.ndarray) -> None:
        """Read the uint8 images [N, H, W, 3] of ``units`` (each stored in one chunk) and keep
        the thumbnails wanted among them."""
        self.wanted.difference_update(u.unit_id for u in units)
        unread = [i for i, u in enumerate(units) if u.unit_id not in self.done]
        if unread:
            chosen = [units[i] for i in unread]
            self.store.write_chunk(read_batch(self.captioner, chosen, images[unread]))
            self.done.update(u.unit_id for u in chosen)
            self.read += len(unread)
        thumbed = [i for i, u in enumerate(units) if u.unit_id in self.need_thumb]
        self.thumbs.write_chunk([units[i] for i in thumbed], images[thumbed])
        self.need_thumb.difference_update(units[i].unit_id for i in thumbed)
        self.thumbnails += len(thumbed)

    def hand_over(self, units: Sequence[WorkUnit], images: np.ndarray) -> None:
        """:meth:`take`, for images another pass made: a captioner that fails here (a broken
        adapter) stops the reading, not that pass. Its units stay unread, so the captioning
        stage samples them again and meets the error in its own place, after the reader's
        calibration (``error`` keeps the message)."""
        if self.error is not None:
            return
        try:
            self.take(units, images)
        except Exception as exc:  # the stage that owns the reader raises it again
            self.error = f"{type(exc).__name__}: {exc}"
            self.wanted.clear()


def caption_images(inputs: CaptionedPass) -> CaptionStats:
    """Caption every selected unit not yet read by this captioner (extraction reads those it
    decodes, :class:`CaptionReader`; the rest are sampled again here), then write the
    tables."""
    reader = CaptionReader(inputs)
    units = reader.units
    todo = [u for u in units if u.unit_id in reader.wanted]
    started = time.perf_counter()
    missing = sum(u.unit_id not in reader.done for u in units)
    stats = CaptionStats(len(units), 0, len(units) - missing, 0.0, False)
    sampler = inputs.sampler()
    for batch, images in sampler.sample(todo, Draw, "caption"):
        reader.take(batch, images)
    stats.units_run = reader.read
    stats.thumbnails = reader.thumbnails
    stats.model_loaded = sampler.model_loaded
    write_caption_tables(inputs.root, reader.store, inputs.spec, inputs.plan)
    stats.seconds = round(time.perf_counter() - started, 3)
    return stats


def read_batch(
    captioner: Captioner, units: Sequence[WorkUnit], images: np.ndarray
) -> list[dict[str, Any]]:
    texts = captioner.caption(images)
    readings = _readings(captioner, images, texts)
    if len(texts) != len(units) or len(readings) != len(units):
        raise RuntimeError(
            f"captioner {captioner.id!r} returned {len(texts)} captions and {len(readings)} "
            f"readings for {len(units)} images"
        )
    return [
        {
            "unit_id": u.unit_id,
            "prompt_id": u.prompt_id,
            "seed": int(u.seed),
            "caption": str(text),
            "readings": json.dumps({str(k): str(v) for k, v in reading.items()}, sort_keys=True),
        }
        for u, text, reading in zip(units, texts, readings, strict=True)
    ]


def _readings(captioner: Captioner, images: np.ndarray, texts: list[str]) -> list[dict[str, str]]:
    """``captioner.read(images)``; an image-to-text captioner reads the captions just made
    instead of generating them a second time (what its ``read`` would do)."""
    from auditkit.caption.image_to_text import ImageToTextCaptioner, read_keywords
    from auditkit.caption.misread import MisreadCaptioner
    from auditkit.caption.models import DeferredCaptioner

    if isinstance(captioner, MisreadCaptioner):
        return captioner.apply(_readings(captioner.inner, images, texts))
    if isinstance(captioner, DeferredCaptioner):
        captioner = captioner.model()
    if isinstance(captioner, ImageToTextCaptioner):
        return [read_keywords(captioner._generated_part(t), captioner.attributes) for t in texts]
    return captioner.read(images)


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
    thumbs = ThumbnailStore(root, _section(spec).exemplars)
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


def _section(spec: AuditSpec) -> CaptionsSpec:
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
    "CaptionStats",
    "CaptionStore",
    "CaptionedPass",
    "caption_images",
    "caption_options",
    "captioner_record",
    "load_spec_captioner",
    "read_captions",
    "reading_records",
    "select_caption_units",
    "write_caption_tables",
]
