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


HOSTILE_MODEL = '<script>alert(1)</script>"><img src=x onerror=alert(1)>[x](javascript:alert(1))'
HOSTILE_GATE = "<iframe src=javascript:alert(1)></iframe>![y](javascript:alert(1)) {{ 7*7 }}"


def rendered_markdown(text: str) -> tuple[list[str], str]:
    """(every tag, the visible text) of ``text`` rendered by a CommonMark renderer that
    passes raw HTML through, as GitHub's and the Hub's do before sanitising."""
    from html.parser import HTMLParser

    from markdown_it import MarkdownIt

    tags: list[str] = []
    texts: list[str] = []

    class Reader(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append(tag + "".join(f" {k}={v}" for k, v in attrs))

        def handle_data(self, data: str) -> None:
            texts.append(data)

    Reader(convert_charrefs=True).feed(MarkdownIt("commonmark").render(text))
    return tags, "".join(texts)


def test_model_card_shows_a_hostile_model_id_and_gate_name_as_text(tmp_path: Path) -> None:
    """The card once put the model id and gate names into Markdown raw: live HTML and links."""
    from auditkit.gates import GateOutcome, gates_summary

    run = build_run_dir(tmp_path, model_id=HOSTILE_MODEL)
    summary_path = run / "results" / "summary.json"
    summary = json.loads(summary_path.read_text())
    gate = GateOutcome(HOSTILE_GATE, "max_abs_lean", {}, "max", 0.1, 1.0, False, -0.9, None, "")
    message = f"{HOSTILE_GATE}: FAILS by 0.9: value 1, must be at most 0.1."
    summary["gates"] = gates_summary([GateOutcome(**{**gate.to_json(), "message": message})])
    summary_path.write_text(json.dumps(summary))
    out = tmp_path / "card.md"
    result = CliRunner().invoke(main, ["export", "model-card", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output

    card = ModelCard.load(out)
    assert card.data.model_name == HOSTILE_MODEL  # the YAML header keeps it exactly
    tags, text = rendered_markdown(card.text)
    assert {t.split()[0] for t in tags} <= {"h2", "h3", "p", "ul", "li", "strong", "code"}
    assert not [t for t in tags if "javascript" in t or "onerror" in t]
    assert HOSTILE_MODEL in text and HOSTILE_GATE in text  # shown literally
