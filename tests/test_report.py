"""The report stage: offline HTML (and PDF) from a synthetic run directory."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from browser import open_report
from report_fixtures import HOSTILE, assert_charts_valid, build_run_dir

from auditkit.errors import SchemaVersionError, UsageError
from auditkit.report import build_report_context, render_report, templates_dir
from auditkit.report.render import format_number
from auditkit.rundir import VERSION_KEY

DEMO_WARNING = "random-weight demo pipeline: the numbers are meaningless"


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside each <script>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def _parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = build_run_dir(tmp_path_factory.mktemp("report"))
    (path,) = render_report(run, ["html"])
    return path, path.read_text(encoding="utf-8")


def test_html_is_written_with_every_section(rendered: tuple[Path, str]) -> None:
    path, html = rendered
    assert path == path.parent.parent / "report" / "report.html"
    assert html.startswith("<!DOCTYPE html>")
    for anchor in ("summary", "settings", "lean", "defaults", "descriptors", "similarity"):
        assert f'id="{anchor}"' in html
    for anchor in ("caveats", "provenance"):
        assert f'id="{anchor}"' in html
    assert "Occupation bias audit" in html
    assert "SimianLuo/LCM_Dreamshaper_v7" in html
    assert "perceived attributes, not self-identified" in html
    assert "not bit-reproducible" in html
    assert DEMO_WARNING not in html
    # the spec as run, verbatim, in the appendix
    assert "spec_version: 1" in html


def test_html_loads_nothing_from_the_network(rendered: tuple[Path, str]) -> None:
    _, html = rendered
    tags = _parse(html).tags
    for tag, attrs in tags:
        for name in ("src", "href", "data", "srcset", "poster", "action"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), (tag, name, value)
    scripts = [attrs for tag, attrs in tags if tag == "script"]
    assert all("src" not in attrs for attrs in scripts)
    assert not [a for t, a in tags if t == "link" and a.get("rel") == "stylesheet"]
    # Vega, Vega-Lite and vega-embed are inlined exactly once
    assert html.count("window.vegaEmbed=") == 1
    csp = [a["content"] for t, a in tags if t == "meta" and a.get("http-equiv")]
    assert csp and "default-src 'none'" in (csp[0] or "")
    assert "connect-src" not in (csp[0] or "")  # falls back to default-src 'none'


def test_hostile_concept_name_is_escaped(rendered: tuple[Path, str]) -> None:
    _, html = rendered
    assert HOSTILE not in html
    assert "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    parsed = _parse(html)
    assert not [a for t, a in parsed.tags if t == "img"]
    assert not [a for t, a in parsed.tags for name in a if name.startswith("on")]
    # one JSON data block and the two inlined scripts, nothing else
    kinds = [a.get("type") for t, a in parsed.tags if t == "script"]
    assert kinds == ["application/json", None, None]
    charts = json.loads(parsed.scripts[0])
    assert HOSTILE in json.dumps(charts, ensure_ascii=False)
    assert "<" not in parsed.scripts[0]


def test_context_is_plain_json(tmp_path: Path) -> None:
    context = build_report_context(build_run_dir(tmp_path))
    json.dumps(context, allow_nan=False)
    assert_charts_valid(context["charts"])
    assert set(context["charts"]) >= {"lean-0", "lean-1", "defaults-2", "similarity-1"}
    assert [a["axis"] for a in _lean_axes(context)] == ["gender", "age"]
    assert _lean_axes(context)[0]["steps_chart_id"] == "steps-0"
    scores = [row["score"] for row in _lean_axes(context)[0]["rows"]]
    assert scores == sorted(scores, reverse=True)
    assert context["model"]["is_demo"] is False
    assert context["provenance"]["files"][0]["path"].startswith("unet/")


def _lean_axes(context: dict[str, Any]) -> list[dict[str, Any]]:
    """The lean section's axes (the lean slice's section data)."""
    (lean,) = [s["data"] for s in context["sections"] if s["anchor"] == "lean"]
    return list(lean["axes"])


def _lean_layers(chart: dict[str, Any]) -> list[dict[str, Any]]:
    return [layer for layer in chart["layer"] if layer["mark"]["type"] in ("rule", "bar")]


def test_intervals_are_shown_when_the_tables_have_them(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path)
    context = build_report_context(run)
    # the lean chart draws a rule from score_ci_low to score_ci_high behind the bars
    layers = _lean_layers(context["charts"]["lean-0"])
    interval = [layer for layer in layers if layer["encoding"].get("x2", {}).get("field")]
    assert len(interval) == 1
    assert interval[0]["encoding"]["x"]["field"] == "score_ci_low"
    assert interval[0]["encoding"]["x2"]["field"] == "score_ci_high"
    assert [layer["mark"]["type"] for layer in layers][-2:] == ["rule", "bar"]
    tooltips = {t["title"] for t in interval[0]["encoding"]["tooltip"]}
    assert {"95% CI", "cosine 95% CI"} <= tooltips
    heatmap = context["charts"]["descriptors-0"]["layer"][0]["encoding"]["tooltip"]
    assert "95% CI" in {t["title"] for t in heatmap}
    similarity = context["charts"]["similarity-0"]["layer"][0]["encoding"]["tooltip"]
    assert "95% CI" in {t["title"] for t in similarity}
    # the table rows carry the interval and whether it is clear of 0
    rows = _lean_axes(context)[0]["rows"]
    assert _lean_axes(context)[0]["intervals"] is True
    for row in rows:
        assert row["score_ci_low"] <= row["score"] <= row["score_ci_high"]
        clear = row["score_ci_low"] > 0 or row["score_ci_high"] < 0
        assert row["clear_of_zero"] is clear
    assert {row["clear_of_zero"] for row in rows} == {True, False}  # the fixture has both
    assert context["bootstrap"] == {
        "resamples": 1000,
        "seed": 0,
        "n_seeds": 4,
        "intervals": True,
        "status": None,
        "missing": None,
        "resampling": "seeds",  # the fixture's summary, like a run's before it, names none
        "interval": "percentile",  # likewise: runs before centred intervals kept the quantiles
    }

    (path,) = render_report(run, ["html"])
    html = path.read_text(encoding="utf-8")
    assert '<th scope="col" class="num">95% CI</th>' in html
    assert "clear of&nbsp;0" in html and "interval includes&nbsp;0" in html
    first = rows[0]
    low, high = (format_number(first[k], signed=True) for k in ("score_ci_low", "score_ci_high"))
    assert f'<td class="num ci">[{low}, {high}]</td>' in html
    assert "How to read the intervals." in html and "1,000 times" in html
    assert '<th scope="row">Bootstrap resamples</th>' in html
    assert '<th scope="row">Bootstrap seed</th>' in html
    assert "and its 95% CI" in html  # descriptor ranking table


def test_run_without_intervals_renders_as_before(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path, intervals=False)
    assert "score_ci_low" not in pq.read_schema(run / "results" / "lean.parquet").names
    assert "statistics" not in (run / "spec.yaml").read_text(encoding="utf-8")
    context = build_report_context(run)
    assert context["bootstrap"] is None
    assert _lean_axes(context)[0]["intervals"] is False
    assert "score_ci_low" not in _lean_axes(context)[0]["rows"][0]
    layers = _lean_layers(context["charts"]["lean-0"])
    assert [layer["mark"]["type"] for layer in layers] == ["rule", "bar"]
    assert "score_ci_low" not in json.dumps(context["charts"])
    (path,) = render_report(run, ["html"])
    html = path.read_text(encoding="utf-8")
    assert 'id="lean"' in html
    for absent in ("95% CI", "clear of", "interval includes", "Bootstrap seed", "seed bootstrap"):
        assert absent not in html, absent
    # the tables are the same numbers either way: only the interval columns differ
    with_ci = build_report_context(build_run_dir(tmp_path / "ci"))
    assert [r["score"] for r in _lean_axes(with_ci)[0]["rows"]] == [
        r["score"] for r in _lean_axes(context)[0]["rows"]
    ]


def test_bootstrap_turned_off_is_said_plainly(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path, intervals=False)
    spec = run / "spec.yaml"
    text = spec.read_text(encoding="utf-8")
    spec.write_text(text + "statistics:\n  bootstrap_resamples: 0\n  seed: 7\n", encoding="utf-8")
    (path,) = render_report(run, ["html"])
    html = path.read_text(encoding="utf-8")
    assert "<td>0 (off: no confidence intervals)</td>" in html
    assert "<td>7</td>" in html
    assert "No confidence intervals." in html
    assert "95% CI" not in html


def _names_in(chart: dict[str, Any], names: list[str]) -> set[str]:
    """Which of ``names`` a chart spec mentions (its data, sorts, labels)."""
    text = json.dumps(chart)
    return {name for name in names if f"{name}" in text}


def test_a_large_axis_shows_its_strongest_concepts(tmp_path: Path) -> None:
    """Beyond 200 concepts an axis's tables and charts show the 20 highest and 20 lowest lean
    scores, the same concepts in every section, and say where the rest are; the similarity
    matrix of a set that large is drawn as block means."""
    import pandas as pd

    from auditkit.analyses.values import SHOWN_CONCEPTS, WHOLE_AXIS_CONCEPTS, matrix_block

    run = build_run_dir(tmp_path, extra_concepts=260)
    context = build_report_context(run)
    assert_charts_valid(context["charts"])
    objects = [f"object{i:04d}" for i in range(260)]
    lean = pd.read_parquet(run / "results" / "lean.parquet")
    gender = lean[lean["axis"] == "gender"].sort_values("score")
    total = len(gender)
    assert total > WHOLE_AXIS_CONCEPTS and SHOWN_CONCEPTS == 40
    expected = set(gender["concept"][:20]) | set(gender["concept"][-20:])
    axis = _lean_axes(context)[0]
    assert {row["concept"] for row in axis["rows"]} == expected
    assert axis["shown"] == {
        "shown": 40,
        "total": total,
        "how": "the 20 highest and the 20 lowest lean scores",
        "table": "results/lean.parquet",
    }
    in_objects = expected & set(objects)
    assert in_objects and in_objects != set(objects)
    for chart_id in (axis["chart_id"], axis["steps_chart_id"]):
        assert _names_in(context["charts"][chart_id], objects) == in_objects, chart_id
    # the other sections of the axis show the same concepts
    for anchor in ("defaults", "descriptors"):
        (data,) = [s["data"] for s in context["sections"] if s["anchor"] == anchor]
        entry = next(e for e in data["axes"] if e["axis"] == "gender")
        assert {row["concept"] for row in entry["rows"]} == expected, anchor
        assert entry["shown"]["table"] == f"results/{anchor}.parquet"
        assert _names_in(context["charts"][entry["chart_id"]], objects) == in_objects
    # an axis the lean table lacks (three groups) shows the largest |cosine| with a group
    descriptors = pd.read_parquet(run / "results" / "descriptors.parquet")
    ethnicity = descriptors[descriptors["axis"] == "ethnicity"]
    strongest = ethnicity.assign(size=ethnicity["cosine"].abs()).groupby("concept")["size"].max()
    (data,) = [s["data"] for s in context["sections"] if s["anchor"] == "descriptors"]
    entry = next(e for e in data["axes"] if e["axis"] == "ethnicity")
    assert {row["concept"] for row in entry["rows"]} == set(strongest.nlargest(40).index)
    assert entry["shown"]["how"] == "the 40 largest cosines with a group"
    # the objects' similarity matrix: blocks of 4 concepts a side, each the mean of its pairs
    (data,) = [s["data"] for s in context["sections"] if s["anchor"] == "similarity"]
    sets = {entry["concept_set"]: entry for entry in data["sets"]}
    assert sets["occupations"]["block"] == 1 and sets["objects"]["block"] == 4
    assert matrix_block(200) == 1 and matrix_block(201) == 3 and matrix_block(260) == 4
    chart = context["charts"][sets["objects"]["chart_id"]]
    rows = chart["layer"][0]["encoding"]["y"]["sort"]
    assert len(rows) == 65 and rows[0] == "1–4: object0000 … object0003"
    similarity = pd.read_parquet(run / "results" / "similarity.parquet")
    first = similarity[
        similarity["concept_a"].isin(objects[:4]) & similarity["concept_b"].isin(objects[4:8])
    ]
    record = next(r for r in chart["data"]["values"] if r["concept_a"] == rows[0])
    assert record["cosine"][1] == pytest.approx(first["cosine"].mean(), abs=1e-4)
    assert record["cosine_min"][1] == pytest.approx(first["cosine"].min(), abs=1e-4)
    itself = similarity[
        similarity["concept_a"].isin(objects[:4]) & similarity["concept_b"].isin(objects[:4])
    ]
    others = itself[itself["concept_a"] != itself["concept_b"]]
    assert record["cosine"][0] == pytest.approx(others["cosine"].mean(), abs=1e-4)
    (path,) = render_report(run, ["html"])
    html = path.read_text(encoding="utf-8")
    note = f"This axis has {total} concepts; its chart and table show 40"
    assert html.count(note) == 2 + 3 + 3  # lean's two axes, defaults' and descriptors' three
    assert "Every pair is in <code>results/similarity.parquet</code>" in html


def test_same_run_renders_the_same_bytes(rendered: tuple[Path, str]) -> None:
    path, html = rendered
    (again,) = render_report(path.parent.parent, ["html"])
    assert again.read_text(encoding="utf-8") == html


def test_missing_analyses_are_absent_sections(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path, analyses=("lean",), aggregation="mean")
    (path,) = render_report(run, ["html"])
    html = path.read_text(encoding="utf-8")
    assert 'id="lean"' in html
    for anchor in ("defaults", "descriptors", "similarity"):
        assert f'id="{anchor}"' not in html
        assert f'href="#{anchor}"' not in html
    assert "steps-0" not in html


def test_demo_model_gets_a_warning_banner(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path, model_id="builtin:tiny-sd", status="failed")
    (path,) = render_report(run, ["html"])
    html = path.read_text(encoding="utf-8")
    assert DEMO_WARNING in html
    assert "the run&#39;s status is &#39;failed&#39;" in html


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path, schema_version=2)
    with pytest.raises(SchemaVersionError, match="schema_version 2"):
        render_report(run, ["html"])
    assert not (run / "report" / "report.html").exists()


def test_newer_table_schema_in_parquet_metadata_is_refused(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path)
    path = run / "results" / "lean.parquet"
    table = pq.read_table(path)
    meta = {**(table.schema.metadata or {}), VERSION_KEY: b"3"}  # the key every writer uses
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(SchemaVersionError, match="schema_version 3"):
        build_report_context(run)


def test_incomplete_run_directory_is_a_usage_error(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path)
    (run / "results" / "summary.json").unlink()
    with pytest.raises(UsageError, match=r"summary\.json is missing"):
        build_report_context(run)
    with pytest.raises(UsageError, match="format"):
        render_report(build_run_dir(tmp_path / "again"), ["docx"])


def test_table_missing_columns_is_a_usage_error(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path)
    path = run / "results" / "lean.parquet"
    pq.write_table(pq.read_table(path).drop(["score"]), path)
    with pytest.raises(UsageError, match="score"):
        build_report_context(run)


def test_templates_are_found() -> None:
    assert (templates_dir() / "report.html.j2").is_file()


def test_the_vega_bundle_is_built_once_and_kept_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vl-convert builds the bundle once per key; another process reads the kept file, and an
    empty or unwritable cache only costs a rebuild."""
    import vl_convert

    from auditkit.report import render

    built: list[str] = []
    real = vl_convert.javascript_bundle

    def counted(snippet: str, vl_version: str | None = None) -> str:
        built.append(snippet)
        return str(real(snippet, vl_version=vl_version))

    monkeypatch.setattr(vl_convert, "javascript_bundle", counted)
    monkeypatch.setattr(render, "BUNDLE_CACHE", tmp_path / "vega")
    render.vega_bundle.cache_clear()  # a fresh process
    first = render.vega_bundle()
    (kept,) = (tmp_path / "vega").glob("bundle-*.js")
    assert kept.read_text(encoding="utf-8") == first and "vegaEmbed" in first
    render.vega_bundle.cache_clear()
    assert render.vega_bundle() == first and len(built) == 1  # read back, not built
    kept.write_text("")  # a damaged cache is built again
    render.vega_bundle.cache_clear()
    assert render.vega_bundle() == first and len(built) == 2
    assert kept.read_text(encoding="utf-8") == first
    blocked = tmp_path / "a-file"  # a cache folder that cannot be made (even by root)
    blocked.write_text("")
    monkeypatch.setattr(render, "BUNDLE_CACHE", blocked / "vega")
    render.vega_bundle.cache_clear()
    assert render.vega_bundle() == first and len(built) == 3
    assert blocked.is_file() and not list(tmp_path.glob("**/.bundle-*"))  # nothing left behind
    render.vega_bundle.cache_clear()


