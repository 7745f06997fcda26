"""The optional captioning stage and what rides on it: the captioner, the causal check,
open-vocabulary discovery, exemplar thumbnails and the guidance sweep."""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from auditkit.spec.base import (
    FrozenModel,
    Name,
    NonEmptyStr,
    check_device,
    check_distinct,
    check_model_id,
)
from auditkit.spec.labelled import LabelledImagesSpec
from auditkit.spec.vocabulary import check_templates

CaptionerKind = Literal["toyworld", "image-to-text", "clip", "custom"]
CaptionRole = Literal["concept", "marked", "axis", "base"]

_UNKNOWN_VALUE = "unknown"  # auditkit.caption.image_to_text.UNKNOWN: reserved for "not read"
_CAPTIONER_OPTIONS = (
    "revision",
    "attributes",
    "prompt",
    "max_new_tokens",
    "device",
    "dtype",
    "trust_remote_code",
    "adapter",
)
ADAPTER_FILE = r"(?P<file>[A-Za-z0-9_][A-Za-z0-9_.\-/]*\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)"
"""A custom reader's adapter in its folder: ``FILE.py:FUNCTION`` (FILE relative, no ``..``)."""
ADAPTER_ENTRY_POINT = r"entrypoint:(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*)"
"""A custom reader installed as a package: ``entrypoint:NAME`` (group ``auditkit.readers``)."""


def _default_caption_roles() -> list[CaptionRole]:
    return ["concept"]


class MisreadSpec(FrozenModel):
    """A deliberate, known error laid over the captioner's reads: a fixed share of the images it
    reads as one group are reported as another. For testing the correction, and for asking how
    a conclusion would move if the reader erred so."""

    attribute: Name = Field(description="The attribute misread (e.g. gender).")
    group: Name = Field(description="The group read wrongly (e.g. woman).")
    read_as: Name = Field(description="What those images are reported as instead (e.g. man).")
    share: float = Field(
        gt=0.0,
        le=1.0,
        description=(
            "The share of the images read as 'group' that are misread: every image whose "
            "running count of such reads crosses a multiple of 1/share (so exactly that share, "
            "spread evenly in the order the images are read)."
        ),
    )

    @model_validator(mode="after")
    def _differs(self) -> MisreadSpec:
        if self.group == self.read_as:
            raise ValueError("'group' and 'read_as' are the same: nothing would be misread")
        return self


