"""Model-card export: round trip through huggingface_hub.ModelCard, numbers from the run's own
tables, and the report linked by its sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from huggingface_hub import ModelCard
from report_fixtures import build_run_dir

from auditkit.cli import main
from auditkit.report import render_report


def test_model_card_round_trips_through_huggingface_hub(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path)
    render_report(run, ["html"])
    out = tmp_path / "card" / "README.md"
    result = CliRunner().invoke(main, ["export", "model-card", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output

    card = ModelCard.load(out)
    lean = pd.read_parquet(run / "results" / "lean.parquet")
    manifest = json.loads((run / "manifest.json").read_text())
    assert card.data.model_name == manifest["model"]["id"]
    metrics = {e.metric_type: e.metric_value for e in card.data.eval_results}
    for axis, rows in lean.groupby("axis"):
        assert metrics[f"max_abs_lean_{axis}"] == pytest.approx(rows["score"].abs().max(), abs=1e-4)
    assert all(e.task_type == "text-to-image" for e in card.data.eval_results)
    report_hash = hashlib.sha256((run / "report" / "report.html").read_bytes()).hexdigest()
    assert report_hash in card.text
    summary = json.loads((run / "results" / "summary.json").read_text())
    assert summary["findings"][0] in card.text
    assert "Limitations" in card.text
    assert "### Summary" in card.text and "**Scope.** This audit of" in card.text
    assert "95% CI" in card.text.split("### Findings")[0]  # the summary gives intervals


def test_model_card_of_an_unfinished_run_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(main, ["export", "model-card", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "not a finished auditkit run" in result.output