@pytest.mark.parametrize(
    ("value", "kwargs", "shown"),
    [
        (0.12345, {}, "0.123"),
        (-0.5, {"digits": 2}, "−0.50"),
        (0.25, {"signed": True, "digits": 2}, "+0.25"),
        (-0.0001, {"signed": True, "digits": 2}, "0.00"),
        (float("nan"), {}, "—"),
        (None, {}, "—"),
    ],
)
def test_format_number(value: Any, kwargs: dict[str, Any], shown: str) -> None:
    assert format_number(value, **kwargs) == shown


def test_pdf_has_the_same_content(tmp_path: Path) -> None:
    pytest.importorskip("weasyprint", reason="PDF reports need WeasyPrint (pip install .[pdf])")
    pypdf = pytest.importorskip("pypdf", reason="reading the PDF back needs pypdf")
    run = build_run_dir(tmp_path, model_id="builtin:tiny-sd")
    paths = render_report(run, ["html", "pdf"])
    assert [p.name for p in paths] == ["report.html", "report.pdf"]
    pdf = paths[1].read_bytes()
    assert pdf.startswith(b"%PDF")
    reader = pypdf.PdfReader(str(paths[1]))
    text = " ".join(page.extract_text() for page in reader.pages)
    assert "Occupation bias audit" in text
    assert "numbers are meaningless" in text
    assert "<img src=x onerror=alert(1)>" in text  # shown as text, nothing executes in a PDF
    assert len(reader.pages) > 5
    # the appendix lists every prompt, one a line, after its id
    lines = {line.split()[0]: line for line in text.splitlines() if line.split()}
    prompts = pq.read_table(run / "results" / "prompts.parquet").to_pandas()
    for row in prompts.itertuples():
        assert row.prompt_id in lines, row.prompt_id
        assert row.prompt.split()[0] in lines[row.prompt_id].split()[1:], row.prompt


