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
option that changes what it reads), in chunks written atomically
(:class:`auditkit.caption.store.CaptionStore`); an interrupted stage resumes with the missing
units only, and another captioner gets a folder of its own instead of mixing its captions with
the old ones. At the end the tidy tables of the current captioner are (re)written
(:func:`auditkit.caption.store.write_caption_tables`).
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

from auditkit.caption import Captioner
from auditkit.caption.store import CaptionStore, section, select_caption_units, write_caption_tables
from auditkit.caption.thumbnails import ThumbnailStore, exemplar_seeds
from auditkit.executors import Executor
from auditkit.models.loading import LoadedPipeline
from auditkit.plan import AuditPlan, WorkUnit
from auditkit.sampling import Draw, Sampler
from auditkit.spec.audit import AuditSpec
from auditkit.spec.captioner import CaptionerSpec


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
        self.thumbs = ThumbnailStore(inputs.root, section(spec).exemplars)
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


__all__ = [
    "CaptionReader",
    "CaptionStats",
    "CaptionedPass",
    "caption_images",
    "caption_options",
    "captioner_record",
    "load_spec_captioner",
    "read_batch",
]
