"""A captioner with a deliberate, known error: a fixed share of the images it reads as one
group are reported as another (``captions.captioner.misread``).

It tests the calibration's correction (issue 17: a reader that misreads 20% of women as men
must be corrected back to the true reader's shares) and lets a user ask how a conclusion would
move if the reader erred so. The error is laid over the inner captioner's reads, after it: of
the images read as ``group``, the n-th is reported as ``read_as`` whenever ``floor(n * share)``
steps up, so exactly ``share`` of them (to within one image) are misread, spread evenly in the
order the images are read. The order is the run's (the calibration set first, then the audit's
units in plan order), so a run from scratch misreads the same images every time; a resumed
stage keeps the share, not necessarily the same images. The free-text caption is the inner
captioner's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from auditkit.caption import Captioner


class MisreadCaptioner:
    """``inner`` with ``share`` of its ``attribute`` = ``group`` reads reported as ``read_as``."""

    def __init__(
        self, inner: Captioner, *, attribute: str, group: str, read_as: str, share: float
    ) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.inner = inner
        self.attribute, self.group, self.read_as, self.share = attribute, group, read_as, share
        self.id = f"{inner.id}+misread({attribute}:{group}->{read_as}@{share:g})"
        self.sha256 = inner.sha256
        self.seen = 0
        """Images read as ``group`` so far."""
        attributes = getattr(inner, "attributes", None)
        if attributes is not None:
            self.attributes = attributes

    def read(self, images: np.ndarray) -> list[dict[str, str]]:
        """The inner captioner's reads, with the fixed share of ``group`` reads changed."""
        return self.apply(self.inner.read(images))

    def apply(self, reads: list[dict[str, str]]) -> list[dict[str, str]]:
        """``reads`` (the inner captioner's) with the fixed share of ``group`` reads changed."""
        out = []
        for reading in reads:
            reading = dict(reading)
            if reading.get(self.attribute) == self.group:
                self.seen += 1
                if math.floor(self.seen * self.share) > math.floor((self.seen - 1) * self.share):
                    reading[self.attribute] = self.read_as
            out.append(reading)
        return out

    def caption(self, images: np.ndarray) -> list[str]:
        """The inner captioner's free-text captions (the misread changes the reads only)."""
        return self.inner.caption(images)

    def __getattr__(self, name: str) -> Any:
        # what the stage asks of particular captioners (is_loaded, model) goes to the inner one
        return getattr(self.inner, name)


__all__ = ["MisreadCaptioner"]