@pytest.mark.browser
def test_report_draws_offline_in_chromium(rendered: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = rendered
    with open_report(path) as visit:
        states = visit.chart_states
        assert len(states) >= 10
        assert all(state == "drawn" and drawn for _, state, drawn in states), states
        # show the tooltip of the hostile concept's bar: it must stay text
        tooltip = _hover_until(visit.page, "#chart-lean-0 svg path[aria-roledescription='bar']")
        assert HOSTILE in tooltip["text"]
        assert tooltip["images"] == 0
        visit.page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert visit.problems == []
    assert visit.dialogs == []
    assert visit.blocked == []


def _hover_until(page: Any, selector: str) -> dict[str, Any]:
    """Hover each mark until the tooltip names the hostile concept; return the tooltip."""
    bars = page.locator(selector)
    for index in range(bars.count()):
        bars.nth(index).hover()
        page.wait_for_timeout(100)
        tooltip: dict[str, Any] = page.evaluate(
            "() => { const t = document.getElementById('vg-tooltip-element');"
            " return t ? {text: t.innerText, images: t.querySelectorAll('img, script').length}"
            " : {text: '', images: 0}; }"
        )
        if "onerror" in tooltip["text"]:
            return tooltip
    raise AssertionError("no bar's tooltip showed the hostile concept")


def test_compact_chart_keeps_every_named_field_and_enough_digits() -> None:
    from auditkit.charts import compact_chart

    spec = {
        "data": {"values": [{"score": 0.0123456, "unused": "x" * 50, "größe": 1.23456789}]},
        "encoding": {
            "x": {"field": "score", "type": "quantitative"},
            "tooltip": [{"field": "größe", "type": "quantitative"}],
        },
        "layer": [{"data": {"values": [{"q": 0.000234567, "big": 28.0728431}]}}],
        "transform": [{"calculate": "datum.q * 2 + datum.big", "as": "z"}],
    }
    compact = compact_chart(spec)
    assert compact["data"]["values"] == [{"score": 0.01235, "größe": 1.2346}]
    assert compact["layer"][0]["data"]["values"] == [{"q": 0.0002346, "big": 28.0728}]
    assert compact["encoding"] == spec["encoding"]  # only data changes
