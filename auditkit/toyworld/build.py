"""Build the toyworld checkpoints: shared tokenizer and VAE, one denoiser per variant.

``auditkit toyworld train --out DIR`` writes ``DIR/toyworld-biased`` and
``DIR/toyworld-balanced`` (ordinary diffusers folders), each with ``planted_rates.json``,
``training.json`` and a model card. Both variants share the tokenizer and the VAE (trained once
on balanced renders), so they differ only in the denoiser's training captions' world.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auditkit.models.builtin import SHIPPED_CHECKPOINTS
from auditkit.toyworld.train import (
    MAX_TOKENS,
    TrainConfig,
    TrainLog,
    Variant,
    assemble_pipeline,
    save_pipeline,
    train_denoiser,
    train_vae,
    write_json,
)

PACKAGE_CHECKPOINTS = SHIPPED_CHECKPOINTS
"""The shipped checkpoints' folder, where ``builtin:toyworld-*`` models load from."""
VARIANTS: tuple[Variant, ...] = ("biased", "balanced")
"""The two checkpoints of the default world (``reworded``, the calibration suite's second
world, is trained on request: ``auditkit toyworld train --variant reworded``)."""


def checkpoint_path(variant: Variant, root: Path | None = None) -> Path:
    """Folder of a toyworld checkpoint (the shipped ones by default)."""
    return (root or PACKAGE_CHECKPOINTS) / f"toyworld-{variant}"


def _config_hash(config: TrainConfig, keys: tuple[str, ...]) -> str:
    payload = {k: getattr(config, k) for k in keys}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


_VAE_KEYS = ("seed", "vae_steps", "vae_lr", "vae_kl_weight", "batch_size", "vae_channels")


def _shared_parts(
    config: TrainConfig,
    work: Path,
    vae_from: Path | None = None,
    variants: tuple[Variant, ...] = VARIANTS,
) -> tuple[Any, Any, TrainLog]:
    """Tokenizer and VAE: the VAE of the checkpoint ``vae_from`` when given, else the one in
    ``work`` when already trained with the same settings, else a newly trained one."""
    from diffusers import AutoencoderKL

    from auditkit.models.tokenizer import build_clip_tokenizer
    from auditkit.toyworld.world import vocabulary

    words = sorted(set().union(*(vocabulary(v) for v in variants)))
    tokenizer = build_clip_tokenizer(work / "tokenizer", words, model_max_length=MAX_TOKENS)
    if vae_from is not None:
        return tokenizer, _checkpoint_vae(vae_from), _checkpoint_vae_log(vae_from)
    if variants == ("reworded",):  # a VAE fitted to the reworded world's renders
        config = replace(config, variant="reworded")
    world = "-reworded" if config.variant == "reworded" else ""
    vae_dir = work / f"vae-{_config_hash(config, _VAE_KEYS)}{world}"
    log = TrainLog()
    if (vae_dir / "config.json").is_file() and (vae_dir / "log.json").is_file():
        vae = AutoencoderKL.from_pretrained(str(vae_dir)).eval().requires_grad_(False)
        saved = json.loads((vae_dir / "log.json").read_text())
        log.vae_seconds = saved["vae_seconds"]
        log.scaling_factor = saved["scaling_factor"]
        log.vae_psnr_db = saved["vae_psnr_db"]
        log.vae_loss = saved["vae_loss"]
        log.vae_threads = saved.get("vae_threads")
        print(f"toyworld: reusing the VAE in {vae_dir}", flush=True)
        return tokenizer, vae, log
    vae = train_vae(config, log)
    vae.save_pretrained(str(vae_dir), safe_serialization=True)
    write_json(
        vae_dir / "log.json",
        {
            "vae_seconds": log.vae_seconds,
            "scaling_factor": log.scaling_factor,
            "vae_psnr_db": log.vae_psnr_db,
            "vae_loss": log.vae_loss,
            "vae_threads": log.vae_threads,
        },
    )
    return tokenizer, vae, log


