"""Re-rendering a run directory written by an earlier auditkit: the golden run directory in
tests/golden (results, captions tables, manifest and spec of a real toyworld-biased run, no
activations) must keep rendering, identically twice, with every section present."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import main

GOLDEN = Path(__file__).resolve().parent / "golden" / "toyworld-0.1.0"
SECTIONS = (
    "Gates",
    "Lean along each axis",
    "Defaults",
    "Descriptor ranking",
    "Concept similarity",
    "What the model draws",
    "Causal check",
    "Discovered associations",
    "Scope.",  # the executive summary, built from an older run's tables too
    "Findings in detail",
)
"""Sections rendered only when their tables (or summary blocks) are read from the run."""


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(GOLDEN, target)
    return target


def test_golden_run_directory_renders_every_section(run: Path) -> None:
    import json

    import pandas as pd

    result = CliRunner().invoke(main, ["report", str(run), "--format", "html", "--format", "pdf"])
    assert result.exit_code == 0, result.output
    html = (run / "report" / "report.html").read_text()
    for section in SECTIONS:
        assert section in html, section
    assert "Exemplar images" not in html  # this run stored no thumbnails: no empty section
    # the sections show this run's numbers, not just their headings
    lean = pd.read_parquet(run / "results" / "lean.parquet")
    for concept in lean["concept"].unique():
        assert f">{concept}<" in html, concept
    for gate in json.loads((run / "results" / "gates.json").read_text())["gates"]:
        assert gate["name"] in html, gate["name"]
    terms = pd.read_parquet(run / "results" / "discovery.parquet")["term"]
    assert sum(term in html for term in terms.unique()) >= 3
    from pypdf import PdfReader

    text = "\n".join(page.extract_text() for page in PdfReader(run / "report" / "report.pdf").pages)
    for section in SECTIONS:
        assert section in text, section


def test_rendering_twice_gives_identical_files(run: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["report", str(run), "--format", "html"]).exit_code == 0
    first = (run / "report" / "report.html").read_bytes()
    assert runner.invoke(main, ["report", str(run), "--format", "html"]).exit_code == 0
    assert (run / "report" / "report.html").read_bytes() == first


def test_golden_run_fails_its_gates_again_with_the_same_values(run: Path) -> None:
    """'auditkit check' re-evaluates the gates of an old run from its tables: toyworld-biased
    fails them by design (exit 1), with the values the run recorded."""
    import json

    stored = json.loads((run / "results" / "gates.json").read_text())
    result = CliRunner().invoke(main, ["check", str(run)])
    assert result.exit_code == 1, result.output
    again = json.loads((run / "results" / "gates.json").read_text())
    assert again["failed"] == stored["failed"] >= 3
    assert result.output.count("FAIL  ") == stored["failed"]  # one line per failed gate
    for old, new in zip(stored["gates"], again["gates"], strict=True):
        assert (new["name"], new["passed"]) == (old["name"], old["passed"])
        assert new["value"] == pytest.approx(old["value"], nan_ok=True)


@pytest.mark.parametrize(("paper", "size"), [("a4", (595, 842)), ("letter", (612, 792))])
def test_pdf_paper_size_follows_the_spec(run: Path, paper: str, size: tuple[int, int]) -> None:
    import yaml
    from pypdf import PdfReader

    spec = yaml.safe_load((run / "spec.yaml").read_text())
    spec["report"]["paper"] = paper
    (run / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = CliRunner().invoke(main, ["report", str(run), "--format", "pdf"])
    assert result.exit_code == 0, result.output
    reader = PdfReader(run / "report" / "report.pdf")
    box = reader.pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == size
    assert len(reader.pages) > 3
