"""Render the report context to a self-contained HTML file and, on request, a PDF.

The HTML inlines Vega, Vega-Lite and vega-embed once (from vl-convert's bundle) and carries a
Content-Security-Policy that allows no network access at all and runs only the page's own two
scripts (by hash), so the file opens offline and injected markup cannot execute. The PDF is made
by WeasyPrint from the same template, with each chart converted to a static SVG by vl-convert.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gc
import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import altair as alt
import jinja2
import markupsafe

import auditkit
from auditkit.chart_drawing import CHART_SCHEME, ChartDrawingError, ChartDrawings
from auditkit.errors import PrerequisiteError, RuntimeFailure, UsageError
from auditkit.report.context import build_report_context
from auditkit.rundir import RunDir, write_bytes_atomic

FORMATS = ("html", "pdf")
TEMPLATE = "report.html.j2"
_GLOBALS_SNIPPET = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"
"""What the bundle exposes: report.js calls ``window.vegaEmbed``."""
PAPER_SIZES = {"a4": "A4", "letter": "letter"}
"""CSS page sizes of the paper formats a PDF report can be printed on."""
PDF_CHART_WIDTH = 620
"""Pixel width given to charts sized to their container when they are drawn for the PDF."""


def templates_dir() -> Path:
    """The report templates: ``auditkit/templates`` in a wheel, ``templates/`` in a checkout."""
    package = Path(auditkit.__file__).resolve().parent
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / TEMPLATE).is_file():
            return candidate
    raise RuntimeFailure(
        f"The report templates were not found (looked for {TEMPLATE} in "
        f"{package / 'templates'} and {package.parent / 'templates'}).",
        hint="reinstall auditkit; a wheel ships them under auditkit/templates.",
    )


def render_report(
    run_dir: Path, formats: Sequence[str] | None = None, manifest: dict[str, Any] | None = None
) -> list[Path]:
    """Write ``run_dir/report/report.html`` (and ``report.pdf``); return the paths written.

    ``formats`` defaults to the spec's ``report.formats``. ``manifest``: the manifest a run is
    about to seal, shown instead of the one on disk (which still says "running").
    """
    run_dir = Path(run_dir)
    with contextlib.ExitStack() as stack:
        drawings = None
        if formats is not None and "pdf" in formats:  # draw the charts as sections make them
            drawings = stack.enter_context(ChartDrawings(vega_lite_version(), PDF_CHART_WIDTH))
        on_chart = drawings.add if drawings is not None else None
        context = build_report_context(run_dir, manifest, on_chart=on_chart)
        if drawings is not None:
            drawings.close()
        wanted = list(formats) if formats is not None else list(context["formats"])
        unknown = [f for f in wanted if f not in FORMATS]
        if unknown or not wanted:
            raise UsageError(
                f"Unknown report format(s) {unknown or wanted}; choose from {list(FORMATS)}."
            )
        run = RunDir(run_dir)
        written = []
        if "html" in wanted:
            write_bytes_atomic(run.report_html, render_html(context).encode("utf-8"))
            written.append(run.report_html)
        if "pdf" in wanted:
            write_bytes_atomic(run.report_pdf, render_pdf(context, drawings=drawings))
            written.append(run.report_pdf)
    return written


def render_html(context: dict[str, Any], template: str = TEMPLATE) -> str:
    """The interactive, offline HTML report for a context from ``build_report_context`` (or
    another template's context, e.g. the diff report's)."""
    vega = _script(vega_bundle())
    boot = _script((templates_dir() / "report.js").read_text(encoding="utf-8"))
    csp = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_csp_hash(vega)} {_csp_hash(boot)} 'unsafe-eval'",
            "style-src 'unsafe-inline'",
            "img-src data: blob:",
            "font-src data:",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )
    medium = {"mode": "html", "csp": csp, "scripts": [vega, boot], "chart_images": {}}
    return _environment("html").get_template(template).render(report=context, medium=medium)


def render_pdf(
    context: dict[str, Any], template: str = TEMPLATE, drawings: ChartDrawings | None = None
) -> bytes:
    """The print report as PDF bytes: same template, charts as static SVG, no scripts.

    ``drawings``: the context's charts, already given to a :class:`ChartDrawings` as they
    were made (by default they are drawn from ``context["charts"]`` here)."""
    try:
        import weasyprint
    except ImportError:
        raise PrerequisiteError(
            "PDF reports need WeasyPrint, which is not installed.",
            hint="pip install 'auditkit[pdf]' (WeasyPrint also needs the Pango library), "
            "or ask only for the html format.",
        ) from None
    with contextlib.ExitStack() as stack:
        if drawings is None:
            drawings = stack.enter_context(
                ChartDrawings(vega_lite_version(), PDF_CHART_WIDTH, context["charts"])
            )
        urls = {name: f"{CHART_SCHEME}:{drawings.index[name]}" for name in context["charts"]}
        medium = {"mode": "pdf", "csp": "", "scripts": [], "chart_images": urls}
        html = _environment("pdf").get_template(template).render(report=context, medium=medium)
        fetcher = _offline_fetcher(weasyprint, drawings)
        document = weasyprint.HTML(string=html, url_fetcher=fetcher)
        paper = str(context.get("paper", "a4"))
        sheets = [weasyprint.CSS(string=f"@page {{ size: {PAPER_SIZES[paper]} !important; }}")]
        try:
            with _no_cycle_collection():
                pdf: bytes = document.write_pdf(stylesheets=sheets)
        except BaseException:  # WeasyPrint >= 66 stops at a refused image with a BaseException
            _drawn(drawings.failed)  # a chart that could not be drawn is the cause: say so
            raise
        _drawn(drawings.check)  # a chart that was not drawn fails the PDF, never drops out of it
    return pdf


# --- assets --------------------------------------------------------------------------------


def vega_lite_version() -> str | None:
    """The Vega-Lite minor version Altair writes specs for, if vl-convert bundles it."""
    import vl_convert

    match = re.match(r"v?(\d+)\.(\d+)", alt.SCHEMA_VERSION)
    if match is None:
        return None
    version = f"{match.group(1)}.{match.group(2)}"
    return version if version in vl_convert.get_vegalite_versions() else None


BUNDLE_CACHE = Path.home() / ".cache" / "auditkit" / "vega"
"""Where :func:`vega_bundle` keeps the bundles it built (vl-convert takes about 2 s to build one,
in every process that renders a report). A kept bundle is trusted as the installed vl-convert
is: it sits in the user's own cache folder, beside the built models."""


