"""B2 and B3 (issue 15): the analysis and the report of an audit at real size.

A synthetic activation store shaped like Stable Diffusion 1.5's h-space at 512 px (the mid
block's 1280 x 8 x 8 = 81,920 values per vector) is written with the layout an SD 1.5 audit
stores by default (float16; the mean over the 50 kept steps and h at steps 0 and 49): 1,000
concepts x 16 seeds, 20 axes of two groups with 2 templates and 2 terms per group, so
(1,000 + 160) prompts x 16 seeds = 18,560 units, 8.9 GB. The latents have planted structure
(each axis a direction, each concept a planted lean along some of them, seed noise on top), so
the analysis has something to find.

Then, each in a fresh process on the same store:

- **B2**: every analysis of the spec (lean with robustness and its min-effect test,
  descriptors, similarity and structure, lean by step), 1,000-resample hierarchical bootstrap
  intervals, and both null models' p-values (permuted labels and null axes), timed apart; wall
  time and peak RSS of the process;
- **B3**: ``auditkit report RUN --format html``, then ``--format pdf``: wall time and size.

    python benchmarks/analysis_scale.py                 # the issue's size; --work keeps the store
    python benchmarks/analysis_scale.py --concepts 50   # a quick check of the wiring

The store is written once per --work folder and reused while its settings match.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the SD 1.5 config the storage tests check

SPEC = """spec_version: 1
name: scale-b2
description: synthetic SD 1.5-shaped store (benchmarks/analysis_scale.py)
model: {{id: "{model}", device: cpu, steps: 50, guidance_scale: 7.5, resolution: 512}}
probe: {{hook: unet.mid_block, aggregation: mean}}
seeds: {seeds}
batch_size: 16
centring: {{reference: set_mean}}
axes:
{axes}
concepts:
  - name: concepts
    templates: ["a photo of a {{term}}"]
    terms: [{terms}]
analyses: [lean, defaults, descriptors, similarity, lean_by_step]
statistics: {{bootstrap_resamples: {resamples}}}
report: {{title: "Synthetic SD 1.5-shaped audit at scale", formats: [html, pdf]}}
"""

AXIS = """  - name: axis{k:02d}
    templates: ["a photo of a {{term}}", "a picture of a {{term}}"]
    groups:
      a{k:02d}: [a{k:02d} one, a{k:02d} two]
      b{k:02d}: [b{k:02d} one, b{k:02d} two]
    defaults: false
