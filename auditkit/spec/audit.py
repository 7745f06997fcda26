"""The complete audit (:class:`AuditSpec`): its sections, and the checks that span them.

Every field carries a description, which ``auditkit schema`` prints as part of the JSON Schema.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from auditkit.spec.base import (
    FrozenModel,
    Name,
    NonEmptyStr,
    check_distinct,
    listed,
    repeated,
)
from auditkit.spec.captions import CaptionsSpec
from auditkit.spec.execution import ExecutionSpec
from auditkit.spec.gates import GateSpec
from auditkit.spec.grounding import GroundingSpec
from auditkit.spec.libraries import LibraryUse
from auditkit.spec.sampling import ModelSpec, ProbeSpec
from auditkit.spec.statistics import StatisticsSpec
from auditkit.spec.vocabulary import (
    MAX_CROSSING_GROUPS,
    AxisSpec,
    CentringSpec,
    ConceptSetSpec,
    CrossingSpec,
    cross_axes,
)

SPEC_VERSION = 1
"""The newest spec version this auditkit reads."""

DEFAULT_ANALYSES = ("lean", "defaults", "descriptors", "similarity")
"""What ``analyses:`` is when a spec leaves it out. The analyses are slices
(:mod:`auditkit.analyses`); the spec, below them, takes any name, and
``auditkit.analyses.check_spec`` refuses an unknown one (every command that runs or plans an
audit calls it)."""
ReportFormat = Literal["html", "pdf"]


def _default_analyses() -> list[str]:
    return list(DEFAULT_ANALYSES)


def _default_formats() -> list[ReportFormat]:
    return ["html"]


class ReportSpec(FrozenModel):
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


class AuditSpec(FrozenModel):
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
    analyses: list[Name] = Field(
        default_factory=_default_analyses,
        description=(
            "Analyses to run: lean, defaults, descriptors, similarity, and the analysis "
            "slices' names (see 'auditkit analyses')."
        ),
        min_length=1,
    )
    statistics: StatisticsSpec = Field(default_factory=lambda: StatisticsSpec())
    report: ReportSpec = Field(default_factory=lambda: ReportSpec())
    gates: list[GateSpec] = Field(
        default_factory=list,
        description="Pass/fail conditions; 'auditkit run' and 'auditkit check' exit 1 on a fail.",
    )
    execution: ExecutionSpec = Field(
        default_factory=lambda: ExecutionSpec(),
        description="Where the sampling runs (local, or a Ray cluster); never part of the hash.",
    )
    captions: CaptionsSpec | None = Field(
        None,
        description=(
            "Decode and caption generated images (the optional captioning stage); absent = off, "
            "and no image is ever decoded."
        ),
    )

    grounding: GroundingSpec | None = Field(
        None,
        description=(
            "Image-grounded axes: labelled images read through the denoiser, compared with the "
            "prompt-derived axes; absent = off."
        ),
    )
    libraries: list[LibraryUse] = Field(
        default_factory=list,
        description=(
            "The prompt-library versions the concept sets and axes were taken from (filled in "
            "when a spec's entry names a library; see 'auditkit prompts')."
        ),
    )

    @field_validator("spec_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if isinstance(value, bool):  # True == 1, but a boolean is not a version
            raise ValueError(f"must be the number 1, not {str(value).lower()}")
        return value

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
            check_distinct(value, "a seed is listed twice")
            if any(s < 0 or s >= 2**63 for s in value):
                raise ValueError("seeds must be between 0 and 2**63-1")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> AuditSpec:
        """The checks that span sections. Each check lists every problem it finds and all of
        them are raised together, each at its own location (one ``model_validator`` per check
        would stop at the first that fails)."""
        problems = [
            *_name_problems(self),
            *_crossing_problems(self),
            *_gate_problems(self),
            *_caption_seed_problems(self),
            *_guidance_problems(self),
            *_causal_problems(self),
            *_discovery_problems(self),
            *_grounding_problems(self),
            *_storage_problems(self),
            *_effect_problems(self),
        ]
        if problems:
            raise _located_errors(problems)
        return self

    @property
    def analysis_axes(self) -> list[AxisSpec]:
        """The spec's axes followed by one k-way axis per crossing."""
        known = {a.name: a for a in self.axes}
        return [*self.axes, *(cross_axes(x, known) for x in self.crossings)]

    @property
    def seed_list(self) -> list[int]:
        """The seeds as an explicit list."""
        if isinstance(self.seeds, int):
            return list(range(self.seeds))
        return list(self.seeds)


