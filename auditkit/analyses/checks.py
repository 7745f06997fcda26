"""The spec's names that only the analysis slices know: ``analyses:`` entries and gate metrics.

The spec package sits below the analyses and takes any well-formed name there; every command
that plans or runs an audit calls :func:`check_spec`, which refuses, each located, an analysis
nobody declares, a gate metric nobody declares, and a slice's metric bounded the wrong way.
"""

from __future__ import annotations

from auditkit.analyses import gate_bounds, slice_names
from auditkit.errors import SpecError
from auditkit.spec.audit import BUILTIN_ANALYSES, AuditSpec
from auditkit.spec.gates import BUILTIN_METRICS


def known_analyses() -> tuple[str, ...]:
    """Every name valid under ``analyses:``."""
    return BUILTIN_ANALYSES + slice_names()


def known_metrics() -> dict[str, str]:
    """Every gate metric and the bound it takes."""
    return {**BUILTIN_METRICS, **gate_bounds()}


def check_spec(spec: AuditSpec, *, source: str = "spec") -> AuditSpec:
    """``spec`` unchanged, or a :class:`SpecError` listing every unknown analysis or metric."""
    problems = []
    analyses, metrics = known_analyses(), known_metrics()
    for i, name in enumerate(spec.analyses):
        if name not in analyses:
            problems.append(
                f"analyses[{i}]: unknown analysis {name!r}; known: {', '.join(analyses)}"
            )
    for i, gate in enumerate(spec.gates):
        bound = metrics.get(gate.metric)
        if bound is None:
            problems.append(
                f"gates[{i}].metric: unknown metric {gate.metric!r}; known: {', '.join(metrics)}"
            )
        elif (gate.max if bound == "max" else gate.min) is None:
            problems.append(f"gates[{i}]: {gate.metric} takes '{bound}'")
    if problems:
        raise SpecError(problems, source=source)
    return spec
