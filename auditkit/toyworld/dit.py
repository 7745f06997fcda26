"""toyworld-dit: the toyworld world with a small PixArt-style DiT denoiser.

The checkpoint shares everything but the denoiser with toyworld-biased: the same training data
(the biased world's planted rates), its tokenizer, VAE and trained CLIP text encoder (frozen
here). The denoiser is a ``PixArtTransformer2DModel`` (adaLN-single, self- and cross-attention
blocks) reading the text encoder's states through cross-attention, and the checkpoint is an
ordinary ``PixArtSigmaPipeline`` folder, so an audit of it runs the code path of a PixArt model
(its model adapter, a transformer block as the hook point).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from auditkit.toyworld.train import (
    EMA,
    RESOLUTION,
    TrainConfig,
    TrainLog,
    _lr_lambda,
    _report,
    descend,
    noise_schedule,
    noised,
    save_pipeline,
    tokenize,
    training_batch,
    write_json,
)


@dataclass(frozen=True)
class DiTConfig:
    """The DiT's size: ``layers`` blocks of ``heads`` x ``head_dim`` over the 8 x 8 latent
    cut into ``patch`` x ``patch`` tokens."""

    layers: int = 8
    heads: int = 4
    head_dim: int = 32
    patch: int = 1
    lr: float = 1e-3
    """Peak learning rate."""
    whiten: bool = True
    """Start the caption projection whitened (:func:`whiten_caption_projection`)."""

    def to_json(self) -> dict[str, Any]:
        return {"layers": self.layers, "heads": self.heads, "head_dim": self.head_dim,
                "patch": self.patch, "lr": self.lr, "whiten": self.whiten}  # fmt: skip


DEFAULT_DIT = DiTConfig()
"""The shipped toyworld-dit's shape and learning rate."""


def _phase(training: dict[str, Any]) -> dict[str, Any]:
    """One finished phase of a training record (for the record of the phase after it)."""
    denoiser = training["denoiser"]
    return {
        "steps": training["config"]["steps"],
        "lr": denoiser["dit"]["lr"],
        "seconds": denoiser["seconds"],
        "final_loss": denoiser["final_loss"],
    }


def build_dit(dit: DiTConfig, text_width: int) -> Any:
    """A PixArt-style DiT on the toyworld latents (4 channels, no learned sigma)."""
    from diffusers import PixArtTransformer2DModel

    width = dit.heads * dit.head_dim
    return PixArtTransformer2DModel(
        sample_size=RESOLUTION // 4,
        num_layers=dit.layers,
        patch_size=dit.patch,
        attention_head_dim=dit.head_dim,
        num_attention_heads=dit.heads,
        caption_channels=text_width,
        in_channels=4,
        out_channels=4,
        cross_attention_dim=width,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        use_additional_conditions=False,
    )


def encode(tokenizer: Any, text_encoder: Any, captions: list[str], device: Any) -> tuple[Any, Any]:
    """Text states and attention mask, as the PixArt pipeline encodes a prompt."""
    tokens = tokenize(tokenizer, captions)
    mask = tokens.attention_mask.to(device)
    states = text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]
    return states, mask


@torch.no_grad()
def whiten_caption_projection(
    model: Any, states: torch.Tensor, mask: torch.Tensor, *, eps: float = 1e-3
) -> dict[str, float]:
    """Fold a whitening of the text states into the DiT's first caption-projection layer.

    The frozen text encoder was trained with the U-Net, which learned to read occupations
    from small differences: the states of "doctor" and "nurse" in "a photo of a ..." differ by
    about 4% of their norm, while "woman" and "doctor" differ by 60%. A freshly initialised
    projection sees the occupations as near-identical and the DiT learns to draw them late. So
    the projection starts as ``W0 · P (x - mean)``, with ``P`` the ZCA whitening of the
    captions' real (unmasked) token states: every direction along which captions vary enters
    at unit scale. It is an initialisation only; the layer trains as usual.
    Returns the spectrum's summary (for the training record).
    """
    tokens = states[mask.bool()].double()
    mean = tokens.mean(0)
    cov = torch.cov((tokens - mean).T)
    values, vectors = torch.linalg.eigh(cov)
    floor = eps * float(values.clamp_min(0).mean())
    whiten = vectors @ torch.diag((values.clamp_min(0) + floor).rsqrt()) @ vectors.T
    layer = model.caption_projection.linear_1
    weight = layer.weight.double() @ whiten
    layer.bias.copy_((layer.bias.double() - weight @ mean).to(layer.bias.dtype))
    layer.weight.copy_(weight.to(layer.weight.dtype))
    top = values.flip(0).clamp_min(0)
    return {
        "tokens": int(tokens.shape[0]),
        "eps": eps,
        "variance_top": round(float(top[0]), 4),
        "rank_99": int((top.cumsum(0) / top.sum() < 0.99).sum()) + 1,
    }


