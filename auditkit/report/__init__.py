"""Stage 6: the report (self-contained offline HTML, optional PDF) from a run directory."""

from auditkit.report.context import build_report_context
from auditkit.report.render import render_html, render_pdf, render_report, templates_dir

__all__ = ["build_report_context", "render_html", "render_pdf", "render_report", "templates_dir"]
