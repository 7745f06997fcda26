"""Checks that several tests make of whole runs: a free loopback port (found by a child
process, since the test process may not open sockets) and "the same answer as the local run"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    probe = (
        "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return int(done.stdout)


def assert_same_results(run: Path, local: Path) -> int:
    """Every results and captions table, summary.json and gates.json of ``run`` are byte-equal
    to ``local``'s; returns how many tables were compared."""
    compared = 0
    for folder in ("results", "captions"):
        for path in sorted((local / folder).glob("*.parquet")):
            twin = run / folder / path.name
            assert twin.read_bytes() == path.read_bytes(), f"{folder}/{path.name} differs"
            compared += 1
    for name in ("summary.json", "gates.json"):
        ours, theirs = run / "results" / name, local / "results" / name
        assert ours.read_bytes() == theirs.read_bytes(), f"results/{name} differs"
    return compared
