"""The captioners auditkit ships, and one factory to load any of them by kind.

* ``"toyworld"``: :class:`auditkit.toyworld.captioner.ToyworldCaptioner`, the small CNN that
  reads the toyworld's attributes (the shipped folder is :data:`TOYWORLD_CAPTIONER`).
* ``"image-to-text"``: :class:`ImageToTextCaptioner`, any transformers image-to-text model
  (BLIP family); attributes are read from the caption by keyword.
* ``"clip"``: :class:`ClipZeroShotCaptioner`, CLIP zero-shot detection with label prompts.
* ``"custom"``: :class:`auditkit.caption.custom.CustomReader`, the user's own classifier, built
  by a declared adapter from safetensors weights.

Every one is a :class:`auditkit.caption.Captioner`: ``id`` and ``sha256`` name exactly which
captioner read the images, since a captioner has biases of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from auditkit.caption import Captioner
from auditkit.caption.clip import ClipZeroShotCaptioner
from auditkit.caption.image_to_text import (
    DEFAULT_KEYWORDS,
    UNKNOWN,
    ImageToTextCaptioner,
    read_keywords,
    validate_table,
    weights_identity,
    weights_sha256,
)
from auditkit.errors import ModelLoadError
from auditkit.models.builtin import SHIPPED_CHECKPOINTS

__all__ = [
    "CAPTIONER_KINDS",
    "DEFAULT_KEYWORDS",
    "TOYWORLD_CAPTIONER",
    "UNKNOWN",
    "CaptionerKind",
    "ClipZeroShotCaptioner",
    "DeferredCaptioner",
    "ImageToTextCaptioner",
    "captioner_values",
    "deferred_captioner",
    "load_captioner",
    "read_keywords",
    "weights_sha256",
]

CaptionerKind = Literal["toyworld", "image-to-text", "clip", "custom"]
CAPTIONER_KINDS: tuple[str, ...] = ("toyworld", "image-to-text", "clip", "custom")

TOYWORLD_CAPTIONER = SHIPPED_CHECKPOINTS / "toyworld-captioner"
"""The toyworld captioner shipped inside the package."""


class DeferredCaptioner:
    """A transformers captioner whose model loads at its first read.

    ``id`` and ``sha256`` come from the weight files (:func:`weights_identity`), exactly as the
    loaded captioner reports them, and ``attributes`` from the options, so a finished stage can
    find its stored captions under the captioner key without loading the model. The model is
    loaded from the folder that was hashed and checked against that sha256. Problems that only
    loading reveals (a folder of another model kind, a missing processor) surface at the first
    read.
    """

    def __init__(
        self,
        kind: CaptionerKind,
        source: str | Path,
        identity: tuple[str, str, Path],
        **options: Any,
    ) -> None:
        self.kind, self.source, self.options = kind, source, options
        self.id, self.sha256, self.folder = identity
        table = options.get("attributes")
        if kind == "clip":
            if table is None:
                raise ValueError("a 'clip' captioner needs attributes (label prompts)")
            self.attributes = validate_table(table, min_values=2)
        else:
            self.attributes = validate_table(DEFAULT_KEYWORDS if table is None else table)
        self._loaded: Captioner | None = None

    @property
    def is_loaded(self) -> bool:
        """Whether the model has been loaded (by a read)."""
        return self._loaded is not None

    def model(self) -> Captioner:
        """The loaded captioner (loaded now if needed).

        Raises:
            ModelLoadError: the weights changed since the sha256 was computed.
        """
        if self._loaded is None:
            # the very folder that was hashed (for a hub id: that snapshot, so a hub cache that
            # moves to a newer commit in between is not mistaken for changed weights)
            options = {k: v for k, v in self.options.items() if k != "revision"}
            loaded = load_captioner(self.kind, self.folder, **options)
            if loaded.sha256 != self.sha256:
                raise ModelLoadError(
                    f"captioner {self.id!r} changed while auditkit ran: its weights' sha256 is "
                    f"now {loaded.sha256[:16]}…, not {self.sha256[:16]}….",
                    hint="rerun; the captions are keyed by the weights they were read with.",
                )
            self._loaded = loaded
        return self._loaded

    def caption(self, images: Any) -> list[str]:
        """See :class:`auditkit.caption.Captioner`."""
        return self.model().caption(images)

    def read(self, images: Any) -> list[dict[str, str]]:
        """See :class:`auditkit.caption.Captioner`."""
        return self.model().read(images)


def deferred_captioner(
    kind: CaptionerKind, source: str | Path | None = None, **options: Any
) -> Captioner:
    """:func:`load_captioner`, deferred to the first read where the weight files name the
    captioner (image-to-text and CLIP from a local folder or cached snapshot); loaded now
    otherwise (the toyworld captioner loads in a moment; a custom reader's attributes are known
    only once its adapter has built it)."""
    if (
        kind not in ("toyworld", "custom")
        and source is not None
        and (kind != "clip" or "attributes" in options)
    ):
        identity = weights_identity(source, options.get("revision"), options.get("cache_dir"))
        if identity is not None:
            return DeferredCaptioner(kind, source, identity, **options)
    return load_captioner(kind, source, **options)


def load_captioner(
    kind: CaptionerKind, source: str | Path | None = None, **options: Any
) -> Captioner:
    """Load a captioner of ``kind`` from ``source`` (a folder, or a hub id).

    ``options`` go to the captioner's constructor (``attributes``, ``device``, ``prompt``, ...;
    ``attributes`` is required for ``"clip"``, ``adapter`` for ``"custom"``). For
    ``"toyworld"`` the source defaults to :data:`TOYWORLD_CAPTIONER` and no options are taken.

    Raises:
        ValueError: an unknown kind, or options for the toyworld captioner.
        ModelLoadError: the model cannot be found or loaded.
    """
    if kind == "toyworld":
        if options:
            raise ValueError(f"the toyworld captioner takes no options; got {sorted(options)}")
        from auditkit.toyworld.captioner import CONFIG_FILE
        from auditkit.toyworld.captioner import load_captioner as load_toyworld

        folder = Path(source).expanduser() if source is not None else TOYWORLD_CAPTIONER
        if not (folder / CONFIG_FILE).is_file():
            raise ModelLoadError(
                f"no toyworld captioner in {folder} (missing {CONFIG_FILE}).",
                hint="train one with auditkit.toyworld.captioner.train_captioner and "
                "save_captioner, or reinstall auditkit.",
            )
        return load_toyworld(folder)
    if source is None:
        raise ValueError(f"a {kind!r} captioner needs a source (a model folder or hub id)")
    if kind == "image-to-text":
        return ImageToTextCaptioner(source, **options)
    if kind == "clip":
        return ClipZeroShotCaptioner(source, **options)
    if kind == "custom":
        from auditkit.caption.custom import load_custom_reader

        return load_custom_reader(source, **options)
    raise ValueError(f"unknown captioner kind {kind!r}; use one of {', '.join(CAPTIONER_KINDS)}")


def captioner_values(captioner: Captioner, resolution: int) -> dict[str, set[str] | None]:
    """Attribute -> the values ``captioner`` can write (None where it does not say).

    From the captioner's ``attributes`` table (image-to-text, CLIP, custom) or heads
    (toyworld); a captioner that exposes neither is asked to read one grey image to learn its
    attributes.
    """
    from auditkit.caption.misread import MisreadCaptioner

    if isinstance(captioner, MisreadCaptioner):  # the same values, some read as others
        captioner = captioner.inner
    table = getattr(captioner, "attributes", None)
    if isinstance(table, Mapping):
        return {str(a): {str(v) for v in values} for a, values in table.items()}
    from auditkit.toyworld.captioner import HEADS, ToyworldCaptioner

    if isinstance(captioner, ToyworldCaptioner):
        return {a: set(values) for a, values in HEADS.items()}
    grey = np.full((1, resolution, resolution, 3), 128, dtype=np.uint8)
    return {str(a): None for a in captioner.read(grey)[0]}
