"""Extraction overhead, as ratios measured in one run on the same pipeline.

Compares three ways of getting h for the same (prompt, seed) units, per model:

* bare:     the pipeline loop with the inputs auditkit uses (same denoiser, batch, steps,
            scheduler, seeded noise), no hooks and no storage: the limit;
* auditkit: ``extract_activations`` (hooks, reduction on the device, shard writes);
* naive:    what a user would write first: one pipeline call per prompt, decoded to images,
            a forward hook at the same block appending every capture (both guidance halves),
            torch.save at the end.

Models: toyworld-biased (the default audit's model) and the tiny pipeline of every family.

Usage: python benchmarks/extract_overhead.py [--kinds toyworld,sd,lcm,sdxl,pixart,sd3,flux,sana]
       [--units 128] [--batch 64] [--repeats 3] [--resolution PX] [--out B1.json]
The batch is the project's audits' own (``batch_size: 64`` in audits/*.yaml), and 128 units make
two of them, so that every extraction pays the store's durable per-batch commit twice.
Every path is warmed up once, then timed --repeats times, interleaved (median).
Prints seconds and the ratios bare/auditkit (throughput of auditkit against the limit) and
naive/auditkit, per model; ``--out`` writes the same rows as JSON.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

KINDS = ("toyworld", "sd", "lcm", "sdxl", "pixart", "sd3", "flux", "sana")


def _spec_text(model: str, steps: int, resolution: int, batch: int, terms: list[str]) -> str:
    return f"""
spec_version: 1
name: bench
model: {{id: "{model}", device: cpu, steps: {steps}, guidance_scale: 7.5,
        resolution: {resolution}}}
seeds: 4
batch_size: {batch}
centring: {{reference: set_mean}}
analyses: [lean]
axes: [{{name: a, templates: ["a photo of a {{term}}"], groups: {{x: [man], y: [woman]}}}}]
concepts: [{{name: c, templates: ["a photo of a {{term}}"], terms: {terms}}}]
"""


def measure(
    kind: str,
    units_wanted: int,
    batch: int,
    work: Path,
    repeats: int = 3,
    resolution: int | None = None,
) -> dict[str, float]:
    """Median seconds of bare, auditkit and naive extraction of the same units of one model,
    each path warmed up once and then timed ``repeats`` times."""
    from auditkit.analyses.checks import check_spec
    from auditkit.extract.hooks import resolve_hook_point
    from auditkit.extract.runner import extract_activations, pipeline_inputs
    from auditkit.extract.store import ActivationStore
    from auditkit.layout import resolve_spec
    from auditkit.models.loading import load_pipeline
    from auditkit.plan import plan_audit
    from auditkit.spec import parse_spec

    words = ["doctor", "nurse", "pilot", "teacher", "chef", "farmer", "builder", "singer"]
    terms = [words[i % len(words)] + ("" if i < len(words) else f" {i}") for i in
             range(max(1, units_wanted // 4 - 2))]  # fmt: skip
    toy = kind == "toyworld"
    model = "builtin:toyworld-biased" if toy else f"builtin:tiny-{kind}"
    steps, default_resolution = (10, 32) if toy else (4, 64)
    resolution = resolution or default_resolution
    spec = resolve_spec(
        check_spec(parse_spec(_spec_text(model, steps, resolution, batch, terms))), work
    )
    plan = plan_audit(spec)
    units = plan.units
    loaded = load_pipeline(spec.model, cache_dir=work)
    pipe = loaded.pipe
    torch.set_grad_enabled(False)

    def bare() -> None:
        for i in range(0, len(units), batch):
            pipe(**pipeline_inputs(loaded, spec, units[i : i + batch]), output_type="latent")

    def audit() -> None:
        store = ActivationStore(work / f"store-{kind}-{time.monotonic_ns()}")
        extract_activations(loaded, spec, plan, store, show_progress=False)

    def naive() -> None:
        captured: list[torch.Tensor] = []
        _, module = resolve_hook_point(pipe.components, spec.probe.hook)

        def keep(_m: object, _i: object, out: object) -> None:
            tensor = out[0] if isinstance(out, tuple) else out
            captured.append(tensor.detach().clone())  # type: ignore[union-attr]

        handle = module.register_forward_hook(keep)
        try:
            for u in units:
                pipe(
                    prompt=u.prompt,
                    num_inference_steps=steps,
                    guidance_scale=7.5,
                    height=resolution,
                    width=resolution,
                    generator=torch.Generator().manual_seed(u.seed),
                    **loaded.adapter.call_kwargs(pipe),
                )
        finally:
            handle.remove()
        torch.save(captured, work / "naive.pt")

    paths = (("bare", bare), ("auditkit", audit), ("naive", naive))
    for _name, fn in paths:  # warm-up: first calls, lazy imports, allocator growth
        fn()
    seconds: dict[str, list[float]] = {name: [] for name, _ in paths}
    for _ in range(repeats):  # interleaved, so a slow moment of the machine hits every path
        for name, fn in paths:
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    timings = {"units": float(len(units)), "steps": float(steps), "resolution": resolution}
    timings |= {name: statistics.median(values) for name, values in seconds.items()}
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path (median)")
    parser.add_argument(
        "--resolution", type=int, default=None,
        help="image size in px for every model (default: toyworld 32, the tiny pipelines 64)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="auditkit-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # no scratch left in /tmp
    print(f"{'model':10} {'px':>3} {'units':>5} {'bare s':>7} {'auditkit s':>10} {'naive s':>8} "
          f"{'bare/auditkit':>13} {'naive/auditkit':>14}")  # fmt: skip
    rows = []
    for kind in args.kinds.split(","):
        t = measure(kind, args.units, args.batch, work, args.repeats, args.resolution)
        print(f"{kind:10} {int(t['resolution']):3d} {int(t['units']):5d} {t['bare']:7.2f} "
              f"{t['auditkit']:10.2f} "
              f"{t['naive']:8.2f} {t['bare'] / t['auditkit']:13.2f} "
              f"{t['naive'] / t['auditkit']:14.2f}", flush=True)  # fmt: skip
        rows.append({"model": kind, "units": int(t["units"]), "steps": int(t["steps"])})
        rows[-1]["resolution"] = int(t["resolution"])
        rows[-1] |= {"batch": args.batch, "repeats": args.repeats}
        rows[-1] |= {f"{path}_s": round(t[path], 4) for path in ("bare", "auditkit", "naive")}
        rows[-1]["auditkit_over_bare"] = round(t["bare"] / t["auditkit"], 3)
        rows[-1]["naive_over_auditkit"] = round(t["naive"] / t["auditkit"], 3)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
