"""The captioners auditkit ships, and one factory to load any of them by kind.

* ``"toyworld"``: :class:`auditkit.toyworld.captioner.ToyworldCaptioner`, the small CNN that
  reads the toyworld's attributes (the shipped folder is :data:`TOYWORLD_CAPTIONER`).
* ``"image-to-text"``: :class:`ImageToTextCaptioner`, any transformers image-to-text model
  (BLIP family); attributes are read from the caption by keyword.
* ``"clip"``: :class:`ClipZeroShotCaptioner`, CLIP zero-shot detection with label prompts.

Every one is a :class:`auditkit.caption.Captioner`: ``id`` and ``sha256`` name exactly which
captioner read the images, since a captioner has biases of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from auditkit.caption import Captioner
from auditkit.caption.clip import ClipZeroShotCaptioner
from auditkit.caption.image_to_text import (
    DEFAULT_KEYWORDS,
    UNKNOWN,
    ImageToTextCaptioner,
    read_keywords,
    weights_sha256,
)
from auditkit.errors import ModelLoadError

__all__ = [
    "CAPTIONER_KINDS",
    "DEFAULT_KEYWORDS",
    "TOYWORLD_CAPTIONER",
    "UNKNOWN",
    "CaptionerKind",
    "ClipZeroShotCaptioner",
    "ImageToTextCaptioner",
    "load_captioner",
    "read_keywords",
    "weights_sha256",
]

CaptionerKind = Literal["toyworld", "image-to-text", "clip"]
CAPTIONER_KINDS: tuple[str, ...] = ("toyworld", "image-to-text", "clip")

TOYWORLD_CAPTIONER = (
    Path(__file__).resolve().parents[1] / "toyworld" / "checkpoints" / "toyworld-captioner"
)
"""The toyworld captioner shipped inside the package."""


def load_captioner(
    kind: CaptionerKind, source: str | Path | None = None, **options: Any
) -> Captioner:
    """Load a captioner of ``kind`` from ``source`` (a folder, or a hub id).

    ``options`` go to the captioner's constructor (``attributes``, ``device``, ``prompt``, ...;
    ``attributes`` is required for ``"clip"``). For ``"toyworld"`` the source defaults to
    :data:`TOYWORLD_CAPTIONER` and no options are taken.

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
    raise ValueError(f"unknown captioner kind {kind!r}; use one of {', '.join(CAPTIONER_KINDS)}")
