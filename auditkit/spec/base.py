"""What every spec model shares: the strict, frozen base class and the name types."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
"""What a name (of an audit, axis, group, concept set, attribute) may look like."""


class FrozenModel(BaseModel):
    """Base of every spec model: unknown keys are refused, every number is finite (no NaN or
    infinity) and a validated spec cannot change. The loader validates strictly besides (a
    boolean is not a number there)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)


NonEmptyStr = Annotated[str, Field(min_length=1)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]

T = TypeVar("T")


def repeated(values: Sequence[T]) -> list[T]:
    """The values that occur more than once in ``values``, sorted."""
    counts = Counter(values)
    return sorted(v for v, n in counts.items() if n > 1)  # type: ignore[type-var]


def listed(names: Iterable[str], limit: int = 20) -> str:
    """``names`` sorted, as a message shows them: the first ``limit`` and how many more."""
    ordered = sorted(names)
    shown = str(ordered[:limit])
    return shown if len(ordered) <= limit else f"{shown[:-1]}, ... ({len(ordered) - limit} more)]"


def check_distinct(values: list[T], message: str) -> list[T]:
    """``values``, when none repeats; else ValueError(``message``), in which ``{repeated}``
    stands for the sorted repeated values (a validator's check of a list of names, seeds,
    steps)."""
    twice = repeated(values)
    if twice:
        raise ValueError(message.format(repeated=twice))
    return values


def check_model_id(value: str) -> str:
    """``value``, when it has no control character (a NUL cannot name a folder or a hub id);
    else ValueError naming the first."""
    for i, char in enumerate(value):
        if ord(char) < 32 or ord(char) == 127:
            raise ValueError(f"contains the control character {char!r} (position {i + 1})")
    return value


def check_device(value: str, devices: tuple[str, ...]) -> str:
    """``value``, when it names one of ``devices`` (``"cuda:N"`` stands for every CUDA index);
    else ValueError naming them."""
    pattern = "|".join(r"cuda:\d+" if d == "cuda:N" else re.escape(d) for d in devices)
    if not re.fullmatch(pattern, value):
        quoted = [f"'{d}'" for d in devices]
        raise ValueError(f"must be {', '.join(quoted[:-1])} or {quoted[-1]}")
    return value


__all__ = [
    "NAME_PATTERN",
    "FrozenModel",
    "Name",
    "NonEmptyStr",
    "check_device",
    "check_distinct",
    "check_model_id",
    "listed",
    "repeated",
]