def _checkpoint_vae(folder: Path) -> Any:
    from diffusers import AutoencoderKL

    if not (folder / "vae" / "config.json").is_file():
        from auditkit.errors import UsageError

        raise UsageError(f"--vae-from {folder}: no vae/config.json there (not a checkpoint).")
    vae = AutoencoderKL.from_pretrained(str(folder / "vae"), local_files_only=True)
    print(f"toyworld: reusing the VAE of {folder}", flush=True)
    return vae.to(torch.float32).eval().requires_grad_(False)


def _checkpoint_vae_log(folder: Path) -> TrainLog:
    record = folder / "training.json"
    vae = json.loads(record.read_text())["vae"] if record.is_file() else {}
    return TrainLog(
        vae_seconds=float(vae.get("seconds", 0.0)),
        scaling_factor=float(vae.get("scaling_factor", 1.0)),
        vae_psnr_db=float(vae.get("psnr_db", 0.0)),
        vae_loss=list(vae.get("loss_curve", [])),
        vae_threads=vae.get("threads"),
    )


def train_toyworld(
    out_root: Path,
    *,
    variants: tuple[Variant, ...] = VARIANTS,
    config: TrainConfig | None = None,
    work_dir: Path | None = None,
    vae_from: Path | None = None,
) -> dict[str, Path]:
    """Train and save each variant; return variant -> checkpoint folder."""
    from auditkit.models.loading import quiet_libraries
    from auditkit.toyworld.world import write_planted_rates

    quiet_libraries()
    config = config or TrainConfig()
    torch.set_num_threads(config.threads)
    work = work_dir or out_root / ".toyworld-work"
    work.mkdir(parents=True, exist_ok=True)
    if vae_from is not None:
        vae_from = vae_from.resolve()  # before a checkpoint of the same name is replaced
        staged_vae = work / "vae-from-checkpoint"
        shutil.rmtree(staged_vae, ignore_errors=True)
        shutil.copytree(vae_from / "vae", staged_vae / "vae")
        if (vae_from / "training.json").is_file():
            shutil.copy2(vae_from / "training.json", staged_vae / "training.json")
        vae_from = staged_vae
    tokenizer, vae, shared_log = _shared_parts(config, work, vae_from, variants)
    out: dict[str, Path] = {}
    for variant in variants:
        variant_config = replace(config, variant=variant)
        log = TrainLog(
            vae_loss=shared_log.vae_loss,
            vae_seconds=shared_log.vae_seconds,
            scaling_factor=shared_log.scaling_factor,
            vae_psnr_db=shared_log.vae_psnr_db,
            vae_threads=shared_log.vae_threads,
        )
        started = time.perf_counter()
        text_encoder, unet = train_denoiser(variant_config, vae, tokenizer, log)
        pipe = assemble_pipeline(vae, text_encoder, unet, tokenizer)
        folder = checkpoint_path(variant, out_root)
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        save_pipeline(pipe, staging)
        write_planted_rates(staging / "planted_rates.json", variant)
        record = _training_record(variant_config, log, started)
        if vae_from is not None:
            record["vae"]["reused_from_checkpoint"] = True
        write_json(staging / "training.json", record)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        print(f"toyworld: saved {folder}", flush=True)
        out[variant] = folder
    return out


def _hardware(device: str) -> str:
    import os
    import platform

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} (CUDA)"
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores visible"


def _training_record(config: TrainConfig, log: TrainLog, started: float) -> dict[str, Any]:
    import diffusers
    import transformers

    def thin(values: list[float], points: int = 60) -> list[float]:
        if not values:
            return []
        idx = np.linspace(0, len(values) - 1, min(points, len(values))).astype(int)
        return [round(float(np.mean(values[max(0, i - 25) : i + 1])), 5) for i in idx]

    return {
        "schema_version": 1,
        "kind": "auditkit.toyworld.training",
        "config": config.to_json(),
        "vae": {
            "seconds": log.vae_seconds,
            "psnr_db": log.vae_psnr_db,
            "scaling_factor": log.scaling_factor,
            "threads": log.vae_threads,
            "loss_curve": thin(log.vae_loss),
        },
        "denoiser": {
            "seconds": log.seconds,
            "final_loss": round(float(np.mean(log.loss[-100:])), 5) if log.loss else None,
            "loss_curve": thin(log.loss),
        },
        "wall_seconds": round(time.perf_counter() - started + log.vae_seconds, 1),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "hardware": _hardware(config.device),
    }