class CaptionerSpec(FrozenModel):
    """The model that reads generated images; it has biases of its own, so runs record it."""

    kind: CaptionerKind = Field(
        description=(
            "'toyworld': the small CNN shipped for the toyworld models (reads gender, skin, age "
            "and occupation); 'image-to-text': a transformers captioning model (BLIP family), "
            "attributes read from the caption by keyword; 'clip': CLIP zero-shot detection "
            "with label prompts; 'custom': your own reader, built by an adapter from "
            "safetensors weights in the folder 'id' names (see 'adapter')."
        )
    )
    id: NonEmptyStr | None = Field(
        None,
        description=(
            "Hub id or local model folder (relative paths are resolved against the spec's folder "
            "and may not leave it; an absolute path may name any folder). "
            "Required for 'image-to-text', 'clip' and 'custom' (always a local folder there: "
            "its weights and adapter); 'toyworld' defaults to the shipped captioner."
        ),
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    attributes: dict[Name, dict[Name, list[NonEmptyStr]]] | None = Field(
        None,
        description=(
            "Attribute -> value -> words. 'image-to-text': keywords searched in the caption "
            "(default: gender and age words); 'clip': label prompts, required, at least two "
            "values per attribute. 'unknown' is reserved and cannot name a value."
        ),
    )
    prompt: NonEmptyStr | None = Field(
        None,
        description="'image-to-text' only: text the caption continues ('a photography of').",
    )
    max_new_tokens: int = Field(
        30, ge=1, le=512, description="'image-to-text' only: longest generated caption."
    )
    device: str = Field(
        "auto", description="'auto' (CUDA, else CPU), 'cpu', 'cuda' or 'cuda:N' (not toyworld)."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="'auto' is float16 on CUDA, else float32 (not toyworld)."
    )
    trust_remote_code: bool = Field(
        False, description="Allow custom model code from the captioner's repository."
    )
    adapter: NonEmptyStr | None = Field(
        None,
        description=(
            "'custom' only, required: the function that builds the reader, 'FILE.py:FUNCTION' "
            "(a Python file inside the 'id' folder) or 'entrypoint:NAME' (an installed "
            "package's entry point in group 'auditkit.readers'). It is called with (folder, "
            "weights, device) and returns an object with 'attributes' and 'read(images)'."
        ),
    )
    misread: MisreadSpec | None = Field(
        None,
        description=(
            "A deliberate error laid over the reads (a fixed share of one group reported as "
            "another); for testing the calibration's correction. Absent: the reads as they are."
        ),
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return check_device(value, ("auto", "cpu", "cuda", "cuda:N"))

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        return value if value is None else check_model_id(value)

    @field_validator("adapter")
    @classmethod
    def _adapter(cls, value: str | None) -> str | None:
        if value is None or re.fullmatch(ADAPTER_ENTRY_POINT, value):
            return value
        found = re.fullmatch(ADAPTER_FILE, value)
        if not found or ".." in found["file"].split("/"):
            raise ValueError(
                "must be 'FILE.py:FUNCTION' (a file inside the reader's folder, e.g. "
                "'reader.py:build') or 'entrypoint:NAME'"
            )
        return value

    @field_validator("attributes")
    @classmethod
    def _attributes(
        cls, value: dict[str, dict[str, list[str]]] | None
    ) -> dict[str, dict[str, list[str]]] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("names no attribute; leave it out for the default table")
        for attribute, values in value.items():
            if not values:
                raise ValueError(f"attribute {attribute!r} has no values")
            if _UNKNOWN_VALUE in values:
                raise ValueError(f"{attribute}: {_UNKNOWN_VALUE!r} is reserved, not a value name")
        return value

    @model_validator(mode="after")
    def _per_kind(self) -> CaptionerSpec:
        # Compared with the defaults, not with the keys given, so the resolved spec (defaults
        # filled in, as spec.yaml stores it) validates again.
        fields = type(self).model_fields
        given = [n for n in _CAPTIONER_OPTIONS if getattr(self, n) != fields[n].default]
        if self.kind == "toyworld" and given:
            raise ValueError(f"the toyworld captioner takes no options; remove {given}")
        if self.kind != "toyworld" and self.id is None:
            raise ValueError(f"a {self.kind!r} captioner needs 'id' (a model folder or hub id)")
        if self.kind == "custom":
            wrong = [n for n in given if n not in ("adapter", "device")]
            if wrong:
                raise ValueError(
                    f"a 'custom' reader takes 'adapter' and 'device' only (its adapter declares "
                    f"what it reads); remove {wrong}"
                )
            if self.adapter is None:
                raise ValueError(
                    "a 'custom' reader needs 'adapter' ('FILE.py:FUNCTION' or 'entrypoint:NAME')"
                )
        elif self.adapter is not None:
            raise ValueError("'adapter' applies to 'custom' readers only")
        if self.kind == "clip":
            wrong = [n for n in ("prompt", "max_new_tokens") if n in given]
            if wrong:
                raise ValueError(f"{wrong} apply to 'image-to-text' captioners, not 'clip'")
            if self.attributes is None:
                raise ValueError("a 'clip' captioner needs 'attributes' (its label prompts)")
            few = sorted(a for a, values in self.attributes.items() if len(values) < 2)
            if few:
                raise ValueError(f"clip attributes need at least two values each: {few}")
        return self


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
    "ADAPTER_ENTRY_POINT",
    "ADAPTER_FILE",
    "MAX_CAUSAL_ALPHA",
    "MAX_DISCOVERY_NGRAM",
    "CaptionRole",
    "CaptionerKind",
    "CaptionerSpec",
    "CaptionsSpec",
    "CausalSpec",
    "DiscoverySpec",
    "ExemplarSpec",
    "MisreadSpec",
    "ThumbnailFormat",
]
