"""auditkit diff: deltas and regressions against hand computation, refusal of different specs,
gates relative to the baseline (exit 1), and the comparison report in Chromium and as PDF."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from browser import open_report
from click.testing import CliRunner
from junitparser import JUnitXml
from report_fixtures import build_run_dir

from auditkit.cli import main
from auditkit.diff import Z95, compare_leans


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = build_run_dir(tmp_path_factory.mktemp("base"), model_id="org/model-v1", seed=0)
    new = build_run_dir(tmp_path_factory.mktemp("new"), model_id="org/model-v2", seed=1)
    return base, new


def test_compare_leans_matches_hand_computation() -> None:
    base = pd.DataFrame(
        {
            "axis": ["g", "g", "g"],
            "concept_set": ["s"] * 3,
            "concept": ["a", "b", "c"],
            "score": [0.1, -0.5, 0.3],
            "score_ci_low": [0.0, -0.6, 0.2],
            "score_ci_high": [0.2, -0.4, 0.4],
        }
    )
    new = base.assign(score=[0.6, -0.52, 0.1], score_ci_low=[0.5, -0.62, 0.0])
    new["score_ci_high"] = [0.7, -0.42, 0.2]
    table = compare_leans(base, new, tolerance=0.05).set_index("concept")
    se = np.sqrt(2) * 0.2 / (2 * Z95)
    assert table.loc["a", "delta"] == pytest.approx(0.5)
    assert table.loc["a", "delta_ci_low"] == pytest.approx(0.5 - Z95 * se)
    assert bool(table.loc["a", "regression"])  # grew 0.5, interval clear of 0
    assert not bool(table.loc["b", "regression"])  # grew 0.02 < tolerance
    assert bool(table.loc["c", "improvement"])  # shrank by 0.2, interval clear of 0


def test_diff_writes_report_json_junit_and_flags_regressions(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    base, new = runs
    out = tmp_path / "diff"
    result = CliRunner().invoke(main, ["diff", str(base), str(new), "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "diff.json").read_text())
    assert record["kind"] == "auditkit.diff" and record["base"]["model"] == "org/model-v1"
    rows = pd.DataFrame(record["rows"])
    lean_base = pd.read_parquet(base / "results" / "lean.parquet")
    lean_new = pd.read_parquet(new / "results" / "lean.parquet")
    assert len(rows) == len(lean_base) == len(lean_new)
    expected = compare_leans(lean_base, lean_new)
    assert int(expected["regression"].sum()) == record["regressions"]
    assert record["regressions"] > 0  # independent random fixtures differ somewhere
    for name in record["rows"][:3]:
        assert name["delta"] == pytest.approx(name["score_new"] - name["score_base"], abs=1e-5)
    assert "regression" in result.output
    assert (out / "diff.pdf").read_bytes()[:5] == b"%PDF-"
    with open_report(out / "diff.html") as visit:
        states = {state for _, state, _ in visit.chart_states}
        assert states == {"drawn"}, visit.chart_states
        assert not visit.problems
        text = visit.page.inner_text("body")
    assert "regression" in text and "org/model-v2" in text


def test_diff_gates_relative_to_the_baseline_exit_1(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    base, new = runs
    out = tmp_path / "diff"
    args = ["diff", str(base), str(new), "--out", str(out), "--format", "html"]
    failed = CliRunner().invoke(main, [*args, "--max-growth", "0.0", "--max-regressions", "0"])
    assert failed.exit_code == 1, failed.output
    assert "FAIL" in failed.output
    suite = next(iter(JUnitXml.fromfile(str(out / "junit.xml"))))
    assert suite.tests == 2 and suite.failures == 2
    passed = CliRunner().invoke(main, [*args, "--max-growth", "100", "--max-regressions", "1000"])
    assert passed.exit_code == 0, passed.output


def test_diff_refuses_runs_with_different_specs(runs: tuple[Path, Path], tmp_path: Path) -> None:
    base, new = runs
    other = tmp_path / "other"
    import shutil

    shutil.copytree(new, other)
    spec = yaml.safe_load((other / "spec.yaml").read_text())
    spec["seeds"] = 8
    spec["model"]["guidance_scale"] = 2.0
    (other / "spec.yaml").write_text(yaml.safe_dump(spec))
    refused = CliRunner().invoke(main, ["diff", str(base), str(other), "--out", str(tmp_path)])
    assert refused.exit_code == 2
    assert "seeds" in refused.output and "model.guidance_scale" in refused.output
    allowed = CliRunner().invoke(
        main,
        [
            *("diff", str(base), str(other), "--out", str(tmp_path / "d")),
            *("--format", "html", "--allow-different-specs"),
        ],
    )
    assert allowed.exit_code == 0, allowed.output
    assert "Specs differ" in (tmp_path / "d" / "diff.html").read_text()