Location = tuple[str | int, ...]
Problem = tuple[Location, Any, str]
"""A cross-field problem: where in the spec it is, the value found there, and what is wrong.
The location is what the loader shows (``crossings[0].axes[1]``); ``()`` is the top level."""


def _located_errors(problems: list[Problem]) -> ValidationError:
    """One validation error listing every problem, each at its own location (a cross-field
    check would otherwise sit at the top level)."""
    details = [
        InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)
        for loc, value, message in problems
    ]
    return ValidationError.from_exception_data("AuditSpec", details)


def _storage_problems(spec: AuditSpec) -> list[Problem]:
    probe = spec.probe
    if not isinstance(probe.per_step_h, list):
        return []
    where: Location = ("probe", "per_step_h")
    if probe.aggregation == "per_step":
        message = "aggregation 'per_step' reads every kept step: per_step_h must be 'all' or 'auto'"
        return [(where, probe.per_step_h, message)]
    kept = set(range(spec.model.steps) if probe.steps == "all" else probe.steps)
    stray = [s for s in probe.per_step_h if s not in kept or s >= spec.model.steps]
    if stray:
        message = f"steps {stray} are not kept steps (probe.steps within model.steps)"
        return [(where, probe.per_step_h, message)]
    return []


def _name_problems(spec: AuditSpec) -> list[Problem]:
    names = (
        [a.name for a in spec.axes]
        + [c.name for c in spec.concepts]
        + [x.name for x in spec.crossings]
    )
    dupes = repeated(names)
    if not dupes:
        return []
    message = f"axis, crossing and concept-set names must be unique; repeated: {dupes}"
    return [((), None, message)]


def _crossing_problems(spec: AuditSpec) -> list[Problem]:
    known = {a.name: a for a in spec.axes}
    problems: list[Problem] = []
    for i, crossing in enumerate(spec.crossings):
        unknown = [(j, name) for j, name in enumerate(crossing.axes) if name not in known]
        for j, name in unknown:
            message = f"unknown axis {name!r}; the spec's axes are {listed(known)}"
            problems.append((("crossings", i, "axes", j), name, message))
        if unknown:
            continue  # the size needs every axis
        size = math.prod(len(known[n].groups) for n in crossing.axes)
        if size > MAX_CROSSING_GROUPS:
            message = f"gives {size} groups, more than {MAX_CROSSING_GROUPS}"
            problems.append((("crossings", i, "axes"), crossing.axes, message))
    return problems


def _gate_problems(spec: AuditSpec) -> list[Problem]:
    axes = {a.name for a in spec.axes}
    sets = {c.name for c in spec.concepts}
    problems: list[Problem] = []
    for i, gate in enumerate(spec.gates):
        if gate.axis is not None and gate.axis not in axes:
            message = f"unknown axis {gate.axis!r}; the spec's axes are {listed(axes)}"
            problems.append((("gates", i, "axis"), gate.axis, message))
        if gate.concept_set is not None and gate.concept_set not in sets:
            message = f"unknown concept set {gate.concept_set!r}; the spec has {listed(sets)}"
            problems.append((("gates", i, "concept_set"), gate.concept_set, message))
    return problems


def _caption_seed_problems(spec: AuditSpec) -> list[Problem]:
    wanted = spec.captions.seeds if spec.captions is not None else None
    if wanted is None or wanted <= len(spec.seed_list):
        return []
    message = f"asks for {wanted} seeds but the audit has {len(spec.seed_list)}"
    return [(("captions", "seeds"), wanted, message)]


def _guidance_problems(spec: AuditSpec) -> list[Problem]:
    if spec.captions is None:
        return []
    scales = spec.captions.guidance
    problems: list[Problem] = []
    seen: set[float] = set()
    for j, scale in enumerate(scales):
        if not (math.isfinite(scale) and 1.0 <= scale <= 100.0):
            message = (
                f"{scale} is not a guidance scale between 1 and 100 (every scale up to 1 "
                "samples without guidance, as 1 does)"
            )
        elif scale == spec.model.guidance_scale:
            message = f"{scale:g} is the audit's own guidance scale (model.guidance_scale)"
        elif scale in seen:
            message = f"{scale:g} is listed twice"
        else:
            seen.add(scale)
            continue
        problems.append((("captions", "guidance", j), scale, message))
    if scales and "concept" not in spec.captions.roles:
        message = "sweeps the concept prompts, but captions.roles does not caption them"
        problems.append((("captions", "guidance"), scales, message))
    return problems


