"""The audit spec: pydantic v2 models, strict (unknown keys refused) and frozen.

Every field carries a description, which ``auditkit schema`` prints as part of the JSON Schema.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class StatisticsSpec(_Frozen):
    """How uncertainty is estimated."""

    bootstrap_resamples: int = Field(
        1000,
        ge=0,
        le=100_000,
        description="Seed-bootstrap resamples for confidence intervals (0 turns them off).",
    )
    seed: int = Field(0, ge=0, description="Seed of the bootstrap's random generator.")


class ReportSpec(_Frozen):
    """What the report says about itself and which formats to write."""

    title: NonEmptyStr = Field("Diffusion model bias audit", description="Report title.")
    owner: str = Field("", description="Who is responsible for this audit.")
    formats: list[ReportFormat] = Field(
        default_factory=_default_formats, description="Report formats to write.", min_length=1
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
    centring: CentringSpec = Field(default_factory=lambda: CentringSpec())
    analyses: list[AnalysisName] = Field(
        default_factory=_default_analyses,
        description="Analyses to run.",
        min_length=1,
    )
    statistics: StatisticsSpec = Field(default_factory=lambda: StatisticsSpec())
    report: ReportSpec = Field(default_factory=lambda: ReportSpec())

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
        names = [a.name for a in self.axes] + [c.name for c in self.concepts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"axis and concept-set names must be unique; repeated: {dupes}")
        return self

    @property
    def seed_list(self) -> list[int]:
        """The seeds as an explicit list."""
        if isinstance(self.seeds, int):
            return list(range(self.seeds))
        return list(self.seeds)


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
