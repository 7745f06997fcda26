"""What every spec model shares: the strict, frozen base class and the name types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
"""What a name (of an audit, axis, group, concept set, attribute) may look like."""


class FrozenModel(BaseModel):
    """Base of every spec model: unknown keys are refused and a validated spec cannot change."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


NonEmptyStr = Annotated[str, Field(min_length=1)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]


__all__ = ["NAME_PATTERN", "FrozenModel", "Name", "NonEmptyStr"]
