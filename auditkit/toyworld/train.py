"""Train a toyworld checkpoint: VAE, then text encoder and U-Net jointly, on CPU.

The result is an ordinary ``StableDiffusionPipeline`` folder (AutoencoderKL, CLIP text encoder
and tokenizer, UNet2DConditionModel with cross-attention, DDIM scheduler), so an audit of it runs
exactly the code path a real checkpoint takes. Every random choice comes from the seed.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from auditkit.progress import format_seconds

Variant = Literal["biased", "balanced", "reworded"]
RESOLUTION = 32
MAX_TOKENS = 16


@dataclass(frozen=True)
class TrainConfig:
    """Every setting that shapes a checkpoint (recorded in its model card)."""

    variant: Variant = "biased"
    seed: int = 0
    vae_steps: int = 1200
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    steps: int = 4800
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    unet_channels: tuple[int, int] = (64, 128)
    vae_channels: tuple[int, int, int] = (32, 64, 64)
    text_width: int = 128
    text_layers: int = 3
    threads: int = 2
    device: str = "cpu"

    def to_json(self) -> dict[str, Any]:
        """JSON form for the model card."""
        return asdict(self)


@dataclass
class TrainLog:
    """Losses and timings of one training run."""

    vae_loss: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    vae_seconds: float = 0.0
    seconds: float = 0.0
    scaling_factor: float = 1.0
    vae_psnr_db: float = 0.0
    vae_threads: int | None = None  # torch threads the VAE trained with (None: not recorded)


def build_vae(config: TrainConfig) -> Any:
    """A small AutoencoderKL: 32 px RGB <-> 8 x 8 x 4 latents."""
    from diffusers import AutoencoderKL

    blocks = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=config.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=RESOLUTION,
    )


def build_text_encoder(config: TrainConfig, tokenizer: Any) -> Any:
    """A CLIP text encoder sized for the toy vocabulary; positions match the tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel

    eos = tokenizer.eos_token_id
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.text_width,
        intermediate_size=config.text_width * 2,
        num_hidden_layers=config.text_layers,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=eos,
        hidden_act="quick_gelu",
    )
    return CLIPTextModel(text_config)


def build_unet(config: TrainConfig) -> Any:
    """A two-level U-Net with cross-attention at both levels on 8 x 8 latents (4.3 M parameters;
    mid block output 128 x 4 x 4). With cross-attention at the 8 x 8 level only (3.2 M), 2,400
    steps left gender followed on only 75% of images of prompts such as 'a man nurse'."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=RESOLUTION // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=config.unet_channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        layers_per_block=1,
        cross_attention_dim=config.text_width,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def noise_schedule() -> dict[str, Any]:
    """Stable Diffusion's training noise schedule, shared by training and sampling."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
    }


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class EMA:
    """Exponential moving average of a module's parameters, with the usual warm-up."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the shadow towards ``module``'s current parameters."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        shadows: list[torch.Tensor] = list(self.shadow.parameters())
        lives = [p.detach() for p in module.parameters()]
        torch._foreach_lerp_(shadows, lives, 1.0 - decay)


def _lr_lambda(config: TrainConfig, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _report(label: str, step: int, total: int, started: float, loss: float) -> None:
    elapsed = time.perf_counter() - started
    left = elapsed / max(step, 1) * (total - step)
    print(
        f"{label}: step {step}/{total}  loss {loss:.4f}  "
        f"[{step / max(elapsed, 1e-9):.2f} steps/s, {format_seconds(left)} left]",
        flush=True,
    )


def train_vae(config: TrainConfig, log: TrainLog, *, report_every: int = 100) -> Any:
    """Fit the autoencoder on fresh renders; set its latent scaling factor from the latents."""
    from auditkit.toyworld.world import sample_training_set

    torch.manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, 1])
    # the renders of the world the VAE serves: the reworded world draws skirts differently
    world: Variant = "reworded" if config.variant == "reworded" else "balanced"
    vae = build_vae(config)
    opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    started = time.perf_counter()
    for step in range(1, config.vae_steps + 1):
        x = to_tensor(sample_training_set(config.batch_size, world, rng).images)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = nn.functional.mse_loss(recon, x) + config.vae_kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.vae_loss.append(loss.item())
        if step % report_every == 0 or step == config.vae_steps:
            _report("vae", step, config.vae_steps, started, float(np.mean(log.vae_loss[-50:])))
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        x = to_tensor(sample_training_set(1024, world, rng).images)
        latents = vae.encode(x).latent_dist.mean
        recon = vae.decode(latents).sample.clamp(-1, 1)
        mse = float(nn.functional.mse_loss((recon + 1) / 2, (x + 1) / 2))
    log.vae_psnr_db = round(10 * math.log10(1.0 / max(mse, 1e-12)), 2)
    log.scaling_factor = round(1.0 / float(latents.std()), 5)
    vae.register_to_config(scaling_factor=log.scaling_factor)
    log.vae_seconds = round(time.perf_counter() - started, 1)
    log.vae_threads = torch.get_num_threads()
    return vae


def training_batch(
    config: TrainConfig, rng: np.random.Generator, vae: Any, device: Any
) -> tuple[torch.Tensor, list[str]]:
    """One batch of the world: its latents (scaled) and its captions, each dropped to "" with
    the caption-dropout probability (so the model also learns the unconditional)."""
    from auditkit.toyworld.world import sample_training_set

    batch = sample_training_set(config.batch_size, config.variant, rng)
    captions = ["" if rng.random() < config.caption_dropout else c for c in batch.captions]
    with torch.no_grad():
        pixels = to_tensor(batch.images).to(device)
        latents = vae.encode(pixels).latent_dist.sample() * float(vae.config.scaling_factor)
    return latents, captions


def tokenize(tokenizer: Any, captions: list[str]) -> Any:
    """Captions padded to the tokenizer's full length, as the pipelines pad a prompt."""
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )


def noised(scheduler: Any, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The latents noised at uniformly drawn training timesteps: (noisy, noise, timesteps)."""
    noise = torch.randn_like(latents)
    t = torch.randint(
        0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device
    )
    return scheduler.add_noise(latents, noise, t), noise, t


def descend(loss: torch.Tensor, opt: Any, sched: Any, params: Any) -> None:
    """One optimiser step on ``loss`` (gradients clipped to norm 1)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()


def train_denoiser(
    config: TrainConfig,
    vae: Any,
    tokenizer: Any,
    log: TrainLog,
    *,
    report_every: int = 100,
) -> tuple[nn.Module, nn.Module]:
    """Train text encoder and U-Net jointly (epsilon prediction); return their EMA copies."""
    from diffusers import DDPMScheduler

    torch.manual_seed(config.seed + 1)
    rng = np.random.default_rng([config.seed, 2])
    device = torch.device(config.device)
    text_encoder = build_text_encoder(config, tokenizer).train().to(device)
    unet = build_unet(config).train().to(device)
    vae = vae.to(device)
    scheduler: Any = DDPMScheduler(**noise_schedule())
    params = list(text_encoder.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config, config.steps))
    ema_unet, ema_text = EMA(unet, config.ema_decay), EMA(text_encoder, config.ema_decay)
    pending: list[torch.Tensor] = []
    started = time.perf_counter()
    for step in range(1, config.steps + 1):
        latents, captions = training_batch(config, rng, vae, device)
        states = text_encoder(tokenize(tokenizer, captions).input_ids.to(device))[0]
        noisy, noise, t = noised(scheduler, latents)
        pred = unet(noisy, t, encoder_hidden_states=states).sample
        loss = nn.functional.mse_loss(pred, noise)
        descend(loss, opt, sched, params)
        ema_unet.update(unet)
        ema_text.update(text_encoder)
        pending.append(loss.detach())
        if step % report_every == 0 or step == config.steps:
            log.loss.extend(torch.stack(pending).cpu().tolist())  # one device sync per report
            pending.clear()
            _report("denoiser", step, config.steps, started, float(np.mean(log.loss[-50:])))
    log.seconds = round(time.perf_counter() - started, 1)
    vae.to("cpu")
    return ema_text.shadow.to("cpu"), ema_unet.shadow.to("cpu")


def assemble_pipeline(
    vae: nn.Module, text_encoder: nn.Module, unet: nn.Module, tokenizer: Any
) -> Any:
    """A StableDiffusionPipeline around the trained parts, sampling with DDIM."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler(**noise_schedule(), set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_pipeline(
    pipe: Any,
    folder: Path,
    *,
    half: bool = True,
    components: tuple[str, ...] = ("vae", "text_encoder", "unet"),
) -> None:
    """Save as safetensors (float16 weights by default, to keep a checkpoint small)."""
    if half:
        for name in components:
            getattr(pipe, name).to(torch.float16)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    if half:
        for name in components:
            getattr(pipe, name).to(torch.float32)


def write_json(path: Path, payload: Any) -> None:
    """Indented JSON with a trailing newline."""
    path.write_text(json.dumps(payload, indent=2) + "\n")
