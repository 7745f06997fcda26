"""The Ray executor's overhead, as ratios measured in one run on one machine.

Runs the same audit (by default the toyworld default audit, every stage) into fresh run
directories three ways and times each whole ``auditkit run`` command:

* local:      the local executor (this process, torch on every core);
* ray x1:     one Ray worker holding every core of a loopback Ray cluster this script starts;
* ray x2:     two Ray workers sharing those cores (half each).

On one machine more workers cannot add cores, so the ratios measure what the Ray path costs
(starting actors, shipping batches and results, one driver writing), not a speed-up; on a
cluster the rate per worker (printed) is what adds up. The result tables of every run are
compared with the local run's.

Usage: python benchmarks/ray_overhead.py [--spec audits/toyworld.yaml] [--cores N]
Prints seconds per run, extraction units per second per worker, and ray/local ratios.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spec_with(spec: Path, work: Path, name: str, execution: str) -> Path:
    """A copy of ``spec`` with an ``execution:`` section appended (for a spec whose model and
    captioner are builtins, which need no path relative to the spec file)."""
    out = work / f"{name}.yaml"
    out.write_text(spec.read_text() + "\n" + execution)
    return out


def _run(spec: Path, out: Path, env: dict[str, str], *extra: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "auditkit"), "run", str(spec), "--out", str(out), "--no-progress", *extra],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1):  # 1: the audit's gates failed, a normal outcome
        raise SystemExit(f"auditkit run failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds


def _same_tables(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in (a / "results").glob("*.parquet"))
    return bool(names) and all(
        (a / "results" / n).read_bytes() == (b / "results" / n).read_bytes() for n in names
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "audits" / "toyworld.yaml")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="auditkit-ray-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # no scratch left in /tmp
    port = _free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    start = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
             f"--port={port}", f"--num-cpus={args.cores}", "--num-gpus=0",
             "--include-dashboard=false", "--disable-usage-stats"]  # fmt: skip
    subprocess.run(start, env=env, check=True, capture_output=True)
    address = f"127.0.0.1:{port}"
    rows = []
    try:
        half = max(1, args.cores // 2)
        runs = {
            "local": (args.spec, ()),
            "ray x1": (
                _spec_with(args.spec, work, "x1", f"execution: {{cpus_per_worker: {args.cores}}}"),
                ("--ray-address", address, "--workers", "1"),
            ),
            "ray x2": (
                _spec_with(args.spec, work, "x2", f"execution: {{cpus_per_worker: {half}}}"),
                ("--ray-address", address, "--workers", "2"),
            ),
        }
        for name, (spec, extra) in runs.items():
            out = work / name.replace(" ", "-")
            seconds = _run(spec, out, env, *extra)
            manifest = json.loads((out / "manifest.json").read_text())
            extract = manifest["stages"]["extract"]
            rate = extract["units_run"] / max(extract["seconds"], 1e-9)
            rows.append((name, seconds, extract["seconds"], rate, out))
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True)
    local = rows[0]
    print(f"spec: {args.spec}  cores: {args.cores}  ({time.strftime('%Y-%m-%d')})")
    print(f"{'run':8} {'whole run s':>12} {'extract s':>10} {'units/s':>8} {'/ local':>8}  tables")
    for name, seconds, extract_s, rate, out in rows:
        same = "equal" if _same_tables(local[4], out) else "DIFFER"
        print(f"{name:8} {seconds:12.1f} {extract_s:10.1f} {rate:8.1f} "
              f"{seconds / local[1]:8.3f}  {same}")  # fmt: skip
    print(f"overhead at one worker: {100 * (rows[1][1] / local[1] - 1):+.1f}% of the whole run")


if __name__ == "__main__":
    main()
