"""The causal check and discovered associations in the report and in summary.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from browser import open_report
from report_fixtures import HOSTILE, OCCUPATIONS, assert_charts_valid, build_run_dir

from auditkit.analyses import slices
from auditkit.analyses.stage import chosen_slices, summary_parts
from auditkit.analyze.causal import AXIS_COLUMNS, CAUSAL_COLUMNS, CURVE_COLUMNS
from auditkit.analyze.discovery import DISCOVERY_COLUMNS, empty_ranking
from auditkit.analyze.stats import wilson_interval
from auditkit.analyze.summary import read_extra_tables, read_results, summarize
from auditkit.errors import SchemaVersionError, UsageError
from auditkit.report import build_report_context, render_report
from auditkit.spec import parse_spec

HOSTILE_TERM = "<script>alert(1)</script>"
"""A mined term, as a captioner could write it: it must be shown as text, never run."""
ALPHAS = [-1.0, -0.5, 0.0, 0.5, 1.0]
GENDER_COUNTS = [1, 12, 40, 70, 91]
"""Images (of 100 read per alpha) read as 'man': rises steadily, a causal direction."""
AGE_COUNTS = [30, 45, 38, 52, 60]
"""Images read as 'young': ends apart but dips at alpha 0, so not monotone."""
TERMS = ["stethoscope", "dark woman", HOSTILE_TERM, "helmet", "beard", "apron"]


def _share(axis: str, group: str, alpha: float, count: int, n: int) -> dict[str, object]:
    low, high = wilson_interval(count, n)
    return {
        **{"axis": axis, "alpha": alpha, "attribute": axis, "positive_group": group},
        **{"n_images": n, "n_unread": 2, "count": count, "share": count / n},
        **{"share_low": low, "share_high": high},
    }


def _add_causal(run: Path, concepts: list[str]) -> None:
    """The three causal tables with the writer's columns: gender causal, age not monotone."""
    captions = run / "captions"
    captions.mkdir(exist_ok=True)
    curve, per_concept, axes = [], [], []
    for axis, pos, neg, counts in (
        ("gender", "man", "woman", GENDER_COUNTS),
        ("age", "young", "old", AGE_COUNTS),
    ):
        rows = [_share(axis, pos, a, k, 100) for a, k in zip(ALPHAS, counts, strict=True)]
        curve += rows
        for i, concept in enumerate(concepts):
            for a, k in zip(ALPHAS, counts, strict=True):
                count = int(np.clip(round(k / 100 * 16) + (i % 3) - 1, 0, 16))
                row = _share(axis, pos, a, count, 16)
                per_concept.append({**row, "concept_set": "occupations", "concept": concept})
        shares = [k / 100 for k in counts]
        axes.append(
            {
                **{"axis": axis, "attribute": axis, "positive_group": pos, "negative_group": neg},
                **{"n_alphas": len(ALPHAS), "n_concepts": len(concepts), "n_images": 500},
                **{"alpha_low": -1.0, "alpha_high": 1.0},
                **{"share_at_low": shares[0], "share_at_high": shares[-1]},
                "effect": shares[-1] - shares[0],
                "rho": 0.7 if axis == "gender" else 0.2,
                "monotone": bool(np.all(np.diff(shares) >= 0)),
                "slope": 0.45 if axis == "gender" else 0.12,
                "direction_norm": 41.5,
                "direction_sha256": "ab" * 32,
            }
        )
    pd.DataFrame(curve, columns=CURVE_COLUMNS).to_parquet(captions / "causal_curve.parquet")
    pd.DataFrame(per_concept, columns=CAUSAL_COLUMNS).to_parquet(captions / "causal.parquet")
    pd.DataFrame(axes, columns=AXIS_COLUMNS).to_parquet(captions / "causal_axes.parquet")


def _add_discovery(run: Path, concepts: list[str], top_k: int = 3) -> None:
    """A discovery ranking with the writer's columns; the hostile term tops 'nurse'."""
    rng = np.random.default_rng(7)
    blocks = [("occupations", c, "", "") for c in concepts]
    blocks += [("occupations", "", "gender", "man"), ("occupations", "", "age", "young")]
    rows = []
    for cset, concept, axis, pos in blocks:
        cosines = rng.uniform(-0.6, 0.6, len(TERMS))
        if concept == "nurse":
            cosines[TERMS.index(HOSTILE_TERM)] = 0.97
        order = np.argsort(-cosines, kind="stable")
        for rank, i in enumerate(order, start=1):
            top = rank <= top_k or (axis != "" and rank > len(TERMS) - top_k)
            rows.append(
                {
                    **{"concept_set": cset, "concept": concept, "axis": axis},
                    **{"positive_group": pos, "term": TERMS[i], "count": int(rank % 4)},
                    **{"cosine": float(cosines[i]), "cosine_ci_low": float(cosines[i]) - 0.1},
                    **{"cosine_ci_high": min(float(cosines[i]) + 0.1, 1.0)},
                    **{"rank": rank, "top": top},
                }
            )
    frame = pd.DataFrame(rows, columns=DISCOVERY_COLUMNS)
    frame.to_parquet(run / "results" / "discovery.parquet", index=False)