@functools.cache
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one classic script that sets ``window.vegaEmbed``.

    vl-convert builds the same bundle for the same vl-convert version, Vega-Lite version and
    snippet, so it is kept under :data:`BUNDLE_CACHE`, named by the hash of those three, and
    built again only when the file is missing, empty or unreadable (a folder that cannot be
    written only costs the cache)."""
    import vl_convert

    vl_version = vega_lite_version()
    key = f"{getattr(vl_convert, '__version__', '?')}\0{vl_version}\0{_GLOBALS_SNIPPET}"
    path = BUNDLE_CACHE / f"bundle-{hashlib.sha256(key.encode()).hexdigest()[:20]}.js"
    try:
        kept = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        kept = ""
    if kept:
        return kept
    bundle = str(vl_convert.javascript_bundle(_GLOBALS_SNIPPET, vl_version=vl_version))
    with contextlib.suppress(RuntimeFailure):  # the run files' writer: whole or absent
        write_bytes_atomic(path, bundle.encode("utf-8"))
    return bundle


def _script(source: str) -> markupsafe.Markup:
    """Script text safe to place between <script> tags (no early close, no comment tricks)."""
    source = re.sub(r"</(script)", r"<\\/\1", source, flags=re.IGNORECASE)
    if "<!--" in source:
        source = source.replace("<!--", "<\\!--")
    return markupsafe.Markup(source)


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused: WeasyPrint makes millions of objects while it lays out
    a large report, and each full collection walks them all again (about 8% of a 1,000-concept
    audit's PDF, for 70 MB more at its peak; the cycles are collected after)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _drawn(wait: Any) -> Any:
    """``wait()``, a chart drawing that failed told as the run error it is."""
    try:
        return wait()
    except ChartDrawingError as error:
        raise RuntimeFailure(
            f"A chart of the PDF report could not be drawn: {str(error).rstrip('.')}.",
            hint="the HTML report holds the same charts; report this with the run directory.",
        ) from None


def _offline_fetcher(weasyprint: Any, drawings: ChartDrawings | None = None) -> Any:
    """A WeasyPrint URL fetcher that serves inline ``data:`` URLs and the report's own chart
    drawings (:data:`CHART_SCHEME` URLs), and refuses everything else."""
    prefix = f"{CHART_SCHEME}:"

    def drawing(url: str) -> bytes | None:
        if drawings is None or not url.startswith(prefix) or not url[len(prefix) :].isdigit():
            return None
        try:
            return drawings.svg(int(url[len(prefix) :]))
        except ChartDrawingError:
            return None  # refused below; render_pdf tells why

    fetcher_class = getattr(weasyprint, "URLFetcher", None)
    if fetcher_class is not None:  # WeasyPrint >= 66
        from weasyprint.urls import URLFetcherResponse

        class Fetcher(fetcher_class):  # type: ignore[misc, valid-type]
            def fetch(self, url: str, headers: Any = None) -> Any:
                svg = drawing(url)
                if svg is not None:
                    return URLFetcherResponse(url, svg, {"Content-Type": "image/svg+xml"})
                return super().fetch(url, headers)

        return Fetcher(allowed_protocols={"data"}, fail_on_errors=True)

    def fetch(url: str, *args: Any, **kwargs: Any) -> Any:
        svg = drawing(url)
        if svg is not None:
            return {"string": svg, "mime_type": "image/svg+xml", "redirected_url": url}
        if not url.startswith("data:"):
            raise ValueError(f"the report may not load {url!r}: it is built offline")
        return weasyprint.default_url_fetcher(url, *args, **kwargs)

    return fetch


# --- Jinja2 ----------------------------------------------------------------------------------


PRINT_LINE_LIMIT = 500
"""Longest line of text the PDF shows in full: WeasyPrint's layout of a line that may wrap
anywhere grows with the square of its length (a 10,000-character term took minutes); 500
characters hold any real term or prompt."""


def _print_text(value: Any) -> Any:
    """A value shown in the PDF: each line of a string beyond :data:`PRINT_LINE_LIMIT`
    characters cut there, saying how much is left out (markup and ``data:`` URLs unchanged)."""
    if (
        not isinstance(value, str)
        or isinstance(value, markupsafe.Markup)
        or len(value) <= PRINT_LINE_LIMIT
        or value.startswith("data:")
    ):
        return value
    return "\n".join(
        line
        if len(line) <= PRINT_LINE_LIMIT
        else f"{line[:PRINT_LINE_LIMIT]}… [{len(line) - PRINT_LINE_LIMIT:,} more characters]"
        for line in value.split("\n")
    )


_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def _isolated(value: Any) -> Any:
    """A string holding bidirectional controls, wrapped in FIRST STRONG ISOLATE ... POP
    DIRECTIONAL ISOLATE: a right-to-left override it leaves open ends with it instead of
    reordering the rest of the sentence around it (other values unchanged)."""
    if (
        isinstance(value, str)
        and not isinstance(value, markupsafe.Markup)
        and _BIDI_CONTROLS.search(value)
    ):
        return f"\u2068{value}\u2069"
    return value


def _shown_in_pdf(value: Any) -> Any:
    return _isolated(_print_text(value))


@functools.cache
def _environment(mode: str = "html") -> jinja2.Environment:
    """The templates' environment: every value shown with bidirectional controls isolated
    (:func:`_isolated`); ``mode`` 'pdf' also shortens very long lines (:func:`_print_text`)."""
    env = jinja2.Environment(
        finalize=_shown_in_pdf if mode == "pdf" else _isolated,
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = format_number
    env.filters["signed"] = functools.partial(format_number, signed=True)
    env.filters["filesize"] = format_bytes
    return env


def format_number(value: Any, digits: int = 3, signed: bool = False) -> str:
    """A number for a table cell: fixed digits, a true minus sign, an em dash when missing."""
    if value is None or isinstance(value, bool):
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return "—"
    text = f"{number:+.{digits}f}" if signed else f"{number:.{digits}f}"
    if text.lstrip("+-").strip("0.") == "":
        text = f"{0:.{digits}f}"
    return text.replace("-", "−")


def format_bytes(value: Any) -> str:
    """A byte count in decimal units (kB, MB, GB), exact bytes when small."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return "—"
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.2f} {unit}"
        size /= 1000
    return "—"
