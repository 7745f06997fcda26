"""The audit spec: pydantic v2 models, strict (unknown keys refused) and frozen.

Every field carries a description, which ``auditkit schema`` prints as part of the JSON Schema.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

SPEC_VERSION = 1
"""The newest spec version this auditkit reads."""

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
_TERM_SLOT = "{term}"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


NonEmptyStr = Annotated[str, Field(min_length=1)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME)]


class ModelSpec(_Frozen):
    """Which diffusion pipeline to audit and how to sample it."""

    id: NonEmptyStr = Field(
        description=(
            "Hub id (e.g. 'SimianLuo/LCM_Dreamshaper_v7'), a local diffusers folder (relative "
            "paths are resolved against the spec file), or 'builtin:tiny-sd' for the tiny "
            "random-weight pipeline auditkit builds from configs (meaningless numbers)."
        )
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    pipeline: Literal["auto", "stable-diffusion", "lcm", "sdxl"] = Field(
        "auto", description="Pipeline kind; 'auto' reads model_index.json."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights and compute dtype; 'auto' is float16 on CUDA, else float32."
    )
    device: str = Field(
        "auto", description="'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'."
    )
    scheduler: Literal["default", "ddim", "euler", "dpm-solver", "pndm", "lcm"] = Field(
        "default", description="Scheduler to sample with; 'default' keeps the pipeline's own."
    )
    steps: int = Field(4, ge=1, le=1000, description="Denoising steps per image.")
    guidance_scale: float = Field(
        8.0, ge=0.0, description="Classifier-free guidance scale (LCM: the distilled w)."
    )
    resolution: int = Field(
        512, ge=8, le=4096, description="Image height and width in pixels (multiple of 8)."
    )
    trust_remote_code: bool = Field(
        False, description="Allow custom pipeline code from the model repository."
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: int) -> int:
        if value % 8:
            raise ValueError("must be a multiple of 8")
        return value


class ProbeSpec(_Frozen):
    """Where h is read and how it is reduced."""

    hook: NonEmptyStr = Field(
        "unet.mid_block",
        description=(
            "Dotted module path, starting with a pipeline component, whose forward output is h "
            "(U-Net bottleneck by default; a middle transformer block for DiT-style models)."
        ),
    )
    steps: Literal["all"] | list[Annotated[int, Field(ge=0)]] = Field(
        "all", description="Which denoising steps (0-based) to keep: 'all' or a list."
    )
    aggregation: Literal["mean", "per_step"] = Field(
        "mean",
        description=(
            "'mean' averages h over the kept steps; 'per_step' keeps the trajectory "
            "(concatenated steps) as the latent."
        ),
    )
    spatial_pool: Literal["none", "mean"] = Field(
        "none", description="'mean' averages h over spatial positions (or tokens) on device."
    )
    guidance_half: Literal["cond", "uncond"] = Field(
        "cond", description="Which half of a classifier-free-guidance batch is the prompt's h."
    )
    store_dtype: Literal["float32", "float16"] = Field(
        "float32", description="Dtype of stored activations."
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: Literal["all"] | list[int]) -> Literal["all"] | list[int]:
        if isinstance(value, list):
            if not value:
                raise ValueError("must list at least one step, or be 'all'")
            if len(set(value)) != len(value):
                raise ValueError("lists a step twice")
        return value


class AxisSpec(_Frozen):
    """A demographic descriptor set: two or more groups, each given as terms x templates."""

    name: Name = Field(description="Axis name, e.g. 'gender'.")
    templates: list[NonEmptyStr] = Field(
        description="Prompt templates with a '{term}' slot, e.g. 'a photo of a {term}'.",
        min_length=1,
    )
    groups: dict[Name, list[NonEmptyStr]] = Field(
        description=(
            "Group name -> terms. With two groups the axis points from the second to the "
            "first (positive lean = towards the first group)."
        )
    )
    markers: dict[Name, NonEmptyStr] | None = Field(
        None,
        description=(
            "Word that marks a concept with each group in the defaults analysis ('a man "
            "doctor'); defaults to each group's first term."
        ),
    )
    defaults: bool = Field(
        True,
        description=(
            "Include this axis in the defaults analysis (it adds one marked prompt per group, "
            "concept and template)."
        ),
    )

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        return _check_templates(value)

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if len(value) < 2:
            raise ValueError(f"an axis needs at least two groups, got {len(value)}")
        for group, terms in value.items():
            if not terms:
                raise ValueError(f"group '{group}' has no terms")
        return value

    @model_validator(mode="after")
    def _markers(self) -> AxisSpec:
        if self.markers is not None:
            missing = set(self.groups) - set(self.markers)
            extra = set(self.markers) - set(self.groups)
            if missing or extra:
                raise ValueError(
                    f"markers must name exactly the groups {sorted(self.groups)}"
                    f" (missing {sorted(missing)}, unknown {sorted(extra)})"
                )
        return self

    def marker(self, group: str) -> str:
        """The word that marks a concept as belonging to ``group``."""
        if self.markers is not None:
            return self.markers[group]
        return self.groups[group][0]


class ConceptSetSpec(_Frozen):
    """Neutral concepts (occupations, traits, objects) whose lean is measured."""

    name: Name = Field(description="Concept set name, e.g. 'occupations'.")
    templates: list[NonEmptyStr] = Field(
        description="Prompt templates with a '{term}' slot.", min_length=1
    )
    terms: list[NonEmptyStr] = Field(description="Concept terms, e.g. 'doctor'.", min_length=1)

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        return _check_templates(value)

    @field_validator("terms")
    @classmethod
    def _terms(cls, value: list[str]) -> list[str]:
        dupes = sorted({t for t in value if value.count(t) > 1})
        if dupes:
            raise ValueError(f"terms repeat: {dupes}")
        return value


class CentringSpec(_Frozen):
    """The reference subtracted from prompt latents before cosines are taken."""

    reference: Literal["base", "set_mean"] = Field(
        "base",
        description=(
            "'base': subtract the latent of base_prompt; 'set_mean': subtract the mean latent "
            "of the prompts being compared (each concept set, each axis)."
        ),
    )
    base_prompt: NonEmptyStr = Field(
        "a photo of a person", description="The base prompt for reference 'base'."
    )


AnalysisName = Literal["lean", "defaults", "descriptors", "similarity"]
ReportFormat = Literal["html", "pdf"]


def _default_analyses() -> list[AnalysisName]:
    return ["lean", "defaults", "descriptors", "similarity"]


def _default_formats() -> list[ReportFormat]:
    return ["html"]


SignificanceRule = Literal["min_effect", "labels", "vocabulary"]

DEFAULT_MIN_EFFECT = 0.3
"""Default half-width of the equivalence band, in lean-score units (docs/method.md, "Choosing
the band": on the calibration models a lean of 0.3 went with images about 10 points from
parity, between the null-sized 5 and the large 20)."""


class StatisticsSpec(_Frozen):
    """How uncertainty is estimated and what counts as a finding."""

    bootstrap_resamples: int = Field(
        1000,
        ge=0,
        le=100_000,
        description="Bootstrap resamples for confidence intervals (0 turns them off, and with "
        "them the min_effect rule's test).",
    )
    seed: int = Field(0, ge=0, description="Seed of the bootstrap's random generator.")
    resampling: Literal["hierarchical", "seeds"] = Field(
        "hierarchical",
        description="What one bootstrap resample draws again: 'hierarchical' draws the seeds, "
        "the templates (shared between lists with the same templates) and each group's terms, "
        "so that intervals carry the wording as well as the noise; 'seeds' draws the seeds "
        "only.",
    )
    alpha: float = Field(
        0.05,
        gt=0.0,
        lt=1.0,
        description="False discovery rate for calling a lean a finding (Benjamini-Hochberg "
        "across every axis and concept of the audit).",
    )
    rule: SignificanceRule = Field(
        "min_effect",
        description="What makes a lean a finding. 'min_effect' (default): the lean score is "
        "beyond the equivalence band ±min_effect with 95% confidence, after "
        "Benjamini-Hochberg correction; seeds then change the precision, not the verdict on a "
        "lean smaller than the band. 'labels' and 'vocabulary' are the rules of runs made "
        "before it (any lean reproducible across seeds; |cosine| above null axes made from "
        "the audit's own concepts) and are kept to reproduce them: docs/method.md measures "
        "why neither is the default.",
    )
    min_effect: float = Field(
        DEFAULT_MIN_EFFECT,
        ge=0.0,
        le=10.0,
        description="Smallest lean score that matters (half-width of the equivalence band "
        "around 0, in the units of the lean score: ±1 is the distance from the midpoint to a "
        "group's latent). The report shows what share skew a lean of this size went with on "
        "the calibration models.",
    )
    null_model: Literal["labels", "vocabulary"] | None = Field(
        None,
        description="Legacy name of the rule, from specs written before 'rule': when set and "
        "'rule' is not, the rule is this null model.",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_null_model(cls, data: Any) -> Any:
        """A spec that names only ``null_model`` keeps the rule it was written for."""
        if isinstance(data, dict) and data.get("null_model") and "rule" not in data:
            data = {**data, "rule": data["null_model"]}
        return data


class ReportSpec(_Frozen):
    """What the report says about itself and which formats to write."""

    title: NonEmptyStr = Field("Diffusion model bias audit", description="Report title.")
    owner: str = Field("", description="Who is responsible for this audit.")
    formats: list[ReportFormat] = Field(
        default_factory=_default_formats, description="Report formats to write.", min_length=1
    )
    paper: Literal["a4", "letter"] = Field("a4", description="Paper size of the PDF report.")
    image_budget_mb: float = Field(
        4.0,
        gt=0,
        le=100,
        description=(
            "Largest total size, in MB, of the exemplar thumbnails embedded in the report. "
            "Every concept gets its first image before any gets a second; what does not fit is "
            "left out and the report says how much."
        ),
    )


CaptionerKind = Literal["toyworld", "image-to-text", "clip"]
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
)


def _default_caption_roles() -> list[CaptionRole]:
    return ["concept"]


class CaptionerSpec(_Frozen):
    """The model that reads generated images; it has biases of its own, so runs record it."""

    kind: CaptionerKind = Field(
        description=(
            "'toyworld': the small CNN shipped for the toyworld models (reads gender, skin, age "
            "and occupation); 'image-to-text': a transformers captioning model (BLIP family), "
            "attributes read from the caption by keyword; 'clip': CLIP zero-shot detection "
            "with label prompts."
        )
    )
    id: NonEmptyStr | None = Field(
        None,
        description=(
            "Hub id or local model folder (relative paths are resolved against the spec file). "
            "Required for 'image-to-text' and 'clip'; 'toyworld' defaults to the shipped "
            "captioner."
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

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
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


class CausalSpec(_Frozen):
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
        repeated = sorted({a for a in value if value.count(a) > 1})
        if repeated:
            raise ValueError(f"alphas repeat: {repeated}")
        return value

    @field_validator("axes", "concepts")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("lists nothing; leave it out for the default")
            repeated = sorted({v for v in value if value.count(v) > 1})
            if repeated:
                raise ValueError(f"lists {repeated} twice")
        return value


MAX_DISCOVERY_NGRAM = 4
"""Longest phrase (in words) open-vocabulary discovery mines from captions."""


class DiscoverySpec(_Frozen):
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
        return None if value is None else _check_templates([value])[0]


ThumbnailFormat = Literal["webp", "jpeg", "png"]


class ExemplarSpec(_Frozen):
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


class CaptionsSpec(_Frozen):
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
        if len(set(value)) != len(value):
            raise ValueError("lists a role twice")
        return value


GateMetric = Literal["max_abs_lean", "significant_leans", "max_output_gap", "min_agreement"]


class GateSpec(_Frozen):
    """A pass/fail condition on the audit's results (CI fails the build when one fails).

    ``max_abs_lean``: the largest |lean score| (optionally on one axis / concept set) must be at
    most ``max``. ``significant_leans``: the number of significant leans must be at most
    ``max``. ``max_output_gap``: the largest gap between an output share and its reference
    (optionally for one attribute) must be at most ``max``. ``min_agreement``: the Spearman
    agreement between latent leans and output shares on ``axis`` must be at least ``min``.
    """

    name: NonEmptyStr | None = Field(None, description="Name shown in reports and CI output.")
    metric: GateMetric = Field(description="What the gate measures.")
    axis: Name | None = Field(None, description="Restrict to one axis (required: min_agreement).")
    attribute: Name | None = Field(None, description="Restrict max_output_gap to one attribute.")
    concept_set: Name | None = Field(None, description="Restrict to one concept set.")
    max: float | None = Field(None, description="Largest value that passes.")
    min: float | None = Field(None, description="Smallest value that passes.")
    missing: Literal["fail", "pass"] = Field(
        "fail",
        description="Outcome when the results the gate needs are absent (e.g. no captions).",
    )

    @model_validator(mode="after")
    def _bounds(self) -> GateSpec:
        wants_min = self.metric == "min_agreement"
        if wants_min and (self.min is None or self.max is not None):
            raise ValueError("min_agreement takes 'min' (and no 'max')")
        if not wants_min and (self.max is None or self.min is not None):
            raise ValueError(f"{self.metric} takes 'max' (and no 'min')")
        if wants_min and self.axis is None:
            raise ValueError("min_agreement needs 'axis'")
        if self.attribute is not None and self.metric != "max_output_gap":
            raise ValueError("'attribute' only applies to max_output_gap")
        return self

    @property
    def label(self) -> str:
        """The gate's name, or one made from its settings."""
        if self.name:
            return self.name
        scope = [x for x in (self.axis, self.attribute, self.concept_set) if x]
        bound = f"<= {self.max:g}" if self.max is not None else f">= {self.min:g}"
        return f"{self.metric}{'[' + ','.join(scope) + ']' if scope else ''} {bound}"


