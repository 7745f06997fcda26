"""Pass/fail conditions on an audit's results (:class:`GateSpec`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from auditkit.spec.base import FrozenModel, Name, NonEmptyStr


class GateSpec(FrozenModel):
    """A pass/fail condition on the audit's results (CI fails the build when one fails).

    ``max_abs_lean``: the largest |lean score| (optionally on one axis / concept set) must be at
    most ``max``. ``significant_leans``: the number of significant leans must be at most
    ``max``. ``max_output_gap``: the largest gap between an output share and its reference
    (optionally for one attribute) must be at most ``max``. ``min_agreement``: the Spearman
    agreement between latent leans and output shares on ``axis`` must be at least ``min``.
    """

    name: NonEmptyStr | None = Field(None, description="Name shown in reports and CI output.")
    metric: Name = Field(
        description=(
            "What the gate measures: max_abs_lean, significant_leans, max_output_gap, "
            "min_agreement, or a metric an analysis slice declares."
        )
    )
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
        # which bound a metric takes, and which keys narrow it, its analysis slice declares
        # (auditkit.analyses.checks.check_spec); the spec, below the slices, checks the form
        if (self.max is None) == (self.min is None):
            raise ValueError(f"{self.metric} takes one of 'max' or 'min'")
        if self.metric == "min_agreement" and self.axis is None:
            raise ValueError("min_agreement needs 'axis'")
        return self

    @property
    def label(self) -> str:
        """The gate's name, or one made from its settings."""
        if self.name:
            return self.name
        scope = [x for x in (self.axis, self.attribute, self.concept_set) if x]
        bound = f"<= {self.max:g}" if self.max is not None else f">= {self.min:g}"
        return f"{self.metric}{'[' + ','.join(scope) + ']' if scope else ''} {bound}"


__all__ = ["GateSpec"]
