"""Stage 4 (optional): read attributes of generated images and write captions.

Every captioner (the toyworld classifier now; transformers image-to-text and CLIP zero-shot
models later) implements :class:`Captioner`, so the captioning stage, the output-level
statistics and the causal check never depend on which one is used. A captioner has biases of
its own, so its ``id`` and ``sha256`` go into the manifest of every run that uses it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Captioner(Protocol):
    """Reads generated images. ``images`` are uint8 arrays [N, H, W, 3]."""

    id: str
    sha256: str

    def read(self, images: np.ndarray) -> list[dict[str, str]]:
        """One dict per image: attribute name -> the value read (e.g. {"gender": "woman"})."""
        ...

    def caption(self, images: np.ndarray) -> list[str]:
        """One free-text caption per image."""
        ...
