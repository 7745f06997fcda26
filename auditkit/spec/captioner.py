"""The captioner that reads a run's images (``captions.captioner``): its kind, weights and
options, and the deliberate misreading the reader-calibration tests use."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from auditkit.spec.base import FrozenModel, Name, NonEmptyStr, check_device, check_model_id

CaptionerKind = Literal["toyworld", "image-to-text", "clip", "custom"]

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


__all__ = ["ADAPTER_ENTRY_POINT", "ADAPTER_FILE", "CaptionerKind", "CaptionerSpec", "MisreadSpec"]
