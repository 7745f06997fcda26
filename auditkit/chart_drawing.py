"""The PDF's charts drawn as SVG by vl-convert, in a child process of their own.

vl-convert holds the GIL while it draws, so a thread would not overlap it with the report's
own work; a child process does. A 1,000-concept audit's 82 charts take about 9 s to draw,
which the child does on the second core while the report process builds the rest of the
report and WeasyPrint parses the page and computes its styles: each chart goes to the child as
its section makes it, and WeasyPrint asks for the first drawing only when it lays it out.

This module is what the child runs (``python -m auditkit.chart_drawing``), so it imports
nothing heavy: only vl-convert and :mod:`auditkit.inert`. Protocol: the parent writes JSON
lines to the child's stdin, first the settings (``{"vl_version": ..., "width": ...}``), then
one chart spec a line, and closes it after the last; the child answers each spec in order with
one record on stdout: a status byte (0 drawn, 1 failed), an 8-byte big-endian length and that
many bytes (the SVG, or the error text in UTF-8). A failed chart ends the answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from auditkit.inert import xml_strings

CHART_SCHEME = "auditkit-chart"
"""URL scheme of a chart drawing in the PDF's HTML (``auditkit-chart:3``): served by the
report's own fetcher from :class:`ChartDrawings`, never fetched from anywhere."""

PRINT_CHART_TEXT_LIMIT = 100
"""Longest string a PDF chart is drawn from: vl-convert measures text a character at a time (a
chart of eight 10,000-character labels took 30 s to draw), and an axis shows at most 180 px of
a label (about 30 characters) anyway."""

_HEADER = struct.Struct(">BQ")


