"""The report's sections, in the one ordered list :func:`auditkit.analyses.report_order`.

Each section is a template partial ``templates/sections/<name>.html.j2`` and an entry in the
table of contents. The report's own sections take their data from the report context (under
the key named here); an analysis slice builds its section itself
(:meth:`auditkit.analyses.base.Analysis.section`). A section whose data is empty is left out of
the report and of its contents, unless it is always shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from auditkit.analyses import report_order, slices
from auditkit.analyses.base import SectionContext


@dataclass(frozen=True)
class BuiltIn:
    """A section built from the report context's ``key`` (None: always shown, no data)."""

    title: str
    key: str | None = None
    children: Callable[[Any], list[tuple[str, str]]] | None = None


BUILT_IN: dict[str, BuiltIn] = {
    "summary": BuiltIn("Summary of findings"),
    "gates": BuiltIn("Gates", "gates"),
    "settings": BuiltIn("Settings"),
    "caveats": BuiltIn("Limitations and ethics"),
    "provenance": BuiltIn("Appendix: provenance"),
}


def report_sections(context: dict[str, Any], ctx: SectionContext) -> list[dict[str, Any]]:
    """The sections this report shows, in order: anchor (= partial name), title, table of
    contents children and, for analysis slices, their data."""
    analyses = slices()
    out: list[dict[str, Any]] = []
    for name in report_order():
        if name in analyses:
            analysis = analyses[name]
            # a slice another part of the spec switches on (listed False) shows whenever the
            # run has its tables: its pass wrote them, and the stage drops them with the switch
            shown = analysis.applies(ctx.spec) or not analysis.listed
            data = analysis.section(ctx) if shown else None
            if data:
                out.append(
                    {
                        "anchor": name,
                        "title": analysis.title,
                        "children": analysis.toc(data),
                        "data": data,
                    }
                )
            continue
        section = BUILT_IN[name]
        data = context.get(section.key) if section.key else None
        if section.key and not data:
            continue
        children = section.children(data) if section.children and data else []
        out.append({"anchor": name, "title": section.title, "children": children, "data": data})
    return out
