"""B4 (issue 15) and issue 13's GPU check: SD 1.5-, SDXL- and FLUX.1-dev-shaped denoisers with
random weights, through auditkit's extraction on a GPU, against the bare denoising loop.

No download: each denoiser is built from its published config (the same dicts the meta-device
tests check) with random weights, directly on the device, and put into its family's tiny
pipeline (tiny text encoders, tiny VAE, the family's scheduler). The denoiser's text-conditioning
widths are set to the tiny encoders' (cross-attention keys and values, SDXL's added embedding,
FLUX's joint and pooled projections), so every block, h's shape and nearly all of the compute
are the published model's. The resolution is chosen so the latent is the published one (SD 1.5
64x64, SDXL and FLUX 128x128 before FLUX's 2x2 packing).

Per model it records: h's shape at the family's default hook, peak GPU memory, denoiser
evaluations per second of the bare loop and of ``extract_activations`` (hooks, reduction on the
device, shard writes), and their ratio, at batch sizes 1, 4 and 8 in float16, at the largest
batch in bfloat16, and at the largest batch with ``torch.compile`` of the denoiser. Steps: 4.

Usage (a GPU machine; one call under 8 minutes: on an H200 the plain settings of all three
took 2 minutes, SD 1.5's compiled setting 2 more, SDXL's compilation over 3 minutes alone, so
the --budget-s default of 420 s starts no compilation it cannot finish in time):
    python benchmarks/gpu_extract.py --out gpu-extract.json
Only the compiled settings (one model's compilation per call):
    python benchmarks/gpu_extract.py --compiled-only --models sd15 --out gpu-compiled.json
CPU check of the wiring (small batches, one step, shallower SDXL and FLUX, float32):
    python benchmarks/gpu_extract.py --smoke
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import gc
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

SPEC = """spec_version: 1
name: gpu-extract
model: {{id: "{folder}", device: {device}, dtype: {dtype}, steps: {steps},
        guidance_scale: {guidance}, resolution: {resolution}}}
