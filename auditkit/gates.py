"""CI gates: evaluate the spec's pass/fail conditions on a run's results, and write them for
CI systems (``results/gates.json`` and a JUnit XML file).

Each gate's metric is declared by an analysis slice (the lean's ``max_abs_lean`` and
``significant_leans``, the outputs' ``max_output_gap``, ...; see
:func:`auditkit.analyses.gate_measures`), which reads its table and computes one number over the
rows the gate scopes (an axis, an attribute, a concept set); this module compares it with its
bound and says which row was the worst. Gates never change the results: ``auditkit check RUN_DIR``
evaluates them again from the run directory alone.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit.inert import xml_text
from auditkit.rundir import JSON_FILES, RunDir, as_run_dir, write_bytes_atomic
from auditkit.spec.audit import AuditSpec
from auditkit.spec.gates import GateSpec


@dataclass(frozen=True)
class GateOutcome:
    """One gate's result: its value against its bound, and a sentence saying why."""

    name: str
    metric: str
    scope: dict[str, str]
    bound: str
    threshold: float
    value: float | None
    passed: bool
    margin: float | None
    worst: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return asdict(self)


Measure = Callable[[GateSpec, Mapping[str, pd.DataFrame]], tuple[float | None, str | None]]
"""A gate metric declared outside this module (an analysis slice's): its measurement."""


def _measure(
    gate: GateSpec, tables: dict[str, pd.DataFrame], metrics: Mapping[str, Measure]
) -> tuple[float | None, str | None]:
    """The gate's value and a description of the worst row (None, reason when unavailable)."""
    if gate.metric in metrics:
        return metrics[gate.metric](gate, tables)
    return None, f"no analysis declares the metric '{gate.metric}'"


def evaluate_gate(
    gate: GateSpec, tables: dict[str, pd.DataFrame], metrics: Mapping[str, Measure]
) -> GateOutcome:
    """Evaluate one gate against the result tables; ``metrics`` measures the gate metrics the
    analysis slices declare (:func:`auditkit.analyses.gate_measures`)."""
    value, detail = _measure(gate, tables, metrics)
    threshold = float(gate.max if gate.max is not None else gate.min)  # type: ignore[arg-type]
    bound = "max" if gate.max is not None else "min"
    scope = {
        k: v
        for k, v in (("axis", gate.axis), ("attribute", gate.attribute), ("set", gate.concept_set))
        if v
    }
    if value is None:
        passed = gate.missing == "pass"
        verdict = "passes" if passed else "fails"
        message = f"{gate.label}: {verdict}, cannot be measured: {detail}."
        return GateOutcome(
            gate.label, gate.metric, scope, bound, threshold, None, passed, None, None, message
        )
    if bound == "max":
        passed, margin = value <= threshold, threshold - value
    else:
        passed, margin = value >= threshold, value - threshold
    word = "passes" if passed else "FAILS"
    relation = "at most" if bound == "max" else "at least"
    by = f"by {abs(margin):.3g}" if not passed else f"with {margin:.3g} to spare"
    message = (
        f"{gate.label}: {word} {by}: value {value:.4g}, must be {relation} {threshold:g}"
        + (f"; worst: {detail}" if detail else "")
        + "."
    )
    return GateOutcome(
        gate.label, gate.metric, scope, bound, threshold, value, passed, margin, detail, message
    )


def evaluate_gates(
    spec: AuditSpec, tables: dict[str, pd.DataFrame], metrics: Mapping[str, Measure]
) -> list[GateOutcome]:
    """Every gate of the spec, in order (``metrics``: as for :func:`evaluate_gate`)."""
    return [evaluate_gate(g, tables, metrics) for g in spec.gates]


def gates_summary(outcomes: list[GateOutcome]) -> dict[str, Any]:
    """The gates block of summary.json and gates.json."""
    failed = [o for o in outcomes if not o.passed]
    return {
        "schema_version": JSON_FILES["gates"].version,
        "kind": "auditkit.gates",
        "total": len(outcomes),
        "failed": len(failed),
        "passed": not failed,
        "gates": [o.to_json() for o in outcomes],
    }


def junit_report(suite: str, cases: list[tuple[str, str, bool, str]], *, run_id: str) -> bytes:
    """JUnit XML for CI systems: one test case per (name, kind, passed, message), a
    <failure> for each failed one. ElementTree escapes every name and message; the characters
    XML forbids (controls a spec's text may hold) are replaced first (:func:`xml_text`)."""
    failures = sum(not passed for _, _, passed, _ in cases)
    root = ET.Element("testsuites", name="auditkit", tests=str(len(cases)))
    root.set("failures", str(failures))
    node = ET.SubElement(
        root,
        "testsuite",
        name=xml_text(suite),
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped="0",
    )
    properties = ET.SubElement(node, "properties")
    ET.SubElement(properties, "property", name="run_id", value=xml_text(run_id))
    for name, kind, passed, message in cases:
        case = ET.SubElement(
            node, "testcase", name=xml_text(name), classname=f"auditkit.{xml_text(kind)}"
        )
        if not passed:
            failure = ET.SubElement(case, "failure", message=xml_text(message), type=xml_text(kind))
            failure.text = xml_text(message)
        else:
            ET.SubElement(case, "system-out").text = xml_text(message)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def junit_xml(outcomes: list[GateOutcome], *, suite: str, run_id: str) -> bytes:
    """A JUnit XML report of the spec's gates."""
    cases = [(o.name, o.metric, o.passed, o.message) for o in outcomes]
    return junit_report(f"auditkit gates: {suite}", cases, run_id=run_id)


def write_gate_files(
    run_dir: Path | RunDir, outcomes: list[GateOutcome], *, suite: str, run_id: str
) -> tuple[Path, Path]:
    """The run's results/gates.json and results/junit.xml, each written atomically."""
    run = as_run_dir(run_dir)
    json_path = run.write_json("gates", {**gates_summary(outcomes), "run_id": run_id})
    write_bytes_atomic(run.junit, junit_xml(outcomes, suite=suite, run_id=run_id))
    return json_path, run.junit
