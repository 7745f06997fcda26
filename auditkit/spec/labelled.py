"""Labelled images: a folder of images with a CSV of their attributes, or a set drawn by the
toyworld with known attributes. The captioner's calibration set (``captions.calibration``) and
the image-grounded axes (``grounding.images``) both take one."""

from __future__ import annotations

from pydantic import Field, model_validator

from auditkit.spec.base import FrozenModel, NonEmptyStr

MAX_TOYWORLD_IMAGES = 20_000
"""Most images a toyworld-drawn set may have."""


class LabelledImagesSpec(FrozenModel):
    """Images whose attributes are known: ``folder`` (with a labels CSV) or ``toyworld``."""

    folder: NonEmptyStr | None = Field(
        None,
        description=(
            "Folder of image files (PNG, JPEG, WebP) and the labels CSV. A relative path is "
            "resolved against the spec's folder and may not leave it. Images are centre-cropped "
            "to a square and resized to model.resolution."
        ),
    )
    labels: NonEmptyStr = Field(
        "labels.csv",
        description=(
            "The labels CSV inside the folder: a 'file' column (the image's path within the "
            "folder) and one column per attribute whose cells name a group of that attribute "
            "(an empty cell: not labelled for it)."
        ),
    )
    toyworld: int | None = Field(
        None,
        ge=8,
        le=MAX_TOYWORLD_IMAGES,
        description=(
            "Instead of a folder: draw this many images from the toyworld the model was trained "
            "on, every attribute uniform and independent, each labelled with what was drawn "
            "(toyworld models only)."
        ),
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the toyworld draw.")

    @model_validator(mode="after")
    def _one_source(self) -> LabelledImagesSpec:
        if (self.folder is None) == (self.toyworld is None):
            raise ValueError("give exactly one of 'folder' (with its labels CSV) or 'toyworld'")
        if self.folder is None and self.labels != "labels.csv":
            raise ValueError("'labels' names a file in 'folder'; a toyworld set has its own")
        return self


__all__ = ["MAX_TOYWORLD_IMAGES", "LabelledImagesSpec"]