def chart_text(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with every string of its data beyond :data:`PRINT_CHART_TEXT_LIMIT` characters
    cut there: the same string the same way wherever the spec holds it whole (a category in the
    data and in a sort order), and two different strings never alike. Keys, expressions and
    other text stay as they are."""
    long: list[str] = []

    def visit(value: Any, data: bool) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                visit(item, data or key in ("values", "datasets"))
        elif isinstance(value, list):
            for item in value:
                visit(item, data)
        elif data and isinstance(value, str) and len(value) > PRINT_CHART_TEXT_LIMIT:
            long.append(value)

    visit(spec, False)
    if not long:
        return spec
    short: dict[str, str] = {}
    for text in dict.fromkeys(long):
        shown, count = f"{text[: PRINT_CHART_TEXT_LIMIT - 1]}…", 1
        while shown in short.values():
            tag = f"…{count}"
            shown, count = text[: PRINT_CHART_TEXT_LIMIT - len(tag)] + tag, count + 1
        short[text] = shown

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return short.get(value, value)
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    cut: dict[str, Any] = walk(spec)
    return cut


def draw_svg(spec: dict[str, Any], vl_version: str | None, width: int) -> bytes:
    """One chart drawn as SVG for the PDF (a chart sized to its container gets ``width`` px)."""
    import vl_convert

    # vl-convert aborts the process on a character SVG forbids, and slows with long text
    spec = chart_text(xml_strings(spec))
    if spec.get("width") == "container":
        spec["width"] = width
    svg: str = vl_convert.vegalite_to_svg(spec, vl_version=vl_version)
    return svg.encode("utf-8")


class ChartDrawingError(Exception):
    """A chart vl-convert could not draw (its index and the error, or how the child ended)."""


class ChartDrawings:
    """Draws charts in a child process as they are added (:meth:`add`), from the moment the
    first one is; :meth:`svg` waits for one drawing, :meth:`check` for all of them. Use it as
    a context manager: leaving it ends the child.

    The report adds each chart as its section makes it, so the child draws while the rest of
    the report is still being built."""

    def __init__(
        self,
        vl_version: str | None,
        width: int,
        specs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.index: dict[str, int] = {}
        """Each chart's name -> the index of its drawing (its latest, if added twice)."""
        self._count = 0
        self._closed = False
        self._drawings: list[bytes] = []
        self._error: str | None = None
        self._done = threading.Condition()
        self._finished = False
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        # stderr to a file: a pipe nobody reads could fill and stall the child
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self._child = subprocess.Popen(
            [sys.executable, "-m", "auditkit.chart_drawing"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        self._queue.put(_line({"vl_version": vl_version, "width": width}))
        self._writer = threading.Thread(target=self._write, daemon=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._writer.start()
        self._reader.start()
        if specs is not None:
            for name, spec in specs.items():
                self.add(name, spec)
            self.close()

    def __enter__(self) -> ChartDrawings:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self._child.poll() is None:
            self._child.kill()
        self._child.wait()
        self._reader.join()
        self._writer.join()
        for stream in (self._child.stdin, self._child.stdout, self._stderr):
            if stream is not None:
                with contextlib.suppress(OSError):  # a pipe to a child that ended early
                    stream.close()

    def add(self, name: str, spec: dict[str, Any]) -> None:
        """Draw ``spec`` as chart ``name`` (the child starts on it at once)."""
        if self._closed:
            raise ChartDrawingError(f"chart {name!r} came after the last one")
        with self._done:
            self.index[name] = self._count
            self._count += 1
        self._queue.put(_line(spec))

    def close(self) -> None:
        """No more charts: the child ends once it has drawn those it has."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)

    def _write(self) -> None:
        stdin = self._child.stdin
        assert stdin is not None
        try:
            while (line := self._queue.get()) is not None:
                stdin.write(line)
                stdin.flush()
            stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the child ended early: the reader reports how

    def _read(self) -> None:
        stdout = self._child.stdout
        assert stdout is not None
        error: str | None = None
        try:
            while True:
                header = _read_exactly(stdout, _HEADER.size)
                if header is None:  # the child is done: after the last chart, or not
                    self._child.wait()
                    if self._child.returncode or len(self._drawings) < self._count:
                        self._stderr.seek(0)
                        tail = self._stderr.read().decode("utf-8", "replace").strip()
                        error = (
                            "the chart-drawing process ended (exit code "
                            f"{self._child.returncode}) after {len(self._drawings)} of "
                            f"{self._count} charts"
                            + (f": {' '.join(tail.splitlines()[-3:])}" if tail else "")
                        )
                    break
                status, length = _HEADER.unpack(header)
                body = _read_exactly(stdout, length) or b""
                if status:
                    error = f"chart {len(self._drawings)}: {body.decode('utf-8', 'replace')}"
                    break
                with self._done:
                    self._drawings.append(body)
                    self._done.notify_all()
        finally:
            with self._done:
                self._error = error
                self._finished = True
                self._done.notify_all()

    def svg(self, index: int) -> bytes:
        """Drawing ``index``, once the child has made it."""
        if not 0 <= index < self._count:
            raise ChartDrawingError(f"there is no chart {index} (the report has {self._count})")
        with self._done:
            self._done.wait_for(lambda: len(self._drawings) > index or self._finished)
            if len(self._drawings) > index:
                return self._drawings[index]
            raise ChartDrawingError(self._error or f"chart {index} was not drawn")

    def check(self) -> None:
        """Wait for every drawing added; raise the error of a chart that could not be drawn."""
        if self._count:
            self.svg(self._count - 1)

    def failed(self) -> None:
        """Raise the error of a chart that could not be drawn, if one already failed (without
        waiting for the rest)."""
        with self._done:
            if self._finished and self._error is not None:
                raise ChartDrawingError(self._error)


def _line(value: Any) -> bytes:
    """One line of the child's input: JSON holds no raw line break."""
    return json.dumps(value).encode("utf-8") + b"\n"


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _serve() -> None:
    """The child: read the settings line, then answer every spec line on stdout."""
    lines = iter(sys.stdin.buffer)
    settings = json.loads(next(lines))
    out = sys.stdout.buffer
    for line in lines:
        try:
            svg = draw_svg(json.loads(line), settings["vl_version"], settings["width"])
        except Exception as error:  # told to the parent, which fails the PDF with it
            # vl-convert's message, without the JavaScript stack under it
            lines_of = [text.strip() for text in str(error).splitlines() if text.strip()]
            told = " ".join(text for text in lines_of if not text.startswith("at "))
            text = f"{type(error).__name__}: {told}".encode()
            out.write(_HEADER.pack(1, len(text)) + text)
            out.flush()
            return
        out.write(_HEADER.pack(0, len(svg)) + svg)
        out.flush()


if __name__ == "__main__":
    _serve()
