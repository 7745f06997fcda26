"""The complete audit (:class:`AuditSpec`) and its sections; the checks that span them are in
:mod:`auditkit.spec.cross_checks`.

Every field carries a description, which ``auditkit schema`` prints as part of the JSON Schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from auditkit.spec.base import (
    FrozenModel,
    Name,
    NonEmptyStr,
    check_distinct,
)
from auditkit.spec.captions import CaptionsSpec
from auditkit.spec.execution import ExecutionSpec
from auditkit.spec.gates import GateSpec
from auditkit.spec.grounding import GroundingSpec
from auditkit.spec.libraries import LibraryUse
from auditkit.spec.sampling import ModelSpec, ProbeSpec
from auditkit.spec.statistics import StatisticsSpec
from auditkit.spec.vocabulary import (
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
        from auditkit.spec.cross_checks import cross_field_problems, located_errors

        problems = cross_field_problems(self)
        if problems:
            raise located_errors(problems)
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


from auditkit.spec.cross_checks import judged_band, judged_effect  # noqa: E402

__all__ = [
    "SPEC_VERSION",
    "AuditSpec",
    "ReportFormat",
    "ReportSpec",
    "judged_band",
    "judged_effect",
]
