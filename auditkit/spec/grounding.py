"""Image-grounded axes: labelled images read through the denoiser, to check that each
prompt-derived axis is one real images reproduce (METHOD.md; docs/method.md, "Image-grounded
axes")."""

from __future__ import annotations

from pydantic import Field, field_validator

from auditkit.spec.base import FrozenModel, Name, check_distinct
from auditkit.spec.labelled import LabelledImagesSpec


class GroundingSpec(FrozenModel):
    """Labelled images per axis group, encoded with the model's VAE, noised to every step of
    the audit's schedule and passed through the denoiser; h at the audit's hook gives
    image-derived group latents and axes."""

    images: LabelledImagesSpec = Field(
        description=(
            "The labelled images: a label column per attribute, whose name is an axis name and "
            "whose cells are that axis's group names."
        )
    )
    prompt: str = Field(
        "",
        max_length=1000,
        description=(
            "The text the denoiser is conditioned on while it reads the images (default: the "
            "empty prompt, so h reflects the image alone)."
        ),
    )
    axes: list[Name] | None = Field(
        None,
        description=("Two-group axes to ground; default every two-group axis the labels name."),
    )
    per_group: int = Field(
        64,
        ge=2,
        le=4096,
        description="Most images used per group (the first in the labels' order).",
    )
    adjust_for: list[Name] | None = Field(
        None,
        description=(
            "Label columns whose values the image-derived axis is adjusted for (a linear model "
            "of h on the axis's group and these attributes, so that, e.g., more doctors among "
            "the images of men than of women does not enter the gender axis); default every "
            "other label column, [] for the plain difference of the groups' mean h."
        ),
    )
    noise_seed: int = Field(
        0,
        ge=0,
        le=2**32 - 1,
        description=(
            "Seed of the noise every image is noised with (the same noise for every image, so "
            "that it cancels between the groups, as the audit's prompts share their seeds)."
        ),
    )

    @field_validator("axes")
    @classmethod
    def _axes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("lists nothing; leave it out for the default")
            check_distinct(value, "lists {repeated} twice")
        return value

    @field_validator("adjust_for")
    @classmethod
    def _adjust_for(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            check_distinct(value, "lists {repeated} twice")
            if "file" in value:
                raise ValueError("'file' names the images, not an attribute to adjust for")
        return value


__all__ = ["GroundingSpec"]