class CrossingSpec(_Frozen):
    """An intersectional descriptor set: every combination of the groups of two or more axes
    ("dark woman", "light man", ...), analysed like a k-way axis (descriptor ranking)."""

    name: Name = Field(description="Name of the crossing, e.g. 'gender_x_skin'.")
    axes: list[Name] = Field(
        description=(
            "Axes to cross, in the order their words appear in a prompt: [skin, gender] gives "
            "'a photo of a dark woman'."
        ),
        min_length=2,
        max_length=4,
    )
    templates: list[NonEmptyStr] | None = Field(
        None, description="Prompt templates (default: the first crossed axis's templates)."
    )

    @field_validator("axes")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names an axis twice")
        return value

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_templates(value)


MAX_CROSSING_GROUPS = 64
"""Largest number of groups (product of the crossed axes' group counts) a crossing may have."""


def cross_axes(crossing: CrossingSpec, axes: dict[str, AxisSpec]) -> AxisSpec:
    """The k-way axis a crossing stands for: one group per combination of groups, named
    'dark_woman', with every combination of the groups' terms ('dark woman')."""
    parts = [axes[name] for name in crossing.axes]
    groups: dict[str, list[str]] = {}
    for combo in itertools.product(*(list(a.groups.items()) for a in parts)):
        name = "_".join(group for group, _ in combo)
        terms = [" ".join(words) for words in itertools.product(*(t for _, t in combo))]
        groups[name] = terms
    return AxisSpec(
        name=crossing.name,
        templates=list(crossing.templates or parts[0].templates),
        groups=groups,
        defaults=False,
    )


