"""The spec's names that only the analysis slices know: ``analyses:`` entries and gate metrics.

The spec package sits below the analyses and takes any well-formed name there; every command
that plans or runs an audit loads its spec with :func:`load_checked_spec` (or calls
:func:`check_spec` on a spec already parsed), which refuses, each located, an analysis nobody
declares, a gate metric nobody declares, and a gate its metric's slice does not take (the
wrong bound, a key that does not narrow it).
"""

from __future__ import annotations

from pathlib import Path

from auditkit.analyses import slice_names, slices
from auditkit.analyses.base import GateMetric
from auditkit.errors import SpecError
from auditkit.spec.audit import AuditSpec
from auditkit.spec.loader import format_path, load_spec


def known_analyses() -> tuple[str, ...]:
    """Every name valid under ``analyses:``."""
    return slice_names()


def known_metrics() -> dict[str, GateMetric]:
    """Every gate metric, by name (the slices declare them)."""
    return {m.name: m for a in slices().values() for m in a.gate_metrics}


def spec_problems(spec: AuditSpec) -> list[tuple[tuple[str | int, ...], str]]:
    """An unknown builtin model, every unknown analysis or gate metric of ``spec``, every gate
    a metric's slice refuses (wrong bound, a key that does not narrow it), and an expansion
    past the plan's limit
    (:func:`auditkit.plan.expansion_problems`): (YAML path, message) each."""
    from auditkit.models.adapters import families
    from auditkit.models.builtin import (
        BUILTIN_PREFIX,
        SHIPPED_BUILTINS,
        builtin_name,
        tiny_builtins,
    )
    from auditkit.plan import expansion_problems

    problems: list[tuple[tuple[str | int, ...], str]] = []
    analyses, metrics = known_analyses(), known_metrics()
    builtin = builtin_name(spec.model.id)
    if builtin is not None and builtin not in (*SHIPPED_BUILTINS, *tiny_builtins()):
        known = ", ".join(BUILTIN_PREFIX + b for b in (*tiny_builtins(), *SHIPPED_BUILTINS))
        problems.append(
            (("model", "id"), f"unknown builtin model {spec.model.id!r}; known: {known}")
        )
    if spec.model.pipeline != "auto" and spec.model.pipeline not in families():
        problems.append(
            (
                ("model", "pipeline"),
                f"unknown model family {spec.model.pipeline!r}; known: auto, "
                + ", ".join(families()),
            )
        )
    for i, name in enumerate(spec.analyses):
        if name not in analyses:
            problems.append(
                (("analyses", i), f"unknown analysis {name!r}; known: {', '.join(analyses)}")
            )
    for i, gate in enumerate(spec.gates):
        metric = metrics.get(gate.metric)
        if metric is None:
            problems.append(
                (
                    ("gates", i, "metric"),
                    f"unknown metric {gate.metric!r}; known: {', '.join(metrics)}",
                )
            )
            continue
        if (gate.max if metric.bound == "max" else gate.min) is None:
            problems.append((("gates", i), f"{gate.metric} takes '{metric.bound}'"))
        for key in ("axis", "attribute", "concept_set"):
            if getattr(gate, key) is not None and key not in metric.scope:
                problems.append(
                    (
                        ("gates", i, key),
                        f"{gate.metric} is narrowed by {' or '.join(metric.scope)} only",
                    )
                )
    problems.extend(expansion_problems(spec))
    return problems


def check_spec(spec: AuditSpec, *, source: str = "spec") -> AuditSpec:
    """``spec`` unchanged, or a :class:`SpecError` listing every problem of
    :func:`spec_problems` (by YAML path; :func:`load_checked_spec` adds their lines)."""
    problems = spec_problems(spec)
    if problems:
        raise SpecError([f"{format_path(loc)}: {msg}" for loc, msg in problems], source=source)
    return spec


def load_checked_spec(path: str | Path) -> AuditSpec:
    """Load the spec at ``path`` with every check, the slices' too, each problem located."""
    return load_spec(path, check=spec_problems)
