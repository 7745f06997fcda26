"""Versioned prompt libraries shipped with auditkit: terms with their sources.

A library is one YAML file ``libraries/<name>@<version>.yaml`` in this package: a concept list
(occupations, adjectives, activities, objects) or an axis (gender, age, skin tone, perceived
ethnicity) in one or more wordings, with the source its terms come from (a citation, a URL,
the license) and, where an exact statistic exists, an optional reference table with its own
source and year. A library is identified by ``name@version`` and its content hash (sha256 of
its canonical JSON); a changed library is a new version, and a test freezes the hash of every
shipped version (docs/prompt-libraries.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from auditkit.errors import UsageError
from auditkit.prompts.rules import check_groups, check_templates

LIBRARY_FORMAT = 1
"""The one library file format this auditkit reads (``library_format`` in every file)."""
LIBRARY_NAME = r"^[a-z0-9][a-z0-9-]*$"
REFERENCE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9-]*)(?:@(?P<version>[0-9]+))?$")
"""How a library is named in a spec or on the command line: ``occupations@1`` or ``gender``
(the newest version)."""

NonEmptyStr = Annotated[str, Field(min_length=1)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_]*$")]
"""A wording's or a group's name: usable as an axis group name in a spec."""


class FrozenModel(BaseModel):
    """Strict and frozen, like the spec's models: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Source(FrozenModel):
    """Where a library's terms (or a reference table's numbers) come from."""

    citation: NonEmptyStr = Field(description="Full citation of the source.")
    url: NonEmptyStr = Field(description="The source's address.")
    license: NonEmptyStr = Field(description="The license of the source material.")
    notes: str | None = Field(
        None, description="How auditkit derived the terms from the source; its own curation."
    )


class Reference(FrozenModel):
    """A published statistic per term (e.g. women's share of employed persons per
    occupation): context for a reader, never the truth about a model."""

    statistic: NonEmptyStr
    year: int
    source: Source
    values: dict[NonEmptyStr, float] = Field(min_length=1)


class Wording(FrozenModel):
    """One way of putting an axis into words: templates and the terms of each group."""

    description: NonEmptyStr
    templates: list[NonEmptyStr] = Field(min_length=1)
    groups: dict[Name, list[NonEmptyStr]]
    qualifiers: dict[Name, NonEmptyStr] | None = None

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        return check_templates(value)

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return check_groups(value)


class PromptLibrary(FrozenModel):
    """One version of one library (the file's content, validated)."""

    library_format: Literal[1]
    name: str = Field(pattern=LIBRARY_NAME, max_length=48)
    version: int = Field(ge=1)
    kind: Literal["concepts", "axis"]
    title: NonEmptyStr
    description: NonEmptyStr
    source: Source
    templates: list[NonEmptyStr] | None = None
    terms: list[NonEmptyStr] | None = None
    categories: dict[NonEmptyStr, list[NonEmptyStr]] | None = None
    reference: Reference | None = None
    default_wording: Name | None = None
    wordings: dict[Name, Wording] | None = None

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_templates(value)

    @field_validator("terms")
    @classmethod
    def _terms(cls, value: list[str] | None) -> list[str] | None:
        twice = sorted({t for t in value or [] if (value or []).count(t) > 1})
        if twice:
            raise ValueError(f"terms repeat: {twice}")
        return value

    @model_validator(mode="after")
    def _kind(self) -> PromptLibrary:
        concept_fields = {"templates": self.templates, "terms": self.terms}
        axis_fields = {"default_wording": self.default_wording, "wordings": self.wordings}
        concepts = self.kind == "concepts"
        own, other = (concept_fields, axis_fields) if concepts else (axis_fields, concept_fields)
        missing = [k for k, v in own.items() if v is None]
        stray = [k for k, v in other.items() if v is not None]
        if self.kind == "axis" and self.categories is not None:
            stray.append("categories")
        if self.kind == "axis" and self.reference is not None:
            stray.append("reference")
        if missing or stray:
            raise ValueError(
                f"a '{self.kind}' library needs {missing or 'nothing more'} and may not have "
                f"{stray or 'anything else'}"
            )
        terms = set(self.terms or [])
        for category, members in (self.categories or {}).items():
            unknown = [t for t in members if t not in terms]
            if unknown:
                raise ValueError(f"category {category!r} names terms not in terms: {unknown}")
        if self.reference is not None:
            unknown = [t for t in self.reference.values if t not in terms]
            if unknown:
                raise ValueError(f"reference.values names terms not in terms: {unknown}")
        if self.wordings is not None and self.default_wording not in self.wordings:
            raise ValueError(
                f"default_wording {self.default_wording!r} is not one of {sorted(self.wordings)}"
            )
        return self

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    def wording(self, name: str | None = None) -> Wording:
        """The wording ``name`` (default: the library's default); KeyError when unknown."""
        assert self.wordings is not None and self.default_wording is not None
        return self.wordings[name or self.default_wording]

    def all_terms(self) -> list[str]:
        """Every term: a concept library's terms, or every group term of every wording."""
        if self.terms is not None:
            return list(self.terms)
        out: list[str] = []
        for wording in (self.wordings or {}).values():
            for terms in wording.groups.values():
                out.extend(t for t in terms if t not in out)
        return out


class ShippedLibrary(FrozenModel):
    """A library as shipped: its content, its content hash and its file name."""

    library: PromptLibrary
    sha256: str
    file: str


def content_hash(document: Any) -> str:
    """sha256 of the canonical JSON of a library file's content (keys sorted, no spaces, UTF-8):
    comments and layout of the YAML do not count, every value does."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parse_library(text: str, *, source: str) -> ShippedLibrary:
    """Validate one library file's text; ValueError naming the file and every problem."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{source}: a library file is a mapping of keys")
    try:
        library = PromptLibrary.model_validate(document, strict=True)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ValueError(f"{source}: {problems}") from None
    expected = f"{library.name}@{library.version}.yaml"
    if source.rsplit("/", 1)[-1] != expected:
        raise ValueError(f"{source}: a library file must be named {expected}")
    return ShippedLibrary(library=library, sha256=content_hash(document), file=expected)


@functools.cache
def shipped() -> tuple[ShippedLibrary, ...]:
    """Every library version shipped in this package, sorted by name and version."""
    folder = resources.files("auditkit.prompts") / "libraries"
    found = [
        parse_library(entry.read_text(encoding="utf-8"), source=f"libraries/{entry.name}")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    ]
    return tuple(sorted(found, key=lambda s: (s.library.name, s.library.version)))


def find_library(ref: str) -> ShippedLibrary:
    """The shipped library ``ref`` names (``name@version``, or ``name`` for its newest
    version); :class:`UsageError` saying what exists when there is none."""
    match = REFERENCE.match(ref.strip())
    if match is None:
        raise UsageError(
            f"{ref!r} does not name a prompt library: write NAME@VERSION, e.g. occupations@1.",
            hint="'auditkit prompts list' shows every library and version.",
        )
    name, version = match["name"], match["version"]
    versions = [s for s in shipped() if s.library.name == name]
    if not versions:
        import difflib

        names = sorted({s.library.name for s in shipped()})
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        guess = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(
            f"There is no prompt library named {name!r}.{guess}",
            hint=f"the libraries are: {', '.join(names)} ('auditkit prompts list').",
        )
    if version is None:
        return versions[-1]
    for candidate in versions:
        if candidate.library.version == int(version):
            return candidate
    shown = ", ".join(s.library.ref for s in versions)
    raise UsageError(
        f"Prompt library {name!r} has no version {version}.",
        hint=f"the versions shipped are {shown}.",
    )


def search_terms(text: str) -> list[tuple[ShippedLibrary, str, str]]:
    """Every (library, where, term) whose term, group or category contains ``text``
    (case-insensitive); ``where`` says which part of the library it is in."""
    needle = text.strip().lower()
    found: list[tuple[ShippedLibrary, str, str]] = []
    for entry in shipped():
        lib = entry.library
        if lib.terms is not None:
            category = {t: c for c, members in (lib.categories or {}).items() for t in members}
            for term in lib.terms:
                if needle in term.lower() or needle in category.get(term, "").lower():
                    where = f"category {category[term]}" if term in category else "terms"
                    found.append((entry, where, term))
        for wname, wording in (lib.wordings or {}).items():
            for group, terms in wording.groups.items():
                for term in terms:
                    if needle in term.lower() or needle in group.lower():
                        found.append((entry, f"wording {wname}, group {group}", term))
    return found


__all__ = [
    "LIBRARY_FORMAT",
    "PromptLibrary",
    "Reference",
    "ShippedLibrary",
    "Source",
    "Wording",
    "content_hash",
    "find_library",
    "parse_library",
    "search_terms",
    "shipped",
]
