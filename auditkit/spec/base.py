"""What every spec model shares: the strict, frozen base class and the name types."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
"""What a name (of an audit, axis, group, concept set, attribute) may look like."""


class FrozenModel(BaseModel):
    """Base of every spec model: unknown keys are refused and a validated spec cannot change."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


NonEmptyStr = Annotated[str, Field(min_length=1)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]


def one_of(names: tuple[str, ...] | list[str]) -> Any:
    """A string type that must be one of ``names`` (known only at import, e.g. the analysis
    slices' names): the error and the JSON Schema read as a Literal's would."""
    allowed = tuple(names)

    def check(value: str) -> str:
        if value not in allowed:
            raise PydanticCustomError(
                "literal_error",
                "Input should be {expected}",
                {"expected": ", ".join(map(repr, allowed[:-1])) + f" or {allowed[-1]!r}"},
            )
        return value

    return Annotated[
        str, AfterValidator(check), WithJsonSchema({"enum": list(allowed), "type": "string"})
    ]


__all__ = ["NAME_PATTERN", "FrozenModel", "Name", "NonEmptyStr", "one_of"]