PASS_SLICES = ("causal", "discovery")
"""The slices whose tables the tests write by hand (their passes write them in a run)."""


def _resummarize(run: Path) -> dict[str, Any]:
    """Rewrite summary.json as ``auditkit run`` does with the optional tables passed in."""
    results, old = read_results(run)
    spec = parse_spec((run / "spec.yaml").read_text(encoding="utf-8"))
    chosen = [a for a in chosen_slices(spec) if a.name not in PASS_SLICES]
    chosen += [slices()[n] for n in PASS_SLICES]
    summary = summarize(
        spec,
        results,
        run_id=str(old["run_id"]),
        spec_hash=str(old["spec_hash"]),
        plan_hash=str(old["plan_hash"]),
        **summary_parts(spec, chosen, {**results.tables, **read_extra_tables(run)}),
    )
    (run / "results" / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return summary


def _run_with_sections(root: Path) -> Path:
    run = build_run_dir(root)
    concepts = [*OCCUPATIONS, HOSTILE]
    _add_causal(run, concepts)
    _add_discovery(run, concepts)
    _resummarize(run)
    return run


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = _run_with_sections(tmp_path_factory.mktemp("sections"))
    (path,) = render_report(run, ["html"])
    return path, path.read_text(encoding="utf-8")


def test_summary_gains_causal_and_discovery_blocks(tmp_path: Path) -> None:
    run = _run_with_sections(tmp_path)
    summary = json.loads((run / "results" / "summary.json").read_text(encoding="utf-8"))
    assert summary["schema_version"] == 1
    gender, age = summary["causal"]
    assert [p["alpha"] for p in gender["shares"]] == ALPHAS
    assert [p["share"] for p in gender["shares"]] == [k / 100 for k in GENDER_COUNTS]
    assert gender["shares"][0]["share_ci"] == pytest.approx(list(wilson_interval(1, 100)), abs=1e-6)
    assert gender["monotone"] is True and gender["verdict"] == "causal"
    assert gender["effect"] == pytest.approx(0.90)
    assert gender["statement"] == (
        "Causal check on 'gender': adding α·g to the unet.mid_block output at every denoising "
        "step moves the share of images read as 'man' from 0.01 (α = −1) to 0.91 (α = +1), "
        "monotonically: the direction is causally used by the model."
    )
    assert age["monotone"] is False and age["verdict"] == "not monotone"
    assert "but not monotonically (it falls between α = −0.5 and 0)" in age["statement"]
    assert gender["statement"] in summary["findings"]
    assert age["statement"] in summary["findings"]
    nurse = next(c for c in summary["discovery"]["concepts"] if c["concept"] == "nurse")
    assert nurse["top"][0]["term"] == HOSTILE_TERM
    assert nurse["top"][0]["cosine"] == pytest.approx(0.97)
    assert nurse["top"][0]["cosine_ci"] == pytest.approx([0.87, 1.0])
    assert len(nurse["top"]) == 3
    assert [a["axis"] for a in summary["discovery"]["axes"]] == ["gender", "age"]
    for end in summary["discovery"]["axes"][0]["toward_positive"]:
        assert end["cosine"] > 0
    assert any("'nurse': '<script>alert(1)</script>' (+0.97)" in f for f in summary["findings"])
    assert any("leaning most towards 'man' along 'gender'" in f for f in summary["findings"])
    json.dumps(summary, allow_nan=False)


def test_summary_without_the_tables_has_no_new_keys(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path)
    assert read_extra_tables(run) == {}
    summary = _resummarize(run)
    assert "causal" not in summary and "discovery" not in summary


def test_html_shows_the_causal_check(rendered: tuple[Path, str]) -> None:
    _, html = rendered
    assert 'id="causal"' in html and '<a href="#causal">Causal check</a>' in html
    assert 'href="#causal-0">gender</a>' in html and 'href="#causal-1">age</a>' in html
    assert "α is in units of the full gap between the two groups' mean latents" in html
    assert "at every denoising step" in html
    assert (
        "moves the share of images read as &#39;man&#39; from 0.01 (α = −1) to 0.91 (α = +1), "
        "monotonically: the direction is causally used by the model." in html
    )
    assert "but not monotonically (it falls between α = −0.5 and 0)" in html
    assert '<span class="verdict verdict-causal">causal</span>' in html
    assert '<span class="verdict verdict-not-monotone">not monotone</span>' in html
    assert "[0.00, 0.05]" in html  # the Wilson interval of 1 of 100
    assert 'data-chart="causal-0"' in html and 'data-chart="causal-1"' in html
    # the causal sentences also reach the summary of findings
    assert html.index("Causal check on &#39;gender&#39;") < html.index('id="settings"')


def test_html_shows_discovered_terms_escaped(rendered: tuple[Path, str]) -> None:
    _, html = rendered
    assert 'id="discovery"' in html
    assert '<a href="#discovery">Discovered associations</a>' in html
    assert "mined from the captions" in html
    section = html[html.index('id="discovery"') : html.index('id="caveats"')]
    assert '<td class="term">&lt;script&gt;alert(1)&lt;/script&gt;</td>' in section
    assert "+0.97" in section and "[+0.87, +1.00]" in section
    assert "Towards man" in section and "Towards woman" in section
    assert HOSTILE_TERM not in html
    assert "<script>alert(1)" not in html


def _section_data(context: dict[str, Any], anchor: str) -> Any:
    """The data of the report section ``anchor`` (a slice's), None when the report leaves it out."""
    return next((s["data"] for s in context["sections"] if s["anchor"] == anchor), None)


def test_context_of_the_sections_is_plain_json(tmp_path: Path) -> None:
    context = build_report_context(_run_with_sections(tmp_path))
    json.dumps(context, allow_nan=False)
    assert_charts_valid(context["charts"])
    causal = _section_data(context, "causal")
    assert causal["hook"] == "unet.mid_block"
    assert [a["axis"] for a in causal["axes"]] == ["gender", "age"]
    assert causal["axes"][0]["alphas"] == ["−1", "−0.5", "0", "+0.5", "+1"]
    assert len(causal["axes"][0]["concept_rows"]) == len(OCCUPATIONS) + 1
    layers = context["charts"]["causal-0"]["layer"]
    assert {layer["mark"]["type"] for layer in layers} == {"rule", "line", "point"}
    discovery = _section_data(context, "discovery")
    assert discovery["n_terms"] == len(TERMS) and discovery["intervals"] is True
    assert len(discovery["concepts"]) == len(OCCUPATIONS) + 1


def test_run_without_the_tables_has_no_sections(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path)
    context = build_report_context(run)
    assert _section_data(context, "causal") is None
    assert _section_data(context, "discovery") is None
    (path,) = render_report(run, ["html"])
    html = path.read_text(encoding="utf-8")
    assert 'id="causal"' not in html and 'href="#causal"' not in html
    assert 'id="discovery"' not in html and 'href="#discovery"' not in html


def test_discovery_without_terms_says_so(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path)
    empty_ranking().to_parquet(run / "results" / "discovery.parquet", index=False)
    summary = _resummarize(run)
    assert summary["discovery"] == {"n_terms": 0, "concepts": [], "axes": []}
    assert "Open-vocabulary discovery kept no term" in " ".join(summary["findings"])
    (path,) = render_report(run, ["html"])
    html = path.read_text(encoding="utf-8")
    assert 'id="discovery"' in html and "No term was mined" in html


def test_newer_causal_table_is_refused(tmp_path: Path) -> None:
    run = _run_with_sections(tmp_path)
    path = run / "captions" / "causal_axes.parquet"
    table = pa.Table.from_pandas(pd.read_parquet(path), preserve_index=False)
    metadata = {**(table.schema.metadata or {}), b"auditkit_schema_version": b"2"}
    pq.write_table(table.replace_schema_metadata(metadata), path)
    with pytest.raises(SchemaVersionError, match="schema_version 2"):
        build_report_context(run)


def test_discovery_table_missing_columns_is_a_usage_error(tmp_path: Path) -> None:
    run = _run_with_sections(tmp_path)
    path = run / "results" / "discovery.parquet"
    pd.read_parquet(path).drop(columns=["top"]).to_parquet(path)
    with pytest.raises(UsageError, match="top"):
        build_report_context(run)


def test_pdf_shows_both_sections(tmp_path: Path) -> None:
    pytest.importorskip("weasyprint", reason="PDF reports need WeasyPrint (pip install .[pdf])")
    pypdf = pytest.importorskip("pypdf", reason="reading the PDF back needs pypdf")
    (path,) = render_report(_run_with_sections(tmp_path), ["pdf"])
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(str(path)).pages)
    flat = " ".join(text.split())
    assert "Causal check" in flat and "Discovered associations" in flat
    assert "monotonically: the direction is causally used by the model" in flat
    assert HOSTILE_TERM in flat  # shown as text; nothing executes in a PDF


@pytest.mark.browser
def test_sections_draw_offline_in_chromium(rendered: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = rendered
    with open_report(path) as visit:
        states = dict((name, (state, drawn)) for name, state, drawn in visit.chart_states)
        assert states["chart-causal-0"] == ("drawn", True)
        assert states["chart-causal-1"] == ("drawn", True)
        assert all(state == ("drawn", True) for state in states.values()), states
        cell = visit.page.locator("#discovery td.term", has_text="alert(1)").first
        assert cell.inner_text() == HOSTILE_TERM
        assert visit.page.locator("#discovery script").count() == 0
        visit.page.locator("#causal").screenshot(path=str(tmp_path / "causal.png"))
    assert (tmp_path / "causal.png").stat().st_size > 5_000
    assert visit.dialogs == []
    assert visit.problems == []
    assert visit.blocked == []
