"""Issue 15's benchmarks in one command: B1-B3 (and B4 where a CUDA device is present), one
table of every bar, one JSON file.

    python benchmarks/run.py                           # the issue's sizes; runs/benchmarks.json
    python benchmarks/run.py --quick --out quick.json  # the wiring: a few minutes
    python benchmarks/run.py --only b1 --out b1.json   # one part: b1, b2 (B2 and B3), b4

Each part runs in a process of its own (its own script, also runnable alone), so that one
part's memory and warm caches do not flatter the next:

- **B1** `benchmarks/extract_overhead.py`: extraction against the bare denoising loop and the
  naive loop, on toyworld and the tiny pipeline of every family (CPU), each at its own 32 px,
  then the tiny pipelines again at 64 px;
- **B2, B3** `benchmarks/analysis_scale.py`: the analysis of a 1,000-concept SD 1.5-shaped
  store (wall time, peak RSS), then its HTML and PDF report;
- **B4** `benchmarks/gpu_extract.py`: SD 1.5-, SDXL- and FLUX-shaped denoisers on the GPU
  (skipped, and recorded as skipped, without a CUDA device).

The JSON holds the machine (CPU model, cores, torch), the commit, every part's own records and
the verdict of each bar. ``--quick`` shrinks every part, so its verdicts are not the issue's.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

B1_FLOOR = 0.9  # auditkit's throughput against the bare loop, at least
B1_NAIVE = 3.0  # auditkit's throughput against the naive loop, at least
B2_WALL_S = 120.0
B2_RSS_BYTES = 4e9
B3_HTML_S, B3_HTML_MB, B3_PDF_S = 10.0, 10.0, 60.0


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    import torch

    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "commit": commit or None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def part(script: str, args: list[str], out: Path) -> tuple[Any, float]:
    """Run one part's script with ``--out``; its JSON and the wall seconds."""
    started = time.perf_counter()
    command = [sys.executable, str(HERE / script), *args, "--out", str(out)]
    print(f"== {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{script} failed (exit {done.returncode}); nothing more was run")
    return json.loads(out.read_text()), time.perf_counter() - started


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per bar: what it is, the measured value, the bar, and whether it holds."""
    rows: list[dict[str, Any]] = []

    def bar(name: str, value: float | None, limit: float, at_least: bool) -> None:
        holds = None if value is None else (value >= limit if at_least else value < limit)
        sign = ">=" if at_least else "<"
        rows.append({"bar": name, "value": value, "limit": f"{sign} {limit:g}", "holds": holds})

    for row in results.get("B1", []):
        name = f"B1 {row['model']}" + (f" {row['resolution']} px" if "resolution" in row else "")
        bar(f"{name}: auditkit / bare", row["auditkit_over_bare"], B1_FLOOR, True)
        bar(f"{name}: naive / auditkit", row["naive_over_auditkit"], B1_NAIVE, True)
    b2 = results.get("B2")
    if b2:
        bar("B2 analysis wall s", b2["b2_wall_s"], B2_WALL_S, False)
        bar("B2 peak RSS GB", round(b2["peak_rss_bytes"] / 1e9, 2), B2_RSS_BYTES / 1e9, False)
    for fmt, wall in (("html", B3_HTML_S), ("pdf", B3_PDF_S)):
        b3 = results.get(f"B3 {fmt}")
        if b3 is None:
            continue
        bar(f"B3 {fmt.upper()} s", b3.get("wall_s"), wall, False)
        if fmt == "html":
            bar("B3 HTML MB", b3.get("size_mb"), B3_HTML_MB, False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmarks.json")
    parser.add_argument("--only", default="b1,b2,b4", help="parts to run: b1, b2 (B2 and B3), b4")
    parser.add_argument("--quick", action="store_true", help="shrunk parts: a wiring check")
    parser.add_argument("--repeats", type=int, default=5, help="B1: timed runs per path")
    parser.add_argument("--work", type=Path, default=None, help="B2: where its store is kept")
    args = parser.parse_args()
    wanted = {p.strip().lower() for p in args.only.split(",") if p.strip()}
    unknown = wanted - {"b1", "b2", "b3", "b4"}
    if unknown:
        parser.error(f"--only: unknown part(s) {sorted(unknown)}; choose from b1, b2, b4")
    info = machine()
    results: dict[str, Any] = {"machine": info, "quick": args.quick, "seconds": {}}
    scratch = Path(tempfile.mkdtemp(prefix="auditkit-benchmarks-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)  # no scratch left in /tmp
    if "b1" in wanted:
        # every model at its own size (toyworld and the tiny pipelines are built for 32 px),
        # then the tiny pipelines again at 64 px, where their U-Nets are compute-bound on a CPU
        from extract_overhead import KINDS  # this folder is the script's first path entry

        tiny = ",".join(kind for kind in KINDS if kind != "toyworld")
        runs = [["--resolution", "32"], ["--resolution", "64", "--kinds", tiny]]
        repeats = ["--repeats", str(args.repeats)]
        if args.quick:
            runs, repeats = [["--kinds", "toyworld,sd", "--units", "32"]], ["--repeats", "1"]
        results["B1"], results["seconds"]["B1"] = [], 0.0
        for k, b1_args in enumerate(runs):
            rows, seconds = part("extract_overhead.py", b1_args + repeats, scratch / f"b1-{k}.json")
            results["B1"] += rows
            results["seconds"]["B1"] += seconds
    if wanted & {"b2", "b3"}:
        b2_args = ["--concepts", "50", "--resamples", "200"] if args.quick else []
        work = args.work or (ROOT / "runs" / "bench-scale-quick" if args.quick else None)
        if work is not None:  # a quick store never replaces the full-size one
            b2_args += ["--work", str(work)]
        scale, results["seconds"]["B2+B3"] = part("analysis_scale.py", b2_args, scratch / "b2.json")
        results["B2"] = scale.pop("B2 analysis")
        results |= {k: v for k, v in scale.items() if k.startswith("B3")}
        results["B2 settings"] = {k: scale[k] for k in ("settings", "units")}
    if "b4" in wanted:
        if info["cuda"]:
            b4_args = ["--smoke"] if args.quick else []
            results["B4"], results["seconds"]["B4"] = part(
                "gpu_extract.py", b4_args, scratch / "b4.json"
            )
        else:
            results["B4"] = "skipped: no CUDA device on this machine"
    results["verdicts"] = verdicts(results)
    print(f"\n{'bar':44} {'measured':>10} {'limit':>8}  holds")
    for row in results["verdicts"]:
        held = {True: "yes", False: "NO", None: "-"}[row["holds"]]
        print(f"{row['bar']:44} {row['value']!s:>10} {row['limit']:>8}  {held}")
    if isinstance(results.get("B4"), str):
        print(f"B4: {results['B4']}")
    if args.quick:
        print("(--quick: shrunk parts; these verdicts are not the issue's)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