probe: {{hook: "{hook}", store_dtype: float16, per_step_h: all}}
seeds: {seeds}
batch_size: {batch}
centring: {{reference: set_mean}}
analyses: [lean]
execution: {{compile: {compiled}}}
axes: [{{name: a, templates: ["a photo of a {{term}}"], groups: {{x: [man], y: [woman]}}}}]
concepts: [{{name: c, templates: ["a photo of a {{term}}"], terms: [doctor, nurse]}}]
"""


def _models(smoke: bool) -> dict[str, dict[str, Any]]:
    from test_adapters import FLUX_DEV, SD15_UNET, SDXL_UNET

    sdxl = dict(SDXL_UNET)
    flux = dict(FLUX_DEV)
    if smoke:  # the same wiring, shallower (CPU memory)
        sdxl["transformer_layers_per_block"] = [1, 1, 1]
        flux.update(num_layers=2, num_single_layers=2)
    return {
        "sd15": {"tiny": "sd", "family": "stable-diffusion", "config": SD15_UNET, "latent": 64,
                 "hook": "unet.mid_block", "guidance": 7.5},
        "sdxl": {"tiny": "sdxl", "family": "sdxl", "config": sdxl, "latent": 128,
                 "hook": "unet.mid_block", "guidance": 7.5},
        "flux-dev": {"tiny": "flux", "family": "flux", "config": flux, "latent": 128,
                     "hook": f"transformer.transformer_blocks.{flux['num_layers'] - 1}",
                     "guidance": 3.5},
    }  # fmt: skip


def build(name: str, model: dict[str, Any], device: str, dtype: torch.dtype, work: Path) -> Any:
    """(LoadedPipeline, folder, resolution): the family's tiny pipeline with the full-size
    random-weight denoiser in place of its own."""
    import diffusers

    from auditkit.models.adapters import for_family
    from auditkit.models.loading import LoadedPipeline
    from auditkit.models.tiny import tiny_pipeline_path

    folder = tiny_pipeline_path(model["tiny"], work / "tiny")
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(folder), torch_dtype=dtype)
    adapter = for_family(model["family"])
    config = dict(model["config"])
    if name == "sd15":
        config["cross_attention_dim"] = pipe.text_encoder.config.hidden_size
        cls = diffusers.UNet2DConditionModel
    elif name == "sdxl":
        first, second = pipe.text_encoder.config, pipe.text_encoder_2.config
        config["cross_attention_dim"] = first.hidden_size + second.hidden_size
        config["projection_class_embeddings_input_dim"] = (
            second.projection_dim + 6 * config["addition_time_embed_dim"]
        )
        cls = diffusers.UNet2DConditionModel
    else:
        config["joint_attention_dim"] = pipe.text_encoder_2.config.d_model
        config["pooled_projection_dim"] = pipe.text_encoder.config.hidden_size
        cls = diffusers.FluxTransformer2DModel
    with torch.device(device):
        denoiser = cls.from_config(config).to(dtype)
    pipe.register_modules(**{adapter.denoiser: denoiser})
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    resolution = model["latent"] * pipe.vae_scale_factor
    uses_cfg = adapter.uses_cfg(pipe, model["guidance"])
    loaded = LoadedPipeline(pipe, model["family"], type(pipe).__name__, device,
                            str(dtype).split(".")[-1], folder, uses_cfg, adapter)  # fmt: skip
    return loaded, folder, resolution


def run_setting(
    loaded: Any, folder: Path, resolution: int, model: dict[str, Any], batch: int, steps: int,
    work: Path, compiled: bool = False, batches: int = 2,
) -> dict[str, Any]:  # fmt: skip
    """Bare loop and extraction over the same ``batches`` batches; rates, memory, h's shape.

    Each is warmed up on one batch first. Compiled, the extraction's warm-up matters: the hooks
    it registers make the compiled denoiser compile again, which a long audit pays once."""
    from auditkit.analyses.checks import check_spec
    from auditkit.extract.runner import extract_activations, pipeline_inputs
    from auditkit.extract.store import ActivationStore
    from auditkit.plan import plan_audit
    from auditkit.spec import parse_spec

    text = SPEC.format(folder=folder, device=loaded.device, dtype=loaded.dtype, steps=steps,
                       guidance=model["guidance"], resolution=resolution, hook=model["hook"],
                       seeds=batch * batches, batch=batch,
                       compiled=str(compiled).lower())  # fmt: skip
    spec = check_spec(parse_spec(text))
    plan = plan_audit(spec)
    units = plan.units[: batches * batch]
    plan = dataclasses.replace(plan, units=tuple(units))
    cuda = loaded.device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def bare(todo: Sequence[Any]) -> None:
        with torch.inference_mode():
            for i in range(0, len(todo), batch):
                inputs = pipeline_inputs(loaded, spec, todo[i : i + batch])
                loaded.pipe(**inputs, output_type="latent")

    started = time.perf_counter()
    bare(units[:batch])  # warm-up, one batch (and the compilation, when compiled)
    sync()
    warmup_s = time.perf_counter() - started
    print(json.dumps({"bare warm-up s": round(warmup_s, 1), "batch": batch}), flush=True)
    started = time.perf_counter()
    if compiled:
        warm = dataclasses.replace(plan, units=tuple(units[:batch]))
        warm_store = ActivationStore(work / f"warm-{time.monotonic_ns()}")
        extract_activations(loaded, spec, warm, warm_store, show_progress=False)
        sync()
    hooks_warmup_s = time.perf_counter() - started
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    bare(units)
    sync()
    bare_s = time.perf_counter() - started
    store = ActivationStore(work / f"store-{time.monotonic_ns()}")
    started = time.perf_counter()
    stats = extract_activations(loaded, spec, plan, store, show_progress=False)
    sync()
    audit_s = time.perf_counter() - started
    evaluations = stats.denoiser_evaluations
    return {
        "batch": batch,
        "dtype": loaded.dtype,
        "h_shape": stats.h_shape,
        "denoiser_evaluations": evaluations,
        "bare_evaluations_per_s": round(evaluations / bare_s, 2),
        "auditkit_evaluations_per_s": round(evaluations / audit_s, 2),
        "auditkit_over_bare": round(bare_s / audit_s, 3),
        "warmup_s": round(warmup_s, 2),
        "hooks_warmup_s": round(hooks_warmup_s, 2),
        "bare_s": round(bare_s, 3),
        "auditkit_s": round(audit_s, 3),
        "peak_gpu_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Write the records as JSON here (rewritten after each one).",
    )
    parser.add_argument("--models", default="sd15,sdxl,flux-dev")
    parser.add_argument("--smoke", action="store_true", help="CPU wiring check, tiny settings.")
    parser.add_argument(
        "--compiled-only", action="store_true", help="Only the torch.compile settings."
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=None,
        help="Timed batches per setting (default 4 on a GPU, where the first run's 2 took "
        "0.3 s for SD 1.5; 2 with --smoke).",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="Start no setting after this many seconds; a compiled one only "
        "with a third of it left (the records so far are kept).",
    )
    args = parser.parse_args()
    smoke = args.smoke
    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke for a CPU wiring check")
    work = Path(tempfile.mkdtemp(prefix="auditkit-gpu-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # no scratch left in /tmp
    models = _models(smoke)
    names = args.models.split(",")
    steps = 1 if smoke else 4
    batches_timed = args.batches or (2 if smoke else 4)
    # Every model's plain settings first, the compiled ones last: what a short call cannot
    # finish is the compilation, never a plain measurement.
    batches = (1,) if smoke else (1, 4, 8)
    phases: list[tuple[str, torch.dtype, list[tuple[int, bool]]]] = []
    for name in [] if args.compiled_only else names:
        phases.append((name, torch.float32 if smoke else torch.float16,
                       [(b, False) for b in batches]))  # fmt: skip
        if not smoke:
            phases.append((name, torch.bfloat16, [(batches[-1], False)]))
    phases += [(name, torch.float32 if smoke else torch.float16, [(batches[-1], True)])
               for name in names]  # fmt: skip
    card = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    import diffusers
    import transformers

    from auditkit.models.loading import compile_denoiser

    print(json.dumps({"device": card, "torch": torch.__version__, "diffusers":
                      diffusers.__version__, "transformers": transformers.__version__}),
          flush=True)  # fmt: skip
    records: list[dict[str, Any]] = []
    began = time.perf_counter()

    def elapsed() -> float:
        return time.perf_counter() - began

    def keep(record: dict[str, Any]) -> None:
        records.append(record)
        print(json.dumps(record), flush=True)
        if args.out is not None:
            args.out.write_text(json.dumps(records, indent=2) + "\n")

    for name, dtype, settings in phases:
        model = models[name]
        try:
            loaded, folder, resolution = build(name, model, device, dtype, work)
        except Exception as error:  # recorded; the other models still run
            keep({"model": name, "dtype": str(dtype).split(".")[-1], "error": repr(error)})
            continue
        for batch, compiled in settings:
            left = args.budget_s - elapsed()
            if left <= 0 or (compiled and left < args.budget_s / 3):
                keep(
                    {
                        "model": name,
                        "batch": batch,
                        "compiled": compiled,
                        "skipped": f"budget: {elapsed():.0f} s of {args.budget_s:.0f} s used",
                    }
                )
                continue
            base = {"model": name, "compiled": compiled, "device": card, "steps": steps,
                    "resolution": resolution}  # fmt: skip
            try:
                if compiled:
                    compile_denoiser(loaded)  # as `execution: {compile: true}` does
                record = run_setting(
                    loaded, folder, resolution, model, batch, steps, work, compiled, batches_timed
                )
            except Exception as error:  # recorded; the next setting runs
                record = {"batch": batch, "dtype": loaded.dtype, "error": repr(error)}
            keep(base | record | {"elapsed_s": round(elapsed(), 1)})
        del loaded
        gc.collect()  # the pipeline's reference cycles: else the next build finds it resident
        if device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