def caption_statistics_batch(
    config: TrainConfig, tokenizer: Any, text_encoder: Any, device: Any, n: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """Text states of ``n`` training captions of the world (its own random stream)."""
    from auditkit.toyworld.world import sample_training_set

    rng = np.random.default_rng([config.seed, 13])
    captions = sample_training_set(n, config.variant, rng).captions
    with torch.no_grad():
        return encode(tokenizer, text_encoder, captions, device)


def train_dit(
    config: TrainConfig,
    dit: DiTConfig,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    log: TrainLog,
    *,
    report_every: int = 100,
    record: dict[str, Any] | None = None,
    start: nn.Module | None = None,
    phase: int = 1,
) -> nn.Module:
    """Train the DiT (epsilon prediction, the text encoder frozen); return its EMA copy.
    ``record`` receives the caption whitening's summary. ``start``: a DiT trained before, to
    go on training (its caption projection is not whitened again); ``phase`` numbers the
    training so each phase draws its own batches."""
    from diffusers import DDPMScheduler

    torch.manual_seed(config.seed + 11 + 100 * (phase - 1))
    rng = np.random.default_rng([config.seed, 12, phase] if phase > 1 else [config.seed, 12])
    device = torch.device(config.device)
    text_encoder = text_encoder.eval().to(device).requires_grad_(False)
    if start is not None:
        model = start.float().train().requires_grad_(True).to(device)
    else:
        model = build_dit(dit, int(text_encoder.config.hidden_size)).train().to(device)
    if dit.whiten and start is None:
        stats = caption_statistics_batch(config, tokenizer, text_encoder, device)
        summary = whiten_caption_projection(model, *stats)
        if record is not None:
            record["caption_whitening"] = summary
    vae = vae.to(device)
    scheduler: Any = DDPMScheduler(**noise_schedule())
    opt = torch.optim.AdamW(model.parameters(), lr=dit.lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config, config.steps))
    ema = EMA(model, config.ema_decay)
    pending: list[torch.Tensor] = []
    started = time.perf_counter()
    for step in range(1, config.steps + 1):
        latents, captions = training_batch(config, rng, vae, device)
        with torch.no_grad():
            states, mask = encode(tokenizer, text_encoder, captions, device)
        noisy, noise, t = noised(scheduler, latents)
        pred = model(
            noisy,
            encoder_hidden_states=states,
            encoder_attention_mask=mask,
            timestep=t,
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        ).sample
        loss = nn.functional.mse_loss(pred, noise)
        descend(loss, opt, sched, model.parameters())
        ema.update(model)
        pending.append(loss.detach())
        if step % report_every == 0 or step == config.steps:
            log.loss.extend(torch.stack(pending).cpu().tolist())
            pending.clear()
            _report("dit", step, config.steps, started, float(np.mean(log.loss[-50:])))
    log.seconds = round(time.perf_counter() - started, 1)
    vae.to("cpu")
    return ema.shadow.to("cpu")


def train_dit_checkpoint(
    out_root: Path,
    base: Path,
    continue_from: Path | None = None,
    *,
    config: TrainConfig | None = None,
    dit: DiTConfig = DEFAULT_DIT,
) -> Path:
    """Train toyworld-dit on the world of the checkpoint ``base`` (toyworld-biased: its
    tokenizer, VAE and text encoder) and save it as ``out_root/toyworld-dit``.

    ``continue_from``: a toyworld-dit folder to go on training (a further phase with its own
    step count and learning rate); its DiT shape is kept, and the training record lists every
    phase."""
    from diffusers import AutoencoderKL, DDIMScheduler, PixArtSigmaPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    from auditkit.models.loading import quiet_libraries
    from auditkit.toyworld.build import _training_record
    from auditkit.toyworld.world import write_planted_rates

    quiet_libraries()
    config = replace(config or TrainConfig(), variant="biased")
    torch.set_num_threads(config.threads)
    tokenizer = CLIPTokenizer.from_pretrained(str(base / "tokenizer"))
    vae = AutoencoderKL.from_pretrained(str(base / "vae")).float()
    text_encoder = CLIPTextModel.from_pretrained(str(base / "text_encoder")).float()
    log = TrainLog(scaling_factor=float(vae.config.scaling_factor))
    started = time.perf_counter()
    notes: dict[str, Any] = {}
    start, phases = None, []
    if continue_from is not None:
        from diffusers import PixArtTransformer2DModel

        start = PixArtTransformer2DModel.from_pretrained(str(continue_from / "transformer"))
        before = json.loads((continue_from / "training.json").read_text())
        phases = [*before["denoiser"].get("phases", []), _phase(before)]
        first = before["denoiser"]["dit"]
        dit = replace(dit, layers=first["layers"], heads=first["heads"],
                      head_dim=first["head_dim"], patch=first["patch"])  # fmt: skip
        notes["caption_whitening"] = before["denoiser"].get("caption_whitening")
    model = train_dit(
        config, dit, vae, text_encoder, tokenizer, log, record=notes, start=start,
        phase=len(phases) + 1,
    )  # fmt: skip
    pipe = PixArtSigmaPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=model,
        scheduler=DDIMScheduler(**noise_schedule(), set_alpha_to_one=False, steps_offset=1),
    )
    folder = out_root / "toyworld-dit"
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_pipeline(pipe, staging, components=("vae", "text_encoder", "transformer"))
    rates = write_planted_rates(staging / "planted_rates.json", "biased")
    planted = json.loads(rates.read_text())  # the biased world's rates, under its own name
    write_json(rates, {**planted, "variant": "dit", "world": "biased"})
    record = _training_record(config, log, started)
    record["denoiser"]["dit"] = dit.to_json()
    record["denoiser"].update(notes)
    if phases:
        record["denoiser"]["phases"] = phases  # the earlier phases, oldest first
    record["shared_with"] = base.name
    write_json(staging / "training.json", record)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder
