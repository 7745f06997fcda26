"""Concept sets and axes taken from a prompt library (docs/prompt-libraries.md).

A spec may write ``concepts: [{library: occupations@1, select: [nurse, chef]}]`` or
``axes: [{library: gender@1, wording: nouns}]``. Before the spec is validated, each such entry
is expanded into the plain concept set or axis it stands for, and the spec records which
library version (and content hash) each came from in ``libraries``. The resolved spec a run
writes therefore holds the expanded terms and the hashes: it validates and hashes the same
without the library, and a later library version cannot change what a run used.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import Field, ValidationError

from auditkit.errors import UsageError
from auditkit.prompts import ShippedLibrary, find_library
from auditkit.spec.base import FrozenModel, Name, NonEmptyStr

Located = tuple[tuple[str | int, ...], str]


class LibraryUse(FrozenModel):
    """Where a library version was used in a spec: recorded in the resolved spec, the manifest
    and the report."""

    library: NonEmptyStr = Field(description="Library name, e.g. 'occupations'.")
    version: int = Field(ge=1, description="Library version.")
    sha256: str = Field(description="Content hash of that library version.")
    used_in: NonEmptyStr = Field(description="Where in the spec: 'concepts[0]', 'axes[1]'.")
    name: Name = Field(description="The concept set's or axis's name in this spec.")
    wording: str | None = Field(None, description="The axis wording used (axis libraries).")
    terms: int = Field(ge=1, description="Terms (concepts) or group terms (axes) taken.")


class ConceptLibraryEntry(FrozenModel):
    """A concept set taken from a prompt library (an entry under ``concepts``)."""

    library: NonEmptyStr = Field(description="NAME@VERSION of a concepts library.")
    select: list[NonEmptyStr] | None = Field(None, min_length=1)
    exclude: list[NonEmptyStr] | None = None
    name: Name | None = None
    templates: list[NonEmptyStr] | None = None


class AxisLibraryEntry(FrozenModel):
    """An axis taken from a prompt library (an entry under ``axes``)."""

    library: NonEmptyStr = Field(description="NAME@VERSION of an axis library.")
    wording: Name | None = None
    select: list[Name] | None = Field(None, min_length=2)
    name: Name | None = None
    templates: list[NonEmptyStr] | None = None
    defaults: bool | None = None
    markers: dict[Name, NonEmptyStr] | None = None
    qualifiers: dict[Name, NonEmptyStr] | None = None


def expand_libraries(data: dict[str, Any]) -> tuple[dict[str, Any], list[Located]]:
    """``data`` with every library entry under ``concepts`` and ``axes`` expanded and the uses
    appended to ``libraries``; and the located problems of the entries that cannot be."""
    problems: list[Located] = []
    uses: list[dict[str, Any]] = []
    out = dict(data)
    for section, expand in (("concepts", _concept_set), ("axes", _axis)):
        entries = data.get(section)
        if not isinstance(entries, list):
            continue
        expanded: list[Any] = []
        for index, entry in enumerate(entries):
            if not (isinstance(entry, dict) and "library" in entry):
                expanded.append(entry)
                continue
            where: tuple[str | int, ...] = (section, index)
            result = expand(entry, where, problems)
            if result is None:
                expanded.append(entry)  # left for validation to locate nothing more
                continue
            plain, use = result
            expanded.append(plain)
            uses.append(use)
        out[section] = expanded
    if uses:
        before = data.get("libraries")
        out["libraries"] = [*(before if isinstance(before, list) else []), *uses]
    return out, problems


def _reference(
    model: type[ConceptLibraryEntry] | type[AxisLibraryEntry],
    entry: dict[str, Any],
    where: tuple[str | int, ...],
    kind: str,
    problems: list[Located],
) -> tuple[Any, ShippedLibrary] | None:
    """The validated entry and its library, or None with the problems added."""
    try:
        ref = model.model_validate(entry, strict=True)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(model.model_fields)
                msg = f"unknown key {loc[-1]!r} in a library entry (it may have: {allowed})"
            problems.append(((*where, *loc), msg))
        return None
    try:
        shipped = find_library(ref.library)
    except UsageError as exc:
        problems.append(((*where, "library"), f"{exc.message} ({exc.hint})"))
        return None
    if shipped.library.kind != kind:
        other = "axes" if shipped.library.kind == "axis" else "concepts"
        problems.append(
            (
                (*where, "library"),
                f"{shipped.library.ref} is a{'n' if kind == 'concepts' else ''} "
                f"{shipped.library.kind} library: list it under '{other}'",
            )
        )
        return None
    return ref, shipped


def _guess(value: str, known: list[str]) -> str:
    """'; did you mean ...?' naming the known values close to ``value``, or ''."""
    close = difflib.get_close_matches(value, known, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _unknown(
    given: list[str], known: list[str], what: str, where: tuple[str | int, ...]
) -> list[Located]:
    return [
        ((*where, i), f"{value!r} is not a {what} of this library{_guess(value, known)}")
        for i, value in enumerate(given)
        if value not in known
    ]


def _default_name(shipped: ShippedLibrary) -> str:
    return shipped.library.name.replace("-", "_")


def _use(
    shipped: ShippedLibrary, where: tuple[str | int, ...], name: str, terms: int,
    wording: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    lib = shipped.library
    used_in = f"{where[0]}[{where[1]}]"
    return LibraryUse(
        library=lib.name, version=lib.version, sha256=shipped.sha256, used_in=used_in,
        name=name, wording=wording, terms=terms,
    ).model_dump(mode="json")  # fmt: skip


def _concept_set(
    entry: dict[str, Any], where: tuple[str | int, ...], problems: list[Located]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    found = _reference(ConceptLibraryEntry, entry, where, "concepts", problems)
    if found is None:
        return None
    ref, shipped = found
    lib = shipped.library
    known = list(lib.terms or [])
    wrong = [
        *_unknown(ref.select or [], known, "term", (*where, "select")),
        *_unknown(ref.exclude or [], known, "term", (*where, "exclude")),
    ]
    chosen = [t for t in (ref.select or known) if t not in set(ref.exclude or [])]
    if not wrong and not chosen:
        wrong.append(((*where, "exclude"), "excludes every term: nothing is left to audit"))
    if wrong:
        problems.extend(wrong)
        return None
    name = ref.name or _default_name(shipped)
    plain = {"name": name, "templates": list(ref.templates or lib.templates or []),
             "terms": chosen}  # fmt: skip
    return plain, _use(shipped, where, name, len(chosen))


def _axis(
    entry: dict[str, Any], where: tuple[str | int, ...], problems: list[Located]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    found = _reference(AxisLibraryEntry, entry, where, "axis", problems)
    if found is None:
        return None
    ref, shipped = found
    lib = shipped.library
    wordings = sorted(lib.wordings or {})
    if ref.wording is not None and ref.wording not in wordings:
        problems.append(
            ((*where, "wording"), f"{lib.ref} has no wording {ref.wording!r} (it has "
             f"{', '.join(wordings)}){_guess(ref.wording, wordings)}")
        )  # fmt: skip
        return None
    wording_name = ref.wording or lib.default_wording
    wording = lib.wording(wording_name)
    groups = list(wording.groups)
    wrong = _unknown(ref.select or [], groups, "group", (*where, "select"))
    if wrong:
        problems.extend(wrong)
        return None
    chosen = ref.select or groups
    name = ref.name or _default_name(shipped)
    plain: dict[str, Any] = {
        "name": name,
        "templates": list(ref.templates or wording.templates),
        "groups": {g: list(wording.groups[g]) for g in chosen},
    }
    own = {g: wording.qualifiers[g] for g in chosen} if wording.qualifiers else None
    qualifiers = ref.qualifiers or own
    if qualifiers is not None:
        plain["qualifiers"] = qualifiers
    # a concept is marked with the group's qualifier ('a photo of the female nurse'), not its
    # first term ('the woman nurse'), where the wording has qualifiers
    markers = ref.markers or own
    if markers is not None:
        plain["markers"] = markers
    if ref.defaults is not None:
        plain["defaults"] = ref.defaults
    terms = sum(len(plain["groups"][g]) for g in chosen)
    return plain, _use(shipped, where, name, terms, wording=wording_name)


__all__ = ["AxisLibraryEntry", "ConceptLibraryEntry", "LibraryUse", "expand_libraries"]
