"""Extraction overhead, as ratios measured in one run on the same pipeline.

Compares three ways of getting h for the same (prompt, seed) units:

* bare:     the pipeline loop with no hooks at all (the floor: U-Net work only, batched),
* auditkit: ``extract_activations`` (hooks, reduction on device, atomic shard writes),
* naive:    what a user would write first: one image at a time, full decode to PIL,
            a forward hook appending every h (both CFG halves) to a list, torch.save at the end.

Usage: python benchmarks/extract_overhead.py [--units 48] [--kind sd]
Prints seconds and the ratios auditkit/bare and naive/auditkit.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=48)
    parser.add_argument("--kind", default="sd", choices=["sd", "lcm", "sdxl"])
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    from auditkit.analyses.checks import check_spec
    from auditkit.extract.runner import extract_activations, initial_noise
    from auditkit.extract.store import ActivationStore
    from auditkit.models.loading import load_pipeline
    from auditkit.models.tiny import tiny_pipeline_path
    from auditkit.plan import plan_audit
    from auditkit.spec import parse_spec

    work = Path(tempfile.mkdtemp(prefix="auditkit-bench-"))
    model_dir = tiny_pipeline_path(args.kind, work / "models")  # type: ignore[arg-type]
    terms = [f"job{i}" for i in range(max(1, args.units // 4))]
    spec = parse_spec(
        f"""
spec_version: 1
name: bench
model: {{id: {model_dir}, device: cpu, steps: 4, guidance_scale: 7.5, resolution: 32}}
seeds: 4
batch_size: {args.batch}
centring: {{reference: set_mean}}
analyses: [lean]
axes: [{{name: a, templates: ["{{term}}"], groups: {{x: [x], y: [y]}}}}]
concepts: [{{name: c, templates: ["a photo of a {{term}}"], terms: {terms}}}]
"""
    )
    plan = plan_audit(check_spec(spec))
    units = plan.units
    loaded = load_pipeline(spec.model, cache_dir=work)
    pipe = loaded.pipe
    torch.set_grad_enabled(False)

    def bare() -> None:
        for i in range(0, len(units), args.batch):
            batch = units[i : i + args.batch]
            latents = torch.stack([initial_noise(pipe, u.seed, 32) for u in batch])
            pipe(
                prompt=[u.prompt for u in batch],
                latents=latents,
                num_inference_steps=4,
                guidance_scale=7.5,
                height=32,
                width=32,
                output_type="latent",
            )

    def audit() -> None:
        extract_activations(
            loaded, spec, plan, ActivationStore(work / "store"), show_progress=False
        )

    def naive() -> None:
        captured: list[torch.Tensor] = []
        handle = pipe.unet.mid_block.register_forward_hook(
            lambda _m, _i, out: captured.append(out.detach().clone())
        )
        try:
            for u in units:
                pipe(
                    prompt=u.prompt,
                    num_inference_steps=4,
                    guidance_scale=7.5,
                    height=32,
                    width=32,
                    generator=torch.Generator().manual_seed(u.seed),
                )
        finally:
            handle.remove()
        torch.save(captured, work / "naive.pt")

    bare()  # warm-up
    timings = {}
    for name, fn in (("bare", bare), ("auditkit", audit), ("naive", naive)):
        start = time.perf_counter()
        fn()
        timings[name] = time.perf_counter() - start
    print(f"{len(units)} units, {args.kind}, batch {args.batch}, 4 steps, CPU")
    for name, secs in timings.items():
        print(f"  {name:9s} {secs:7.2f} s")
    print(f"  auditkit / bare  = {timings['auditkit'] / timings['bare']:.2f}x")
    print(f"  naive / auditkit = {timings['naive'] / timings['auditkit']:.2f}x")


if __name__ == "__main__":
    main()
