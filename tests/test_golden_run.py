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
    "Summary of findings",
    "Gates",
    "Lean along each axis",
    "Defaults",
    "Descriptor ranking",
    "Concept similarity",
    "What the model draws",
    "Limitations and ethics",
    "Scope.",  # the executive summary, built from an older run's tables too
    "Findings in detail",
)


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(GOLDEN, target)
    return target


def test_golden_run_directory_renders_every_section(run: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(run), "--format", "html", "--format", "pdf"])
    assert result.exit_code == 0, result.output
    html = (run / "report" / "report.html").read_text()
    for section in SECTIONS:
        assert section in html, section
    assert "Exemplar images" not in html  # this run stored no thumbnails: no empty section
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


def test_golden_run_passes_its_own_gate_check_unchanged(run: Path) -> None:
    result = CliRunner().invoke(main, ["check", str(run)])
    assert result.exit_code == 1  # toyworld-biased fails its gates by design
    assert result.output.count("FAIL") >= 3


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
