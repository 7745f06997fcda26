"""CI gates: each metric against hand-made tables, the JUnit file through a JUnit parser, the
JSON summary, and `auditkit check` exit codes on a run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from junitparser import Failure, JUnitXml
from report_fixtures import build_run_dir

from auditkit.analyses import gate_measures
from auditkit.cli import main
from auditkit.errors import SpecError
from auditkit.gates import evaluate_gates, gates_summary, junit_xml
from auditkit.spec import parse_spec

BASE = """
spec_version: 1
name: gated
model: {id: builtin:tiny-sd}
seeds: 4
axes:
  - name: gender
    templates: ["a photo of a {term}"]
    groups: {man: [man], woman: [woman]}
  - name: age
    templates: ["a photo of a {term}"]
    groups: {young: [young person], old: [old person]}
concepts:
  - name: jobs
    templates: ["a photo of a {term}"]
    terms: [nurse, pilot, chef]
"""


def _spec(gates: list[dict]):  # type: ignore[no-untyped-def]
    return parse_spec(BASE + yaml.safe_dump({"gates": gates}))


def _tables() -> dict[str, pd.DataFrame]:
    lean = pd.DataFrame(
        {
            "axis": ["gender"] * 3 + ["age"] * 3,
            "concept_set": ["jobs"] * 6,
            "concept": ["nurse", "pilot", "chef"] * 2,
            "toward": ["woman", "man", "woman", "young", "old", "young"],
            "score": [-0.9, 0.4, -0.1, 0.2, -0.05, 0.3],
            "significant": [True, True, False, False, False, True],
        }
    )
    outputs = pd.DataFrame(
        {
            "concept_set": ["jobs"] * 2,
            "concept": ["nurse", "pilot"],
            "attribute": ["gender", "gender"],
            "max_abs_gap": [0.42, 0.1],
            "max_gap_group": ["woman", "man"],
        }
    )
    agreement = pd.DataFrame({"axis": ["gender"], "rho": [0.85], "statement": ["outputs agree"]})
    return {"lean": lean, "outputs": outputs, "agreement": agreement}


def test_each_metric_passes_and_fails_with_its_margin_and_worst_row() -> None:
    spec = _spec(
        [
            {"metric": "max_abs_lean", "axis": "gender", "max": 0.5},
            {"metric": "max_abs_lean", "axis": "age", "max": 0.5},
            {"metric": "significant_leans", "max": 2},
            {"metric": "significant_leans", "axis": "age", "max": 1},
            {"metric": "max_output_gap", "attribute": "gender", "max": 0.3},
            {"metric": "min_agreement", "axis": "gender", "min": 0.9},
        ]
    )
    outcomes = evaluate_gates(spec, _tables(), gate_measures())  # outputs: the slice's metrics
    assert [o.passed for o in outcomes] == [False, True, False, True, False, False]
    assert [o.value for o in outcomes] == pytest.approx([0.9, 0.3, 3, 1, 0.42, 0.85])
    assert outcomes[0].margin == pytest.approx(-0.4)
    assert "'nurse' towards 'woman'" in (outcomes[0].worst or "")
    assert "FAILS by 0.4" in outcomes[0].message
    assert outcomes[1].margin == pytest.approx(0.2)
    assert "'woman'" in (outcomes[4].worst or "")
    summary = gates_summary(outcomes)
    assert summary["total"] == 6 and summary["failed"] == 4 and summary["passed"] is False
    json.dumps(summary)  # plain JSON


def test_missing_results_fail_unless_told_to_pass() -> None:
    spec = _spec(
        [
            {"metric": "max_output_gap", "max": 0.2},
            {"metric": "min_agreement", "axis": "gender", "min": 0.5, "missing": "pass"},
        ]
    )
    tables = {"lean": _tables()["lean"]}
    first, second = evaluate_gates(spec, tables, gate_measures())
    assert not first.passed and first.value is None and "no captioned outputs" in first.message
    assert second.passed and second.value is None


def test_junit_file_parses_with_a_junit_parser(tmp_path: Path) -> None:
    spec = _spec(
        [
            {"name": "gender <= 0.5", "metric": "max_abs_lean", "axis": "gender", "max": 0.5},
            {"name": "age <= 0.5", "metric": "max_abs_lean", "axis": "age", "max": 0.5},
        ]
    )
    path = tmp_path / "junit.xml"
    path.write_bytes(
        junit_xml(evaluate_gates(spec, _tables(), gate_measures()), suite="gated", run_id="r1")
    )
    suites = list(JUnitXml.fromfile(str(path)))
    assert len(suites) == 1
    suite = suites[0]
    assert suite.tests == 2 and suite.failures == 1
    cases = {case.name: case for case in suite}
    assert set(cases) == {"gender <= 0.5", "age <= 0.5"}
    failed = [r for r in cases["gender <= 0.5"].result if isinstance(r, Failure)]
    assert failed and "value 0.9" in (failed[0].message or "")
    assert cases["age <= 0.5"].is_passed


@pytest.mark.parametrize(
    ("gate", "where"),
    [
        ({"metric": "max_abs_lean", "min": 0.1}, "gates[0]"),
        ({"metric": "min_agreement", "min": 0.5}, "gates[0]"),
        ({"metric": "max_abs_lean", "axis": "race", "max": 0.5}, "gates[0].axis"),
        ({"metric": "max_abs_lean", "attribute": "gender", "max": 0.5}, "gates[0]"),
    ],
)
def test_bad_gates_are_located(tmp_path: Path, gate: dict, where: str) -> None:
    from auditkit.analyses.checks import load_checked_spec

    path = tmp_path / "spec.yaml"
    path.write_text(BASE + yaml.safe_dump({"gates": [gate]}))
    with pytest.raises(SpecError) as info:
        load_checked_spec(path)
    assert where in str(info.value) and "line" in str(info.value)


def test_check_exits_1_on_a_failed_gate_and_0_when_all_pass(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path)
    spec = yaml.safe_load((run / "spec.yaml").read_text())
    lean = pd.read_parquet(run / "results" / "lean.parquet")
    largest = float(lean.loc[lean["axis"] == "gender", "score"].abs().max())
    runner = CliRunner()

    spec["gates"] = [{"metric": "max_abs_lean", "axis": "gender", "max": largest + 0.01}]
    (run / "spec.yaml").write_text(yaml.safe_dump(spec))
    passed = runner.invoke(main, ["check", str(run), "--junit", str(tmp_path / "ci.xml")])
    assert passed.exit_code == 0, passed.output
    assert "PASS" in passed.output
    assert JUnitXml.fromfile(str(tmp_path / "ci.xml")).failures == 0

    spec["gates"] = [{"metric": "max_abs_lean", "axis": "gender", "max": largest - 0.01}]
    (run / "spec.yaml").write_text(yaml.safe_dump(spec))
    failed = runner.invoke(main, ["check", str(run), "--json", str(tmp_path / "gates.json")])
    assert failed.exit_code == 1, failed.output
    assert "FAIL" in failed.output
    record = json.loads((tmp_path / "gates.json").read_text())
    assert record["failed"] == 1 and record["gates"][0]["value"] == pytest.approx(largest)


def test_check_without_gates_is_a_usage_error(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path)
    result = CliRunner().invoke(main, ["check", str(run)])
    assert result.exit_code == 2
    assert "no gates" in result.output


def test_a_rerun_drops_result_files_its_spec_no_longer_makes(tmp_path: Path) -> None:
    from auditkit.analyses.stage import drop_stale_results
    from auditkit.rundir import RunDir

    results, captions = tmp_path / "results", tmp_path / "captions"
    results.mkdir()
    captions.mkdir()
    for name in ("lean", "outputs", "discovery"):
        (results / f"{name}.parquet").write_bytes(b"x")
    for name in ("gates.json", "junit.xml"):
        (results / name).write_text("{}")
    (captions / "causal.parquet").write_bytes(b"x")
    (captions / "readings.parquet").write_bytes(b"x")
    drop_stale_results(_spec([]), {"lean": pd.DataFrame()}, RunDir(tmp_path))
    assert sorted(p.name for p in results.iterdir()) == ["lean.parquet"]
    assert sorted(p.name for p in captions.iterdir()) == ["readings.parquet"]
