"""Size budget: the HTML report of a 200-concept audit with exemplar images stays under 10 MB
and still renders every chart and image in Chromium.

A real audit (tiny random-weight LCM pipeline, 32 px, the shipped toyworld captioner): 200
concepts x 6 seeds, every analysis, the seed bootstrap and captions with png thumbnails. The
tiny model's images are noisy, so each png thumbnail costs about 3 KB, as much as a 96-px webp
thumbnail of a 512-px photograph; 1,200 of them (4.7 MB as base64) are more than the default
4 MB image budget, so the budget has to choose.
"""

from __future__ import annotations

import itertools
import string
from pathlib import Path
from typing import Any

import pytest
from browser import open_report

from auditkit.analyses.base import SectionContext
from auditkit.analyses.exemplars_section import exemplar_section
from auditkit.report.inputs import read_run

MAX_HTML_BYTES = 10_000_000
CONCEPTS = 200
SEEDS = 6


def _terms() -> list[str]:
    pairs = itertools.product(string.ascii_lowercase, repeat=2)
    return ["job" + a + b for a, b in itertools.islice(pairs, CONCEPTS)]


def _spec(model: Path) -> str:
    return f"""\
spec_version: 1
name: budget
model: {{id: {model}, device: cpu, steps: 2, guidance_scale: 3.0, resolution: 32}}
seeds: {SEEDS}
batch_size: 128
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
  - name: age
    templates: ["a photo of a {{term}}"]
    groups: {{young: [young person], old: [old person]}}
    defaults: false
concepts:
  - name: jobs
    templates: ["a photo of a {{term}}"]
    terms: [{", ".join(_terms())}]
analyses: [lean, defaults, descriptors, similarity]
statistics: {{bootstrap_resamples: 200}}
captions:
  captioner: {{kind: toyworld}}
  exemplars: {{seeds: {SEEDS}, format: png}}
report: {{formats: [html]}}
"""


@pytest.fixture(scope="module")
def big_run(tiny_pipeline_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from auditkit.run import run_audit

    root = tmp_path_factory.mktemp("budget")
    path = root / "spec.yaml"
    path.write_text(_spec(tiny_pipeline_dirs["lcm"]))
    return run_audit(path, root / "run", cache_dir=root, show_progress=False).run_dir


def _exemplars(run: Path) -> dict[str, Any] | None:
    """The data of the report's exemplars section, as the report builds it."""
    read = read_run(run)
    return exemplar_section(SectionContext(read.spec, read.tables, manifest=read.manifest))


def test_200_concept_report_with_images_is_under_10_mb(big_run: Path) -> None:
    html = big_run / "report" / "report.html"
    size = html.stat().st_size
    assert size < MAX_HTML_BYTES, f"{size / 1e6:.2f} MB"
    section = _exemplars(big_run)
    assert section is not None
    assert section["stored"] == CONCEPTS * SEEDS
    assert section["shown"] < section["stored"]  # the budget chose
    assert section["bytes"] <= section["budget_bytes"] == 4_000_000
    rows = section["grids"][0]["rows"]
    assert len(rows) == CONCEPTS and all(row["images"] for row in rows)  # every concept shown
    counts = {len(row["images"]) for row in rows}
    assert max(counts) - min(counts) <= 1  # breadth-first: no concept gets two more than another
    text = html.read_text(encoding="utf-8")
    assert text.count('src="data:image/png;base64,') == section["shown"]


def test_200_concept_report_renders_in_chromium(big_run: Path, tmp_path: Path) -> None:
    with open_report(big_run / "report" / "report.html") as visit:
        assert visit.chart_states and all(
            state == "drawn" and drawn for _, state, drawn in visit.chart_states
        ), visit.chart_states
        loaded = visit.page.eval_on_selector_all(
            "#exemplars img", "ns => ns.filter(n => n.complete && n.naturalWidth > 0).length"
        )
        section = _exemplars(big_run)
        assert section is not None and loaded == section["shown"]
        assert visit.problems == [] and visit.blocked == []
        shot = tmp_path / "similarity.png"
        visit.page.query_selector("#similarity").screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000


def test_large_similarity_matrix_is_a_page_wide_overview_in_cluster_order(big_run: Path) -> None:
    import pandas as pd

    from auditkit.charts import matrix_labelled
    from auditkit.report import build_report_context

    context = build_report_context(big_run)
    chart = context["charts"]["similarity-0"]
    assert chart["width"] <= 640 and chart["height"] <= 644  # fits a page, square cells
    cells = chart["layer"][0]
    assert "stroke" not in cells["mark"]  # no cell borders to drown 2-3 px cells
    assert not matrix_labelled(CONCEPTS) and cells["encoding"]["x"]["axis"]["labels"] is False
    assert matrix_labelled(40) and matrix_labelled(53) and not matrix_labelled(54)
    structure = pd.read_parquet(big_run / "results" / "structure.parquet")
    leaves = list(structure.sort_values("leaf_order")["concept"])
    assert cells["encoding"]["x"]["sort"] == leaves == cells["encoding"]["y"]["sort"]
    (similarity,) = (s["data"] for s in context["sections"] if s["anchor"] == "similarity")
    section = similarity["sets"][0]
    assert section["ordered"] and not section["labelled"]
