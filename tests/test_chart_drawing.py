"""The PDF's chart drawings, made by vl-convert in a child process (auditkit/chart_drawing.py)."""

from __future__ import annotations

import pytest
from report_fixtures import build_run_dir

from auditkit.chart_drawing import ChartDrawingError, ChartDrawings, draw_svg
from auditkit.errors import RuntimeFailure
from auditkit.report import build_report_context
from auditkit.report.render import CHART_SCHEME, _offline_fetcher, render_pdf, vega_lite_version


def _bars(title: str, width: object = 200) -> dict[str, object]:
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v6.json",
        "title": title,
        "width": width,
        "data": {"values": [{"a": "x", "b": 1}, {"a": "y", "b": 3}]},
        "mark": "bar",
        "encoding": {
            "x": {"field": "a", "type": "nominal"},
            "y": {"field": "b", "type": "quantitative"},
        },
    }


BROKEN = {"mark": "bar", "encoding": {"x": {"field": "a", "type": "no such type"}}}


def test_the_child_draws_what_the_report_process_would() -> None:
    specs = [_bars("one"), _bars("two", width="container")]
    version = vega_lite_version()
    with ChartDrawings(version, 333) as drawings:
        drawings.add("one", specs[0])
        assert drawings.svg(0).startswith(b"<svg")  # drawn before the next chart is added
        drawings.add("two", specs[1])
        drawings.add("one", specs[1])  # a chart kept twice: its latest drawing
        drawings.close()
        drawn = [drawings.svg(1), drawings.svg(0)]  # in any order
        drawings.check()
        assert drawings.index == {"one": 2, "two": 1}
        drawings.failed()  # nothing failed: no error
        with pytest.raises(ChartDrawingError, match="came after the last one"):
            drawings.add("three", specs[0])
    assert drawn == [draw_svg(specs[1], version, 333), draw_svg(specs[0], version, 200)]
    assert drawn[0] != drawn[1]


def test_a_chart_that_cannot_be_drawn_is_named_and_stops_the_rest() -> None:
    specs = {"fine": _bars("fine"), "broken": BROKEN, "after": _bars("after")}
    with ChartDrawings(vega_lite_version(), 300, specs) as d:
        assert d.svg(0).startswith(b"<svg")
        with pytest.raises(ChartDrawingError, match=r"chart 1: ValueError: .*Invalid field type"):
            d.svg(1)
        with pytest.raises(ChartDrawingError, match="chart 1"):
            d.svg(2)
        with pytest.raises(ChartDrawingError, match="chart 1"):
            d.check()
        with pytest.raises(ChartDrawingError, match="chart 1"):
            d.failed()
        with pytest.raises(ChartDrawingError, match="there is no chart 3"):
            d.svg(3)


def test_a_child_that_dies_is_reported_with_how_far_it_got() -> None:
    with ChartDrawings(vega_lite_version(), 300, {str(i): _bars(str(i)) for i in range(40)}) as d:
        d._child.kill()
        with pytest.raises(
            ChartDrawingError, match=r"process ended \(exit code -9\) after \d+ of 40"
        ):
            d.check()


def test_the_pdf_fetcher_serves_its_drawings_and_data_urls_only() -> None:
    weasyprint = pytest.importorskip("weasyprint")
    with ChartDrawings(vega_lite_version(), 300, {"only": _bars("only")}) as drawings:
        fetch = _offline_fetcher(weasyprint, drawings)
        served = fetch(f"{CHART_SCHEME}:0")
        body = served.read() if hasattr(served, "read") else served["string"]
        assert body == drawings.svg(0)
        data = fetch("data:text/plain;base64,aGk=")
        assert (data.read() if hasattr(data, "read") else data["string"]) == b"hi"
        for url in (
            f"{CHART_SCHEME}:1",
            f"{CHART_SCHEME}:x",
            "file:///etc/passwd",
            "http://example.com/a.svg",
        ):
            with pytest.raises(ValueError, match=r"disallowed protocol|may not load"):
                fetch(url)


def test_a_pdf_whose_chart_cannot_be_drawn_fails_with_a_located_error(tmp_path: object) -> None:
    pytest.importorskip("weasyprint")
    context = build_report_context(build_run_dir(tmp_path, model_id="builtin:tiny-sd"))
    name = next(iter(context["charts"]))
    context["charts"][name] = BROKEN
    with pytest.raises(
        RuntimeFailure, match=r"chart of the PDF report could not be drawn: chart 0"
    ):
        render_pdf(context)