"""


def spec_text(args: argparse.Namespace, model: Path) -> str:
    axes = "".join(AXIS.format(k=k) for k in range(args.axes))
    terms = ", ".join(f"concept{i:04d}" for i in range(args.concepts))
    return SPEC.format(
        model=model, seeds=args.seeds, axes=axes, terms=terms, resamples=args.resamples
    )


def make_run(args: argparse.Namespace, work: Path) -> Path:
    """The model's config folder, the resolved spec and plan, a manifest as after extraction,
    and the synthetic store; reused when ``settings.json`` matches."""
    from test_adapters import KL_VAE, SD15_UNET, config_folder

    from auditkit.layout import resolve_spec
    from auditkit.plan import plan_audit
    from auditkit.provenance import new_manifest, utc_now
    from auditkit.rundir import RunDir, write_bytes_atomic
    from auditkit.spec import dump_spec, parse_spec, spec_hash

    run_dir = work / "run"
    settings = {k: getattr(args, k) for k in ("concepts", "seeds", "axes", "resamples")}
    settings["axis_length"] = AXIS_LENGTH  # a store written with other planted axes is redone
    marker = work / "settings.json"
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return run_dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = config_folder(
        work / "sd15-configs", "StableDiffusionPipeline", unet=SD15_UNET, vae=KL_VAE
    )
    spec = resolve_spec(parse_spec(spec_text(args, model)), work / "cache")
    plan = plan_audit(spec)
    run = RunDir(run_dir)
    run_dir.mkdir()
    write_bytes_atomic(run.spec, dump_spec(spec).encode())
    plan.write(run.plan)
    started = time.perf_counter()
    written = write_store(spec, plan, run.activations, args)
    s_hash = spec_hash(spec)
    manifest = new_manifest(
        run_id=f"scale-{s_hash[:8]}", spec_hash=s_hash, plan_hash=plan.plan_hash,
        seeds=spec.seed_list,
    ).evolve(
        model={"id": str(model), "synthetic": "benchmarks/analysis_scale.py"},
        device="cpu", dtype="float16", extraction_fingerprint=plan.extraction_fingerprint,
        status="complete", finished_utc=utc_now(),
    )  # fmt: skip
    manifest = manifest.with_stage(
        "extract", {"units_total": len(plan.units), "units_run": len(plan.units),
                    "seconds": round(time.perf_counter() - started, 1), "synthetic": True},
    )  # fmt: skip
    run.write_manifest(manifest)
    marker.write_text(json.dumps(settings))
    print(f"store: {len(plan.units)} units, {written / 1e9:.2f} GB, "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    return run_dir


AXIS_LENGTH = 5000.0
"""Norm of each planted axis direction in h (the latents' values are of order 4)."""


def write_store(spec, plan, root: Path, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    """Write every unit of ``plan``: the stored mean and steps 0 and 49, float16, [1280, 8, 8].
    Latent of prompt p at seed n: base + p's planted part + seed noise shared by every prompt
    of seed n + the unit's own noise; the stored steps add their own noise to it."""
    import torch

    from auditkit.extract.store import ActivationStore
    from auditkit.plan import prompt_id
    from auditkit.spec.vocabulary import fill

    shape = (1280, 8, 8)
    D = 1280 * 64
    g = torch.Generator().manual_seed(0)
    base = torch.randn(D, generator=g) * 4.0
    # each axis's direction is far longer than a group prompt's own noise (norm about 3.5 x
    # sqrt(D) = 1,000), so the axes are well defined and a concept's planted lean (-0.5 to
    # 0.5 of it) reads as a lean score of about -1 to 1: the rule has large leans to find
    directions = torch.nn.functional.normalize(torch.randn(args.axes, D, generator=g), dim=1)
    directions = directions * AXIS_LENGTH
    seeds = spec.seed_list
    shared = torch.randn(len(seeds), D, generator=g) * 2.0
    planted: dict[str, torch.Tensor] = {}
    for k, axis in enumerate(spec.axes):
        for side, (group, terms) in zip((1.0, -1.0), axis.groups.items(), strict=True):
            del group
            for t, template in enumerate(axis.templates):
                for term in terms:
                    own = torch.randn(D, generator=g) * (3.0 + t)
                    planted[prompt_id(fill(template, term))] = 0.5 * side * directions[k] + own
    for cset in spec.concepts:
        for i, term in enumerate(cset.terms):
            lean = torch.zeros(args.axes)
            lean[i % args.axes] = ((i * 7919) % 11 - 5) / 10.0  # -0.5 .. 0.5 on one axis
            own = torch.randn(D, generator=g) * 5.0
            for template in cset.templates:
                planted[prompt_id(fill(template, term))] = lean @ directions + own
    store = ActivationStore(root)
    kept = plan_steps(spec)
    written = 0
    batch: list = []

    def flush() -> None:
        nonlocal written
        tensors, means, rows = {}, {}, []
        for unit, h in batch:
            steps = h + torch.randn(2, D, generator=g) * 1.5
            tensors[unit.unit_id] = steps.reshape(2, *shape).half()
            means[unit.unit_id] = h.reshape(shape).half()
            rows.append({
                "unit_id": unit.unit_id, "prompt_id": unit.prompt_id, "seed": int(unit.seed),
                "shape": json.dumps([2, *shape]), "steps": json.dumps(kept["stored"]),
                "timesteps": json.dumps(kept["timesteps"]), "dtype": "float16",
                "mean_steps": json.dumps(kept["mean"]),
            })  # fmt: skip
        store.write_batch(tensors, rows, means)
        written += sum(t.numel() * 2 for t in tensors.values()) + len(means) * D * 2
        batch.clear()

    s_row = {seed: n for n, seed in enumerate(seeds)}
    for unit in plan.units:
        h = base + planted[unit.prompt_id] + shared[s_row[unit.seed]]
        batch.append((unit, h + torch.randn(D, generator=g) * 2.0))
        if len(batch) == 64:
            flush()
    if batch:
        flush()
    store.compact()
    return written


def plan_steps(spec) -> dict[str, list]:  # type: ignore[no-untyped-def]
    """The stored steps (the spec's per_step_h), every kept step (the mean's) and made-up
    timesteps for the stored ones."""
    steps = spec.model.steps
    stored = list(spec.probe.per_step_h)
    return {
        "stored": stored,
        "mean": list(range(steps)),
        "timesteps": [float(999 - 999 * s / steps) for s in stored],
    }


def child_analyze(run_dir: Path) -> dict[str, object]:
    """B2 in this process: the store read into latents (streamed at this size), the analysis
    as ``auditkit run`` calls it (every table, its intervals, summary and gates), then the two
    null models' p-values of the same lean table; wall times and the peak RSS."""
    started = time.perf_counter()
    import numpy as np

    from auditkit.analyses.checks import check_spec
    from auditkit.analyses.stage import analyze_run
    from auditkit.analyze.latents import load_latents
    from auditkit.analyze.measures import build_layout
    from auditkit.analyze.significance import label_null_p_values, vocabulary_null_p_values
    from auditkit.extract.store import ActivationStore
    from auditkit.plan import AuditPlan
    from auditkit.rundir import RunDir
    from auditkit.spec import load_run_spec

    run = RunDir(run_dir)
    spec = check_spec(load_run_spec(run_dir))
    plan = AuditPlan.from_json(json.loads(run.plan.read_text()))
    imported = time.perf_counter()
    store = ActivationStore(run.activations)
    latents = load_latents(store, plan, spec.probe.aggregation, spec=spec)
    loaded = time.perf_counter()
    analyze_run(spec, plan, run, run.read_manifest(), latents=latents)
    analysed = time.perf_counter()
    layout = build_layout(spec, latents.row_map())
    lean = run.table("lean", required=True)
    labels = label_null_p_values(lean, layout, latents, seed=spec.statistics.seed)
    vocabulary, _ = vocabulary_null_p_values(
        lean, latents.means().astype(np.float64, copy=False), layout, seed=spec.statistics.seed
    )
    done = time.perf_counter()
    from auditkit.analyze.int8 import int8_kernel

    return {
        "streamed": latents.per_seed is None,
        "int8_kernel": int8_kernel(),  # how the seed products were multiplied here
        "imports_s": round(imported - started, 1),
        "read_store_s": round(loaded - imported, 1),
        "analysis_s": round(analysed - loaded, 1),
        "null_models_s": round(done - analysed, 1),
        "b2_wall_s": round(done - started, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "lean_rows": len(lean),
        "significant": int(lean["significant"].sum()),
        "label_null_p_below_05": int(np.sum(labels < 0.05)),
        "vocabulary_null_p_below_05": int(np.sum(vocabulary < 0.05)),
    }


REPORT_TIMEOUT = 600
"""Seconds a report render may take before it is recorded as timed out (B3's bars are 10 s
and 60 s)."""


def timed(command: list[str], timeout: float | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--axes", type=int, default=20)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-scale")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child_analyze(args.child)))
        return
    run_dir = make_run(args, args.work)
    for stale in ("results", "report"):
        shutil.rmtree(run_dir / stale, ignore_errors=True)
    subprocess.run(["sync"], check=False)
    _wall, out = timed([sys.executable, __file__, "--child", str(run_dir)])
    b2 = json.loads(out.strip().splitlines()[-1])
    rows = {"B2 analysis": b2}
    for fmt in ("html", "pdf"):
        command = [sys.executable, "-m", "auditkit", "report", str(run_dir), "--format", fmt]
        try:
            seconds, _ = timed(command, timeout=REPORT_TIMEOUT)
        except subprocess.TimeoutExpired:
            rows[f"B3 {fmt}"] = {"timed_out_after_s": REPORT_TIMEOUT}
            continue
        size = (run_dir / "report" / f"report.{fmt}").stat().st_size
        rows[f"B3 {fmt}"] = {"wall_s": round(seconds, 1), "size_mb": round(size / 1e6, 2)}
    result = {
        "settings": {k: getattr(args, k) for k in ("concepts", "seeds", "axes", "resamples")},
        "units": len(json.loads((run_dir / "plan.json").read_text())["units"]),
        "cpu_count": os.cpu_count(),
        **rows,
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
