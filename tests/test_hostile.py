"""Hostile text in a spec: every payload of ``report_fixtures.HOSTILE_PAYLOADS`` (markup, script,
``javascript:`` links, template syntax, a 10,000-character string, control characters,
right-to-left override, combining marks, emoji, astral characters) as a concept term (so in
prompts), in the title, owner and description, the model id and gate names, through every output:
kept exactly in the YAML, JSON and parquet files, shown as text and never run in the HTML (real
Chromium), extractable in the PDFs, parseable in the JUnit XML, inert in the model card's
Markdown and in the terminal. RELIABILITY.md counts what this covers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from browser import open_report
from click.testing import CliRunner, Result
from huggingface_hub import ModelCard
from junitparser import JUnitXml
from report_fixtures import (
    HOSTILE_MODEL_ID,
    HOSTILE_PAYLOADS,
    HOSTILE_TEMPLATE,
    HOSTILE_TEXT,
    build_run_dir,
)
from test_export import rendered_markdown

from auditkit.chart_drawing import PRINT_CHART_TEXT_LIMIT, chart_text
from auditkit.cli import main
from auditkit.inert import CONTROL_PICTURES, xml_text
from auditkit.report.render import PRINT_LINE_LIMIT
from auditkit.spec import fill, parse_spec

PAYLOADS = list(HOSTILE_PAYLOADS.values())
GATE_NAMES = [HOSTILE_TEXT, *PAYLOADS]
SHOWN_IN_HTML = [k for k in HOSTILE_PAYLOADS if k != "controls"]
"""Payloads a browser shows exactly as written (HTML turns NUL and CR into other characters)."""


class Outputs:
    """One hostile audit, a second one to compare it with, and everything auditkit writes."""

    def __init__(self, root: Path) -> None:
        self.base = build_run_dir(root / "base", hostile="all", seed=0)
        self.new = build_run_dir(root / "new", hostile="all", seed=1)
        self.diff = root / "diff"
        self.card = root / "model-card.md"
        runner = CliRunner()
        self.results: dict[str, Result] = {
            "report": runner.invoke(
                main, ["report", str(self.base), "--format", "html", "--format", "pdf"]
            ),
            "diff": runner.invoke(
                main, ["diff", str(self.base), str(self.new), "--out", str(self.diff)]
            ),
            "check": runner.invoke(main, ["check", str(self.base)]),
            "card": runner.invoke(
                main, ["export", "model-card", str(self.base), "--out", str(self.card)]
            ),
        }


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    return Outputs(tmp_path_factory.mktemp("hostile"))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_every_command_finishes_with_its_usual_exit_code(outputs: Outputs) -> None:
    codes = {name: result.exit_code for name, result in outputs.results.items()}
    # the hostile gates fail (|lean| <= 0.5): check and diff report that with exit code 1
    assert codes == {"report": 0, "diff": 0, "check": 1, "card": 0}, {
        n: r.output[-2000:] for n, r in outputs.results.items()
    }


def test_yaml_json_and_parquet_keep_every_payload_exactly(outputs: Outputs) -> None:
    run = outputs.base
    spec = parse_spec((run / "spec.yaml").read_text(encoding="utf-8"))
    assert spec.report.title == spec.report.owner == spec.description == HOSTILE_TEXT
    assert spec.model.id == HOSTILE_MODEL_ID
    assert list(spec.concepts[-1].terms) == PAYLOADS
    assert [g.name for g in spec.gates] == GATE_NAMES

    summary = json.loads((run / "results" / "summary.json").read_text(encoding="utf-8"))
    assert summary["model"]["id"] == HOSTILE_MODEL_ID
    assert [g["name"] for g in summary["gates"]["gates"]] == GATE_NAMES
    gates = json.loads((run / "results" / "gates.json").read_text(encoding="utf-8"))
    assert [g["name"] for g in gates["gates"]] == GATE_NAMES
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["model"]["id"] == HOSTILE_MODEL_ID
    diff_strings = set(_strings(json.loads((outputs.diff / "diff.json").read_text("utf-8"))))
    assert set(PAYLOADS) <= diff_strings

    lean = pd.read_parquet(run / "results" / "lean.parquet")
    assert set(PAYLOADS) <= set(lean["concept"])
    prompts = pd.read_parquet(run / "results" / "prompts.parquet")
    assert {fill(HOSTILE_TEMPLATE, p) for p in PAYLOADS} <= set(prompts["prompt"])
    for table in ("defaults", "descriptors"):
        assert set(PAYLOADS) <= set(pd.read_parquet(run / "results" / f"{table}.parquet").concept)
    similarity = pd.read_parquet(run / "results" / "similarity.parquet")
    assert set(PAYLOADS) <= set(similarity["concept_a"]) & set(similarity["concept_b"])


def test_junit_files_parse_and_name_each_gate(outputs: Outputs) -> None:
    """XML 1.0 forbids most control characters: they arrive as control pictures."""
    run_xml = outputs.base / "results" / "junit.xml"
    for path in (run_xml, outputs.diff / "junit.xml"):
        ET.parse(path)
        assert list(JUnitXml.fromfile(str(path)))
    cases = [case.name for suite in JUnitXml.fromfile(str(run_xml)) for case in suite]
    assert cases == [xml_text(name) for name in GATE_NAMES]
    controls = cases[GATE_NAMES.index(HOSTILE_PAYLOADS["controls"])]
    assert controls.startswith("\u2400\u2401") and "\x00" not in "".join(cases)


def test_a_junit_report_of_every_control_character_parses() -> None:
    from auditkit.gates import junit_report

    controls = "".join(map(chr, range(0x20))) + "\x7f\ufffe\uffff"
    xml = junit_report(controls, [(controls, controls, False, controls)], run_id=controls)
    case = ET.fromstring(xml).find("testsuite/testcase")
    assert case is not None and case.get("name") == xml_text(controls)
    assert "\t\n\r" not in xml_text(controls).translate({0x9: None, 0xA: None, 0xD: None})


def test_the_model_card_shows_every_payload_as_text(outputs: Outputs) -> None:
    card = ModelCard.load(outputs.card)
    assert card.data.model_name == HOSTILE_MODEL_ID
    tags, text = rendered_markdown(card.text)
    assert {t.split()[0] for t in tags} <= {"h2", "h3", "p", "ul", "li", "strong", "code"}
    assert not [t for t in tags if "javascript" in t or "onerror" in t or "onload" in t]
    for payload in PAYLOADS:
        assert payload.translate(CONTROL_PICTURES) in text


def test_terminal_output_sends_no_control_characters(outputs: Outputs) -> None:
    for name in ("diff", "check"):
        out = outputs.results[name].output
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", out), name
        assert "{{ 7*7 }}" in out and "<script>alert(1)</script>" in out


@pytest.mark.parametrize("document", ["report", "diff"])
def test_pdfs_show_the_payloads_as_text(outputs: Outputs, document: str) -> None:
    """pdftotext reads the text (pypdf spreads NULs through text in some fonts)."""
    if not shutil.which("pdftotext"):
        pytest.skip("needs pdftotext (poppler-utils)")
    path = outputs.base / "report" / "report.pdf" if document == "report" else None
    path = path or outputs.diff / "diff.pdf"
    text = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True
    ).stdout.decode("utf-8")
    flat = re.sub(r"\s+", "", text)
    for key in ("script", "attribute", "close-script", "javascript-url", "svg", "iframe"):
        assert re.sub(r"\s+", "", HOSTILE_PAYLOADS[key]) in flat, key
    for key in ("jinja", "jinja-raw", "jinja-config", "template-literal"):
        assert re.sub(r"\s+", "", HOSTILE_PAYLOADS[key]) in flat, key
    assert "W" * 100 + "…[" in flat and "morecharacters]" in flat  # cut, and says so
    if document == "report":  # the term alone, in its tables
        assert "W" * PRINT_LINE_LIMIT + "…[9,500morecharacters]" in flat


@pytest.mark.browser
@pytest.mark.parametrize("document", ["report", "diff"])
def test_html_runs_no_payload_in_chromium(outputs: Outputs, document: str) -> None:
    path = outputs.base / "report" / "report.html" if document == "report" else None
    path = path or outputs.diff / "diff.html"
    with open_report(path) as visit:
        page = visit.page
        assert visit.calls() == [] and visit.dialogs == []
        injected = visit.injected()
        # the payloads reach the page only as text and inside the charts' JSON data block
        assert injected == {"elements": 0, "scripts": 0, "data": 1}
        text = page.evaluate("() => document.body.innerText")
        title = page.title()
    for key in SHOWN_IN_HTML:
        assert HOSTILE_PAYLOADS[key] in text, key
    assert "{{ 7*7 }}" in title and "<script>alert(1)</script>" in title
    # an override left open is isolated: it cannot reorder the sentence around it
    assert "\u2068" + HOSTILE_PAYLOADS["right-to-left-open"] + "\u2069" in text
    assert visit.blocked == []


def test_a_hostile_spec_file_loads_through_the_cli(outputs: Outputs, tmp_path: Path) -> None:
    """The YAML a user writes (control characters as escapes) validates and plans."""
    text = (outputs.base / "spec.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(text)["report"]["title"] == HOSTILE_TEXT
    result = CliRunner().invoke(main, ["plan", str(outputs.base / "spec.yaml")])
    assert result.exit_code == 0, result.output[-2000:]


def test_a_pdf_chart_is_drawn_from_cut_text_that_keeps_its_categories_apart() -> None:
    """Long strings reach vl-convert cut (it measures text a character at a time), each the
    same way wherever it appears, and strings that share their first characters stay apart."""
    long = "W" * 10_000
    labels = [long + "a", long + "b", long[:50]]
    spec = {"data": {"values": [{"concept": c, "lean": 0.1} for c in labels]},
            "encoding": {"x": {"field": "concept", "sort": labels[::-1]}}}  # fmt: skip
    cut = chart_text(spec)
    shown = [row["concept"] for row in cut["data"]["values"]]
    assert all(len(c) <= PRINT_CHART_TEXT_LIMIT for c in shown)
    assert len(set(shown)) == 3 and shown[2] == long[:50]  # apart; a short one is kept
    assert cut["encoding"]["x"]["sort"] == shown[::-1]  # the same cut everywhere
    assert list(cut["data"]["values"][0]) == ["concept", "lean"]  # keys kept