class AuditSpec(_Frozen):
    """A complete, declarative audit."""

    spec_version: Literal[1] = Field(description="Version of this spec format (now 1).")
    name: Name = Field(description="Short audit name, used in file names.")
    description: str = Field("", description="Free text shown in the report.")
    model: ModelSpec
    probe: ProbeSpec = Field(default_factory=lambda: ProbeSpec())
    seeds: int | list[int] = Field(
        description="Number of seeds (0..N-1) or an explicit list; the same for every prompt."
    )
    batch_size: int = Field(8, ge=1, le=4096, description="Prompt x seed pairs per forward.")
    axes: list[AxisSpec] = Field(description="Demographic axes.", min_length=1)
    concepts: list[ConceptSetSpec] = Field(description="Concept sets.", min_length=1)
    crossings: list[CrossingSpec] = Field(
        default_factory=list,
        description="Intersectional descriptor sets built from the axes (e.g. gender x skin).",
    )
    centring: CentringSpec = Field(default_factory=lambda: CentringSpec())
    analyses: list[AnalysisName] = Field(
        default_factory=_default_analyses,
        description="Analyses to run.",
        min_length=1,
    )
    statistics: StatisticsSpec = Field(default_factory=lambda: StatisticsSpec())
    report: ReportSpec = Field(default_factory=lambda: ReportSpec())
    gates: list[GateSpec] = Field(
        default_factory=list,
        description="Pass/fail conditions; 'auditkit run' and 'auditkit check' exit 1 on a fail.",
    )
    captions: CaptionsSpec | None = Field(
        None,
        description=(
            "Decode and caption generated images (the optional captioning stage); absent = off, "
            "and no image is ever decoded."
        ),
    )

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, int):
            if not 1 <= value <= 100_000:
                raise ValueError(f"zero seeds: the seed count must be 1..100000, got {value}")
            return value
        if isinstance(value, list):
            if not value:
                raise ValueError("zero seeds: list at least one seed")
            if len(set(value)) != len(value):
                raise ValueError("a seed is listed twice")
            if any(s < 0 or s >= 2**63 for s in value):
                raise ValueError("seeds must be between 0 and 2**63-1")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> AuditSpec:
        names = (
            [a.name for a in self.axes]
            + [c.name for c in self.concepts]
            + [x.name for x in self.crossings]
        )
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"axis, crossing and concept-set names must be unique; repeated: {dupes}"
            )
        return self

    @model_validator(mode="after")
    def _crossings(self) -> AuditSpec:
        known = {a.name: a for a in self.axes}
        for i, crossing in enumerate(self.crossings):
            for j, name in enumerate(crossing.axes):
                if name not in known:
                    message = f"unknown axis {name!r}; the spec's axes are {sorted(known)}"
                    raise _located_error(("crossings", i, "axes", j), name, message)
            size = math.prod(len(known[n].groups) for n in crossing.axes)
            if size > MAX_CROSSING_GROUPS:
                message = f"gives {size} groups, more than {MAX_CROSSING_GROUPS}"
                raise _located_error(("crossings", i, "axes"), crossing.axes, message)
        return self

    @model_validator(mode="after")
    def _gate_scopes(self) -> AuditSpec:
        axes = {a.name for a in self.axes}
        sets = {c.name for c in self.concepts}
        for i, gate in enumerate(self.gates):
            if gate.axis is not None and gate.axis not in axes:
                message = f"unknown axis {gate.axis!r}; the spec's axes are {sorted(axes)}"
                raise _located_error(("gates", i, "axis"), gate.axis, message)
            if gate.concept_set is not None and gate.concept_set not in sets:
                message = f"unknown concept set {gate.concept_set!r}; the spec has {sorted(sets)}"
                raise _located_error(("gates", i, "concept_set"), gate.concept_set, message)
        return self

    @property
    def analysis_axes(self) -> list[AxisSpec]:
        """The spec's axes followed by one k-way axis per crossing."""
        known = {a.name: a for a in self.axes}
        return [*self.axes, *(cross_axes(x, known) for x in self.crossings)]

    @model_validator(mode="after")
    def _caption_seeds(self) -> AuditSpec:
        wanted = self.captions.seeds if self.captions is not None else None
        if wanted is not None and wanted > len(self.seed_list):
            # Raised with its own location so the loader points at captions.seeds, not the top.
            message = f"asks for {wanted} seeds but the audit has {len(self.seed_list)}"
            raise _located_error(("captions", "seeds"), wanted, message)
        return self

    @model_validator(mode="after")
    def _guidance(self) -> AuditSpec:
        scales = self.captions.guidance if self.captions is not None else []
        for j, scale in enumerate(scales):
            message = None
            if not (math.isfinite(scale) and 1.0 <= scale <= 100.0):
                message = (
                    f"{scale} is not a guidance scale between 1 and 100 (every scale up to 1 "
                    "samples without guidance, as 1 does)"
                )
            elif scale == self.model.guidance_scale:
                message = f"{scale:g} is the audit's own guidance scale (model.guidance_scale)"
            elif scale in scales[:j]:
                message = f"{scale:g} is listed twice"
            if message is not None:
                raise _located_error(("captions", "guidance", j), scale, message)
        if scales and self.captions is not None and "concept" not in self.captions.roles:
            message = "sweeps the concept prompts, but captions.roles does not caption them"
            raise _located_error(("captions", "guidance"), scales, message)
        return self

    @model_validator(mode="after")
    def _causal(self) -> AuditSpec:
        causal = self.captions.causal if self.captions is not None else None
        if causal is None:
            return self
        where = ("captions", "causal")
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        if self.probe.aggregation != "mean" or self.probe.spatial_pool != "none":
            problems.append(
                (
                    where,
                    None,
                    "needs probe.aggregation 'mean' and probe.spatial_pool 'none' (got "
                    f"{self.probe.aggregation!r} and {self.probe.spatial_pool!r}): the axis is "
                    "added to the hook point's output, so it must be one step-mean h of the "
                    "output's full shape",
                )
            )
        axes = {a.name: a for a in self.axes}
        crossings = {x.name for x in self.crossings}
        for j, name in enumerate(causal.axes or []):
            if name in crossings:
                message = f"{name!r} is a crossing (k-way); only two-group axes can be steered"
            elif name not in axes:
                message = f"unknown axis {name!r}; the spec's axes are {sorted(axes)}"
            elif len(axes[name].groups) != 2:
                message = (
                    f"axis {name!r} has {len(axes[name].groups)} groups; only two-group axes "
                    "have a direction to steer along"
                )
            else:
                continue
            problems.append(((*where, "axes", j), name, message))
        terms = sorted({t for cs in self.concepts for t in cs.terms})
        for j, term in enumerate(causal.concepts or []):
            if term not in terms:
                message = f"unknown concept {term!r}; the spec's concepts are {terms}"
                problems.append(((*where, "concepts", j), term, message))
        if causal.seeds is not None and causal.seeds > len(self.seed_list):
            message = f"asks for {causal.seeds} seeds but the audit has {len(self.seed_list)}"
            problems.append(((*where, "seeds"), causal.seeds, message))
        if problems:
            raise _located_errors(problems)
        return self

    @model_validator(mode="after")
    def _discovery(self) -> AuditSpec:
        captions = self.captions
        if (
            captions is not None
            and captions.discovery is not None
            and ("concept" not in captions.roles)
        ):
            message = (
                "mines the captions of the concept prompts, but captions.roles does not "
                "caption them; add 'concept' to captions.roles"
            )
            raise _located_error(("captions", "discovery"), None, message)
        return self

    @property
    def seed_list(self) -> list[int]:
        """The seeds as an explicit list."""
        if isinstance(self.seeds, int):
            return list(range(self.seeds))
        return list(self.seeds)


def _located_error(loc: tuple[str | int, ...], value: Any, message: str) -> ValidationError:
    """A validation error at ``loc`` (a cross-field check would otherwise sit at the top level)."""
    error = PydanticCustomError("value_error", message)
    detail = InitErrorDetails(type=error, loc=loc, input=value)
    return ValidationError.from_exception_data("AuditSpec", [detail])


def _located_errors(problems: list[tuple[tuple[str | int, ...], Any, str]]) -> ValidationError:
    """One validation error listing every (location, value, message) of ``problems``."""
    details = [
        InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)
        for loc, value, message in problems
    ]
    return ValidationError.from_exception_data("AuditSpec", details)


def _check_templates(templates: list[str]) -> list[str]:
    for template in templates:
        if template.count(_TERM_SLOT) != 1:
            raise ValueError(f"template {template!r} must contain '{{term}}' exactly once")
        rest = template.replace(_TERM_SLOT, "")
        if "{" in rest or "}" in rest:
            raise ValueError(f"template {template!r} has a brace other than the '{{term}}' slot")
    return templates


def fill(template: str, term: str) -> str:
    """Put ``term`` into a template's ``{term}`` slot (no other formatting is applied)."""
    return template.replace(_TERM_SLOT, term)
