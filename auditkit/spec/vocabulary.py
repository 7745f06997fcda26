"""The audit's words: demographic axes, concept sets, crossings of axes, the centring
reference, and the prompt templates they are put into."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import Field, field_validator, model_validator

from auditkit.prompts.rules import TERM_SLOT, check_groups, check_templates, fill
from auditkit.spec.base import FrozenModel, Name, NonEmptyStr, check_distinct


class AxisSpec(FrozenModel):
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
    qualifiers: dict[Name, NonEmptyStr] | None = Field(
        None,
        description=(
            "How each group reads when it qualifies another axis's term in a crossing, e.g. "
            "{light: light-skinned, dark: dark-skinned} gives 'a photo of a light-skinned man'. "
            "Default: each term without a trailing 'person', 'people' or 'individual' "
            "('light person' qualifies as 'light': 'a light man')."
        ),
    )

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        return check_templates(value)

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return check_groups(value)

    @model_validator(mode="after")
    def _markers(self) -> AxisSpec:
        for key, given in (("markers", self.markers), ("qualifiers", self.qualifiers)):
            if given is None:
                continue
            missing = set(self.groups) - set(given)
            extra = set(given) - set(self.groups)
            if missing or extra:
                raise ValueError(
                    f"{key} must name exactly the groups {sorted(self.groups)}"
                    f" (missing {sorted(missing)}, unknown {sorted(extra)})"
                )
        return self

    def qualifier_terms(self, group: str) -> list[str]:
        """How ``group`` reads in front of another axis's term (a crossing): its declared
        qualifier, or each term less a trailing generic noun ('light person' -> 'light')."""
        if self.qualifiers is not None:
            return [self.qualifiers[group]]
        out = []
        for term in self.groups[group]:
            words = term.split()
            if len(words) > 1 and words[-1].lower() in GENERIC_NOUNS:
                words = words[:-1]
            out.append(" ".join(words))
        return list(dict.fromkeys(out))

    def marker(self, group: str) -> str:
        """The word that marks a concept as belonging to ``group``."""
        if self.markers is not None:
            return self.markers[group]
        return self.groups[group][0]


class ConceptSetSpec(FrozenModel):
    """Neutral concepts (occupations, traits, objects) whose lean is measured."""

    name: Name = Field(description="Concept set name, e.g. 'occupations'.")
    templates: list[NonEmptyStr] = Field(
        description="Prompt templates with a '{term}' slot.", min_length=1
    )
    terms: list[NonEmptyStr] = Field(description="Concept terms, e.g. 'doctor'.", min_length=1)

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        return check_templates(value)

    @field_validator("terms")
    @classmethod
    def _terms(cls, value: list[str]) -> list[str]:
        return check_distinct(value, "terms repeat: {repeated}")


class CentringSpec(FrozenModel):
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


class CrossingSpec(FrozenModel):
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
        return check_distinct(value, "names an axis twice")

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_templates(value)


GENERIC_NOUNS = ("person", "people", "individual")
"""Head nouns a qualifier drops by default ('light person' qualifies a noun as 'light')."""
MAX_CROSSING_GROUPS = 64
"""Largest number of groups (product of the crossed axes' group counts) a crossing may have."""


def cross_axes(crossing: CrossingSpec, axes: dict[str, AxisSpec]) -> AxisSpec:
    """The k-way axis a crossing stands for: one group per combination of groups, named
    'dark_woman'. Its terms read naturally: the last crossed axis gives the noun (its terms as
    they are), the others qualify it (:meth:`AxisSpec.qualifier_terms`): skin x gender with
    terms 'dark person' and 'woman' gives 'dark woman', or 'dark-skinned woman' with the
    qualifier declared."""
    parts = [axes[name] for name in crossing.axes]
    groups: dict[str, list[str]] = {}
    for combo in itertools.product(*(list(a.groups) for a in parts)):
        name = "_".join(combo)
        words = [a.qualifier_terms(g) for a, g in zip(parts[:-1], combo[:-1], strict=True)]
        words.append(parts[-1].groups[combo[-1]])
        terms = [" ".join(chosen) for chosen in itertools.product(*words)]
        groups[name] = list(dict.fromkeys(terms))
    return AxisSpec(
        name=crossing.name,
        templates=list(crossing.templates or parts[0].templates),
        groups=groups,
        defaults=False,
    )


__all__ = [
    "MAX_CROSSING_GROUPS",
    "TERM_SLOT",
    "AxisSpec",
    "CentringSpec",
    "ConceptSetSpec",
    "CrossingSpec",
    "check_templates",
    "cross_axes",
    "fill",
]
