"""The long crash loop of issue 16 (RELIABILITY.md): SIGKILL an audit at every kill point of
``tests/test_reliability.py`` (and more), ``--repeat`` times each, resume it, and compare.

For every point: a fresh run directory, ``auditkit run`` in a subprocess killed with SIGKILL
halfway through one file write (``AUDITKIT_CRASH_AT``), then the same command again in a
subprocess, to completion. The resumed run must equal an uninterrupted run of the same spec:
every table byte for byte, every planned unit stored once, no temporary file, ``auditkit
verify`` clean. Prints one line per kill and a summary; writes JSON with ``--json``.

    python benchmarks/crash_loop.py [--repeat 2] [--json crash_loop.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_reliability import KILL_POINTS, check_resumed, write_spec  # noqa: E402

EXTRA_POINTS = [
    "spec.yaml",
    "activations/shard-*@1",
    "activations/shard-*@5",
    "activations/index-parts/*@1",
    "activations/model.json",
    "captions/units/*/chunk-*@2",
    "captions/readings.parquet",
    "captions/causal.parquet",
    "results/defaults.parquet",
    "results/gates.json",
    "results/junit.xml",
    "manifest.json@3",
]


def auditkit(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "auditkit", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AUDITKIT_CRASH_AT", None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = write_spec(folder)
        reference = folder / "reference"
        done = auditkit(["run", str(spec), "--out", str(reference), "--no-progress"], env)
        assert done.returncode == 1, done.stderr  # the mini audit's gate fails by design
        points = KILL_POINTS + EXTRA_POINTS
        for repeat in range(args.repeat):
            for n, point in enumerate(points):
                out = folder / f"kill-{repeat}-{n}"
                started = time.perf_counter()
                killed = auditkit(
                    ["run", str(spec), "--out", str(out), "--no-progress"],
                    {**env, "AUDITKIT_CRASH_AT": point},
                )
                was_killed = killed.returncode == -signal.SIGKILL
                resumed = auditkit(["run", str(spec), "--out", str(out), "--no-progress"], env)
                try:
                    check_resumed(out, reference)
                    equal, problem = True, ""
                except AssertionError as exc:
                    equal, problem = False, str(exc)[:300]
                row = {
                    "point": point,
                    "repeat": repeat,
                    "killed": was_killed,
                    "resumed_exit": resumed.returncode,
                    "equal": equal and resumed.returncode == 1,
                    "problem": problem,
                    "seconds": round(time.perf_counter() - started, 1),
                }
                rows.append(row)
                print(
                    f"{point:40s} killed={was_killed!s:5s} rerun exit {resumed.returncode} "
                    f"equal={row['equal']!s:5s} {row['seconds']:6.1f}s {problem}",
                    flush=True,
                )
    kills = sum(r["killed"] for r in rows)
    equal = sum(r["equal"] for r in rows)
    print(f"\n{len(rows)} runs, {kills} killed by SIGKILL at their point, {equal} resumed equal")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if equal == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
