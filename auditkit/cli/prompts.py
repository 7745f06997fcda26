"""``auditkit prompts``: the built-in prompt libraries, their terms and their sources."""

from __future__ import annotations

import textwrap

import click

from auditkit.cli.common import handle_errors


@click.group()
def prompts() -> None:
    """The built-in, versioned prompt libraries (occupations, adjectives, axes, ...).

    A spec takes one with `concepts: [{library: occupations@1}]` or
    `axes: [{library: gender@1}]`; docs/prompt-libraries.md says where each comes from.
    """


@prompts.command("list")
@handle_errors
def list_libraries() -> None:
    """Every library version: name@version, kind, size, title and content hash."""
    from auditkit.prompts import shipped

    for entry in shipped():
        lib = entry.library
        size = (
            f"{len(lib.terms)} terms"
            if lib.terms is not None
            else f"{len(lib.wordings or {})} wordings"
        )
        click.echo(
            f"{lib.ref:<28} {lib.kind:<9} {size:<11} {lib.title}  sha256:{entry.sha256[:12]}"
        )


@prompts.command("show")
@click.argument("library")
@handle_errors
def show(library: str) -> None:
    """Show LIBRARY (NAME or NAME@VERSION): its source, license, hash, and every term."""
    from auditkit.prompts import find_library

    entry = find_library(library)
    lib = entry.library
    wrap = textwrap.TextWrapper(width=96, subsequent_indent="  ")
    click.echo(f"{lib.ref}: {lib.title} ({lib.kind})")
    click.echo(f"sha256: {entry.sha256}")
    click.echo(wrap.fill(" ".join(lib.description.split())))
    click.echo(wrap.fill(f"source: {lib.source.citation}"))
    click.echo(f"  url: {lib.source.url}")
    click.echo(wrap.fill(f"  license: {lib.source.license}"))
    if lib.source.notes:
        click.echo(wrap.fill(f"  derivation: {' '.join(lib.source.notes.split())}"))
    if lib.templates is not None:
        click.echo(f"templates: {' | '.join(lib.templates)}")
    if lib.terms is not None:
        in_category = {t for members in (lib.categories or {}).values() for t in members}
        for category, members in (lib.categories or {}).items():
            click.echo(wrap.fill(f"{category} ({len(members)}): {', '.join(members)}"))
        rest = [t for t in lib.terms if t not in in_category]
        if rest:
            label = "other" if lib.categories else "terms"
            click.echo(wrap.fill(f"{label} ({len(rest)}): {', '.join(rest)}"))
    for name, wording in (lib.wordings or {}).items():
        default = " (default)" if name == lib.default_wording else ""
        click.echo(f"wording {name}{default}: {wording.description}")
        click.echo(f"  templates: {' | '.join(wording.templates)}")
        for group, terms in wording.groups.items():
            qualifier = f"  [qualifier: {wording.qualifiers[group]}]" if wording.qualifiers else ""
            click.echo(f"  {group}: {', '.join(terms)}{qualifier}")
    if lib.reference is not None:
        ref = lib.reference
        click.echo(wrap.fill(f"reference: {ref.statistic}, {ref.year} ({ref.source.citation})"))
        click.echo(f"  url: {ref.source.url}")
        click.echo(f"  license: {ref.source.license}")
        click.echo(f"  values given for {len(ref.values)} of {len(lib.terms or [])} terms")


@prompts.command("search")
@click.argument("term")
@handle_errors
def search(term: str) -> None:
    """Every library term, group or category containing TERM (case-insensitive)."""
    from auditkit.errors import UsageError
    from auditkit.prompts import search_terms

    if not term.strip():
        raise UsageError("Give a word to search for.", hint="auditkit prompts search nurse")
    found = search_terms(term)
    if not found:
        click.echo(f"no library has a term matching {term!r}")
        return
    for entry, where, match in found:
        click.echo(f"{entry.library.ref:<28} {where}: {match}")
