"""Analyses as vertical slices, and the report's one ordered list of sections.

:data:`ORDER` lists the report's own sections, in report order. Every module of this package
but those of :data:`NOT_SLICES` is an analysis slice (its ``ANALYSIS``, see
:mod:`auditkit.analyses.base`) and says where its section goes (``after``: the section it
follows). :func:`report_order` merges the two into the one list the
report and its table of contents follow. Adding an analysis takes its module here, its
tables' data file beside it (``<name>.tables.yaml``, when it declares tables) and its partial
``templates/sections/<name>.html.j2``; nothing else names it.

Importing this package lets the plan (below it) ask the slices for the prompts they need
(:func:`slice_prompts`, through :func:`auditkit.plan.set_slice_prompts`).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import TYPE_CHECKING

from auditkit.analyses.base import Analysis, Measure, SlicePrompt
from auditkit.plan import set_slice_prompts

if TYPE_CHECKING:
    from auditkit.spec.audit import AuditSpec

ORDER: tuple[str, ...] = (
    "summary",
    "gates",
    "settings",
    "caveats",
    "provenance",
)
"""The report's own sections, in report order (the analyses' are placed among them)."""
NOT_SLICES = frozenset(
    {
        "base",
        "checks",
        "exemplars_section",
        "guidance_section",
        "lean_section",
        "lean_summary",
        "outputs_section",
        "stage",
        "values",
    }
)
"""Modules of this package that are not analysis slices."""


@cache
def slices() -> dict[str, Analysis]:
    """The analysis slices by name, in report order (their tables registered on import)."""
    found: dict[str, Analysis] = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if module in NOT_SLICES:
            continue
        analysis = importlib.import_module(f"{__name__}.{module}").ANALYSIS
        if analysis.name != module:
            raise ValueError(f"{__name__}.{module} declares the analysis {analysis.name!r}")
        found[module] = analysis
    return {name: found[name] for name in report_order(found) if name in found}


def report_order(found: dict[str, Analysis] | None = None) -> tuple[str, ...]:
    """Every section of the report in order: :data:`ORDER`, each slice placed right after the
    section its ``after`` names (slices after the same section in name order)."""
    found = slices() if found is None else found
    order = list(ORDER)
    pending = dict(sorted(found.items()))
    while pending:
        placed = [n for n, a in pending.items() if a.after in order]
        if not placed:
            raise ValueError(f"analysis slices placed after unknown sections: {sorted(pending)}")
        for name in reversed(placed):
            order.insert(order.index(pending.pop(name).after) + 1, name)
    return tuple(order)


def chosen_slices(spec: AuditSpec) -> list[Analysis]:
    """The analysis slices the audit runs, in report order."""
    return [a for a in slices().values() if a.applies(spec)]


def slice_prompts(spec: AuditSpec) -> list[SlicePrompt]:
    """The prompts the analysis slices ``spec`` runs add to its plan (``Analysis.prompts``), in
    report order: the plan asks for them (:func:`auditkit.plan.slice_prompts`)."""
    return [prompt for analysis in chosen_slices(spec) for prompt in analysis.prompts(spec)]


def slice_prompt_count(spec: AuditSpec) -> int:
    """How many prompts :func:`slice_prompts` gives ``spec`` at most, counted without building
    them (``Analysis.prompt_count``)."""
    return sum(analysis.prompt_count(spec) for analysis in chosen_slices(spec))


set_slice_prompts(slice_prompts, slice_prompt_count)


def slice_names() -> tuple[str, ...]:
    """Names of the analysis slices valid under ``analyses:`` besides the built-in ones: those
    it switches on, not those another section does (``outputs``, by ``captions:``)."""
    return tuple(name for name, analysis in slices().items() if analysis.listed)


def slice_tables() -> tuple[str, ...]:
    """The tables the analysis slices write (``results/``)."""
    return tuple(t.name for a in slices().values() for t in a.tables)


def gate_measures() -> dict[str, Measure]:
    """The analysis slices' gate metrics: name -> measurement (for ``auditkit.gates``)."""
    return {m.name: m.measure for a in slices().values() for m in a.gate_metrics}


__all__ = [
    "ORDER",
    "Analysis",
    "chosen_slices",
    "gate_measures",
    "report_order",
    "slice_names",
    "slice_prompts",
    "slice_tables",
    "slices",
]
