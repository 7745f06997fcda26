"""Open a report in real headless Chromium with the network cut, for the browser tests."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


CALL_RECORDER = """
window.__auditkitCalls = [];
for (const name of ["alert", "confirm", "prompt", "print", "open"]) {
  window[name] = (...args) => { window.__auditkitCalls.push(name + "(" + args.join(",") + ")"); };
}
"""
"""Run before any page script: a dialog or window a page opens is recorded, not shown, so an
injected ``alert(1)`` that ran is counted (``PageVisit.calls``)."""


INJECTED = """() => ({
  elements: document.querySelectorAll(
    'img[src="x"], iframe, [onload], [onerror], a[href^="javascript"]').length,
  scripts: [...document.scripts].filter(
    s => ['', 'module', 'text/javascript'].includes(s.type) && s.text.includes('alert(1)')).length,
  data: [...document.scripts].filter(s => s.type === 'application/json').length,
})"""
"""Counts :meth:`PageVisit.injected` returns."""


@dataclass
class PageVisit:
    """What happened while a report page was open."""

    page: Any
    chart_states: list[list[Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def calls(self) -> list[str]:
        """Every alert, confirm, prompt, print or window.open the page's scripts made."""
        return list(self.page.evaluate("() => window.__auditkitCalls"))

    def injected(self) -> dict[str, int]:
        """What a hostile payload (``<img onerror>``, ``<script>alert(1)``, ``javascript:``
        links) would have made of the page had it been markup: ``elements`` built from it,
        ``scripts`` that would run it, and the ``data`` blocks (JSON scripts) on the page."""
        return dict(self.page.evaluate(INJECTED))


@contextmanager
def open_report(path: Path, *, width: int = 1280) -> Iterator[PageVisit]:
    """Open ``path`` offline (every non-file request aborted), wait until charts settle."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"needs Chromium at {CHROMIUM} (bash .ci/setup --browser installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": width, "height": 900})
            page = context.new_page()
            visit = PageVisit(page)
            context.route("**/*", _refuser(visit))
            context.add_init_script(CALL_RECORDER)
            page.on("console", lambda m: m.type == "error" and visit.problems.append(m.text))
            page.on("pageerror", lambda e: visit.problems.append(str(e)))
            page.on("dialog", _dialog_recorder(visit))
            page.goto(path.as_uri())
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-chart]')]"
                ".every(n => n.hasAttribute('data-chart-state'))",
                timeout=30_000,
            )
            visit.chart_states = page.eval_on_selector_all(
                "[data-chart]",
                "nodes => nodes.map(n => [n.id, n.getAttribute('data-chart-state'),"
                " !!n.querySelector('svg, canvas')])",
            )
            yield visit
        finally:
            browser.close()


def _refuser(visit: PageVisit) -> Callable[[Any], None]:
    def refuse(route: Any) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            visit.blocked.append(route.request.url)
            route.abort()

    return refuse


def _dialog_recorder(visit: PageVisit) -> Callable[[Any], None]:
    def record(dialog: Any) -> None:
        visit.dialogs.append(dialog.message)
        dialog.dismiss()

    return record