def _causal_problems(spec: AuditSpec) -> list[Problem]:
    causal = spec.captions.causal if spec.captions is not None else None
    if causal is None:
        return []
    where = ("captions", "causal")
    problems: list[Problem] = []
    if spec.probe.aggregation != "mean" or spec.probe.spatial_pool != "none":
        problems.append(
            (
                where,
                None,
                "needs probe.aggregation 'mean' and probe.spatial_pool 'none' (got "
                f"{spec.probe.aggregation!r} and {spec.probe.spatial_pool!r}): the axis is "
                "added to the hook point's output, so it must be one step-mean h of the "
                "output's full shape",
            )
        )
    problems += _two_group_axis_problems(
        spec, causal.axes or [], (*where, "axes"), "steered", "to steer along"
    )
    known = {t for cs in spec.concepts for t in cs.terms}
    for j, term in enumerate(causal.concepts or []):
        if term not in known:
            message = f"unknown concept {term!r}; the spec's concepts are {listed(known)}"
            problems.append(((*where, "concepts", j), term, message))
    if causal.seeds is not None and causal.seeds > len(spec.seed_list):
        message = f"asks for {causal.seeds} seeds but the audit has {len(spec.seed_list)}"
        problems.append(((*where, "seeds"), causal.seeds, message))
    return problems


def _discovery_problems(spec: AuditSpec) -> list[Problem]:
    captions = spec.captions
    if captions is None or captions.discovery is None or "concept" in captions.roles:
        return []
    message = (
        "mines the captions of the concept prompts, but captions.roles does not "
        "caption them; add 'concept' to captions.roles"
    )
    return [(("captions", "discovery"), None, message)]


def _grounding_problems(spec: AuditSpec) -> list[Problem]:
    grounding = spec.grounding
    if grounding is None or grounding.axes is None:
        return []
    return _two_group_axis_problems(
        spec, grounding.axes, ("grounding", "axes"), "grounded", "to compare with images"
    )


def judged_effect(spec: AuditSpec) -> str:
    """The statistic the spec's min_effect rule judges: ``statistics.effect``, with ``auto``
    resolved (the position where every two-group axis is marked and the defaults analysis
    runs, else the score)."""
    effect = spec.statistics.effect
    if effect != "auto":
        return effect
    marked = "defaults" in spec.analyses and all(
        axis.defaults for axis in spec.axes if len(axis.groups) == 2
    )
    return "marked_position" if marked else "score"


def judged_band(spec: AuditSpec) -> float:
    """The band of the judged statistic: ``min_position`` for the position, else
    ``min_effect``."""
    stats = spec.statistics
    return stats.min_position if judged_effect(spec) == "marked_position" else stats.min_effect


def _effect_problems(spec: AuditSpec) -> list[Problem]:
    """The position between marked variants, asked for by name, needs every two-group axis
    marked."""
    stats = spec.statistics
    if stats.effect != "marked_position" or stats.rule != "min_effect":
        return []
    why = "statistics.effect 'marked_position' judges each lean by its marked variants"
    problems: list[Problem] = []
    if "defaults" not in spec.analyses:
        problems.append(
            (
                ("analyses",),
                spec.analyses,
                f"{why}, which the defaults analysis samples; add "
                "'defaults' to analyses (or set statistics.effect: score)",
            )
        )
    for i, axis in enumerate(spec.axes):
        if len(axis.groups) == 2 and not axis.defaults:
            problems.append(
                (
                    ("axes", i, "defaults"),
                    False,
                    f"{why}; axis {axis.name!r} has none: set "
                    "defaults: true (or statistics.effect: score)",
                )
            )
    return problems


def _two_group_axis_problems(
    spec: AuditSpec, names: list[str], where: Location, done: str, purpose: str
) -> list[Problem]:
    """A section's list of axes that must be two-group axes of the spec (steered, grounded):
    a crossing, an unknown axis or one of k groups is a problem at ``where[j]``."""
    axes = {a.name: a for a in spec.axes}
    crossings = {x.name for x in spec.crossings}
    problems: list[Problem] = []
    for j, name in enumerate(names):
        if name in crossings:
            message = f"{name!r} is a crossing (k-way); only two-group axes can be {done}"
        elif name not in axes:
            message = f"unknown axis {name!r}; the spec's axes are {listed(axes)}"
        elif len(axes[name].groups) != 2:
            message = (
                f"axis {name!r} has {len(axes[name].groups)} groups; only two-group axes "
                f"have a direction {purpose}"
            )
        else:
            continue
        problems.append(((*where, j), name, message))
    return problems


__all__ = [
    "SPEC_VERSION",
    "AuditSpec",
    "ReportFormat",
    "ReportSpec",
    "judged_band",
    "judged_effect",
]
