"""Analyses as vertical slices, and the report's one ordered list of sections.

:data:`ORDER` is the report's order and its table of contents. A name with a module in this
package is an analysis slice (the module's ``ANALYSIS``, see :mod:`auditkit.analyses.base`);
the others are the report's own sections or analyses built into ``auditkit.analyze``. Adding
an analysis takes its module here, its partial ``templates/sections/<name>.html.j2`` and its
name in :data:`ORDER`.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache

from auditkit.analyses.base import Analysis

ORDER: tuple[str, ...] = (
    "summary",
    "gates",
    "settings",
    "lean",
    "lean_by_step",
    "defaults",
    "descriptors",
    "similarity",
    "outputs",
    "exemplars",
    "causal",
    "discovery",
    "caveats",
    "provenance",
)


@cache
def slices() -> dict[str, Analysis]:
    """The analysis slices by name, in report order (their tables registered on import)."""
    found: dict[str, Analysis] = {}
    for name in ORDER:
        module_name = f"{__name__}.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        analysis = importlib.import_module(module_name).ANALYSIS
        if analysis.name != name:
            raise ValueError(f"{module_name} declares the analysis {analysis.name!r}")
        found[name] = analysis
    return found


def slice_names() -> tuple[str, ...]:
    """Names of the analysis slices (valid under ``analyses:`` besides the built-in ones)."""
    return tuple(slices())


__all__ = ["ORDER", "Analysis", "slice_names", "slices"]
