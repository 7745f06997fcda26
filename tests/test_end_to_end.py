"""The whole product on a real tiny pipeline: CLI run -> HTML and PDF -> Chromium, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from browser import open_report
from click.testing import CliRunner

from auditkit.cli import main
from auditkit.spec import load_spec, spec_hash

HOSTILE = "<script>alert(1)</script>"

SPEC = """\
spec_version: 1
name: e2e-report
model: {{id: {model}, device: cpu, steps: 2, guidance_scale: 4.0, resolution: 32}}
probe: {{aggregation: per_step}}
seeds: 2
batch_size: 16
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
  - name: age
    templates: ["a photo of a {{term}}"]
    groups: {{young: [young person], adult: [adult], old: [old person]}}
concepts:
  - name: jobs
    templates: ["a photo of a {{term}}", "a picture of a {{term}}"]
    terms: [doctor, nurse, pilot, "{hostile}"]
report: {{title: "End-to-end <b>report</b>", formats: [html, pdf]}}
"""


@pytest.fixture(scope="module")
def run_dir(tiny_pipeline_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    spec = root / "spec.yaml"
    spec.write_text(SPEC.format(model=tiny_pipeline_dirs["lcm"], hostile=HOSTILE))
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    assert f"report: {(root / 'run' / 'report' / 'report.html').resolve()}" in result.output
    return root / "run"


def test_run_directory_is_complete(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["model"]["pipeline_class"] == "LatentConsistencyModelPipeline"
    assert all(len(f["sha256"]) == 64 for f in manifest["model"]["files"])
    assert any(f["path"].endswith(".safetensors") for f in manifest["model"]["files"])
    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    assert summary["schema_version"] == 1 and summary["findings"]
    for name in ("lean", "axes", "defaults", "descriptors", "similarity", "steps", "prompts"):
        assert (run_dir / "results" / f"{name}.parquet").is_file(), name
    assert (run_dir / "report" / "report.pdf").read_bytes().startswith(b"%PDF")
    # spec.yaml records every effective value, defaults the spec left out included
    statistics = yaml.safe_load((run_dir / "spec.yaml").read_text())["statistics"]
    assert statistics["alpha"] == 0.05 and statistics["rule"] == "min_effect"
    assert statistics["resampling"] == "hierarchical" and statistics["min_effect"] == 0.3
    assert spec_hash(load_spec(run_dir / "spec.yaml")) == manifest["spec_hash"]


def test_report_rerenders_identically(run_dir: Path) -> None:
    html = (run_dir / "report" / "report.html").read_bytes()
    result = CliRunner().invoke(main, ["report", str(run_dir), "--format", "html"])
    assert result.exit_code == 0, result.output
    assert (run_dir / "report" / "report.html").read_bytes() == html


@pytest.mark.browser
def test_real_report_draws_offline_and_nothing_executes(run_dir: Path, tmp_path: Path) -> None:
    with open_report(run_dir / "report" / "report.html") as visit:
        assert len(visit.chart_states) >= 5
        assert all(s == "drawn" and drawn for _, s, drawn in visit.chart_states), visit.chart_states
        body = visit.page.inner_text("body")
        visit.page.screenshot(path=str(tmp_path / "e2e.png"))
    assert HOSTILE in body  # shown as text
    assert visit.dialogs == [] and visit.problems == [] and visit.blocked == []


def test_python_api_reads_the_run(run_dir: Path) -> None:
    import auditkit.api as ak

    run = ak.open_run(run_dir)
    assert run.spec.name == "e2e-report"
    assert set(run.tables["lean"]["concept"]) == {"doctor", "nurse", "pilot", HOSTILE}
    assert run.summary["audit"] == "e2e-report"
    assert run.manifest["status"] == "complete"
    assert run.report_html == run_dir / "report" / "report.html"
    assert len(ak.plan(run.spec).units) == len(run.tables["prompts"]) * 2
