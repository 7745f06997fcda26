"""The optional captioning stage and what rides on it: the captioner
(:mod:`auditkit.spec.captioner`), the causal check, open-vocabulary discovery, exemplar
thumbnails and the guidance sweep."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from auditkit.spec.base import (
    FrozenModel,
    Name,
    NonEmptyStr,
    check_distinct,
)
from auditkit.spec.captioner import CaptionerSpec
from auditkit.spec.labelled import LabelledImagesSpec
from auditkit.spec.vocabulary import check_templates

CaptionRole = Literal["concept", "marked", "axis", "base"]


def _default_caption_roles() -> list[CaptionRole]:
    return ["concept"]


def _default_alphas() -> list[float]:
    return [-1.0, -0.5, 0.0, 0.5, 1.0]


MAX_CAUSAL_ALPHA = 100.0
"""Largest |alpha| the causal check accepts (alpha is in units of the whole group difference)."""


class CausalSpec(FrozenModel):
    """The optional causal check: steer h along an axis while sampling and caption the images.

    For each selected two-group axis with direction g = G(first group) - G(second group) (as
    the analysis computes it from the stored prompt latents), ``alpha * g`` is added to the
    hook point's output at every denoising step and in both guidance halves; the share of
    images the captioner reads as the first group should rise with alpha (a dose-response
    curve). Needs ``probe.aggregation: mean`` and ``probe.spatial_pool: none`` (g must have
    the hook output's shape). Costs one sampling pass with decoding per axis x alpha x
    selected concept prompt x seed.
    """

    alphas: list[float] = Field(
        default_factory=_default_alphas,
        min_length=2,
        description=(
            "Steering strengths, in units of the full group difference g: 1 adds g (the step-"
            "mean gap between the two groups' latents) to h at every step, -1 subtracts it, 0 "
            "leaves sampling unchanged. At least two distinct values."
        ),
    )
    seeds: int | None = Field(
        None,
        ge=1,
        description=(
            "How many of the audit's seeds (the first N of its seed list) to sample per concept "
            "prompt and alpha; default 16, or all of them when the audit has fewer."
        ),
    )
    axes: list[Name] | None = Field(
        None,
        description=(
            "Two-group axes to steer; default every two-group axis whose name is an attribute "
            "the captioner reads (whose group names are the values it writes)."
        ),
    )
    concepts: list[NonEmptyStr] | None = Field(
        None,
        description=(
            "Concept terms whose prompts are steered (every template of every concept set that "
            "lists the term); default all concepts."
        ),
    )

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, value: list[float]) -> list[float]:
        if any(not math.isfinite(a) or abs(a) > MAX_CAUSAL_ALPHA for a in value):
            raise ValueError(f"alphas must be finite numbers within +-{MAX_CAUSAL_ALPHA:g}")
        return check_distinct(value, "alphas repeat: {repeated}")

    @field_validator("axes", "concepts")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("lists nothing; leave it out for the default")
            check_distinct(value, "lists {repeated} twice")
        return value


MAX_DISCOVERY_NGRAM = 4
"""Longest phrase (in words) open-vocabulary discovery mines from captions."""


class DiscoverySpec(FrozenModel):
    """Open-vocabulary discovery: words and short phrases mined from the concept prompts'
    captions become prompts, get latents of their own, and are ranked per concept (and per
    two-group axis) by their centred cosine with it."""

    max_terms: int = Field(
        30, ge=1, le=1000, description="Most frequent mined terms kept (ties: alphabetical)."
    )
    min_count: int = Field(
        3, ge=1, description="Least number of captions a term must appear in to be kept."
    )
    ngrams: int = Field(
        2,
        ge=1,
        le=MAX_DISCOVERY_NGRAM,
        description="Longest phrase mined, in words (1: single words only).",
    )
    template: NonEmptyStr | None = Field(
        None,
        description=(
            "Prompt template a term is put into (a '{term}' slot); default the first template "
            "of the first concept set."
        ),
    )
    stopwords: list[NonEmptyStr] = Field(
        default_factory=list,
        description=(
            "Extra words never mined (case-insensitive), on top of a small built-in English "
            "list, the words of the spec's templates and base prompt, and the concept terms. A "
            "phrase of several words drops that exact phrase only."
        ),
    )
    top_k: int = Field(5, ge=1, description="Terms flagged as top per concept (and axis end).")

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else check_templates([value])[0]


ThumbnailFormat = Literal["webp", "jpeg", "png"]


class ExemplarSpec(FrozenModel):
    """Compressed thumbnails of some captioned images, kept for the report's exemplar grids.

    They cost no extra sampling: the thumbnail is made from the image the captioner reads.
    """

    seeds: int = Field(
        4,
        ge=0,
        le=64,
        description=(
            "Thumbnails are kept for the first N captioned seeds of every captioned prompt "
            "(0: none, no exemplar grids)."
        ),
    )
    size: int = Field(
        96,
        ge=16,
        le=512,
        description="Longest side of a thumbnail in pixels (smaller images are kept as drawn).",
    )
    format: ThumbnailFormat = Field("webp", description="Image format of the thumbnails.")
    quality: int = Field(
        80, ge=1, le=100, description="Compression quality for webp and jpeg (png is lossless)."
    )


class CaptionsSpec(FrozenModel):
    """The optional captioning stage: decode some units' images and read them with a captioner.

    Decoding costs a second sampling pass over the captioned units (the U-Net steps again plus
    one VAE decode each); extraction itself never decodes.
    """

    captioner: CaptionerSpec = Field(description="Which captioner reads the images.")
    seeds: int | None = Field(
        None,
        ge=1,
        description=(
            "How many of the audit's seeds (the first N of its seed list) to decode and caption "
            "per prompt; default all."
        ),
    )
    roles: list[CaptionRole] = Field(
        default_factory=_default_caption_roles,
        min_length=1,
        description=(
            "Which prompts get images, by role: 'concept' (the unmarked concept prompts, the "
            "default), 'marked' (the defaults analysis' marked prompts), 'axis', 'base'."
        ),
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        le=4096,
        description=(
            "Images per pipeline call, per captioner call and per stored chunk (the unit of "
            "resumption); default the audit's batch_size."
        ),
    )
    reference: dict[Name, Literal["uniform"] | dict[NonEmptyStr, dict[NonEmptyStr, float]]] = Field(
        default_factory=dict,
        description=(
            "Reference distribution per attribute that output shares are compared with: "
            "'uniform' (the default for every attribute an axis reads), or a table "
            "concept -> {group: proportion} (e.g. labour statistics; proportions sum to 1)."
        ),
    )

    @field_validator("reference")
    @classmethod
    def _reference(
        cls, value: dict[str, str | dict[str, dict[str, float]]]
    ) -> dict[str, str | dict[str, dict[str, float]]]:
        for attribute, table in value.items():
            if isinstance(table, str):
                continue
            for concept, shares in table.items():
                total = sum(shares.values())
                if any(v < 0 for v in shares.values()) or abs(total - 1.0) > 1e-6:
                    raise ValueError(
                        f"{attribute}.{concept}: proportions must be non-negative and sum to 1 "
                        f"(they sum to {total:g})"
                    )
        return value

    causal: CausalSpec | None = Field(
        None,
        description=(
            "The causal check (dose-response of the captioned share to steering along each "
            "axis); absent = off."
        ),
    )
    discovery: DiscoverySpec | None = Field(
        None,
        description=(
            "Open-vocabulary discovery (terms mined from the concept prompts' captions, "
            "extracted as prompts of their own and ranked per concept and axis); absent = off."
        ),
    )

    guidance: list[float] = Field(
        default_factory=list,
        description=(
            "Other classifier-free guidance scales at which the concept prompts' captioned "
            "images are sampled again and read (1.0: no guidance, the learned distribution "
            "itself). The report compares each with model.guidance_scale: how far guidance "
            "pushes the output shares away from the reference."
        ),
    )
    calibration: LabelledImagesSpec | None = Field(
        None,
        description=(
            "Labelled images the captioner reads before the audit's: its confusion matrix and "
            "accuracy per group are measured on them, and the output shares are corrected for "
            "that confusion (beside the raw shares); absent = raw shares only."
        ),
    )
    exemplars: ExemplarSpec = Field(
        default_factory=ExemplarSpec,
        description=(
            "Thumbnails kept for the report's exemplar image grids (seeds, size, format, "
            "quality); on by default for the first 4 captioned seeds."
        ),
    )

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: list[CaptionRole]) -> list[CaptionRole]:
        return check_distinct(value, "lists a role twice")


__all__ = [
    "MAX_CAUSAL_ALPHA",
    "MAX_DISCOVERY_NGRAM",
    "CaptionRole",
    "CaptionsSpec",
    "CausalSpec",
    "DiscoverySpec",
    "ExemplarSpec",
    "ThumbnailFormat",
]
