"""FLUX.1: a rectified-flow transformer (``FluxTransformer2DModel``) with double-stream blocks
(text and image apart) followed by single-stream blocks; CLIP and T5; latents packed 2x2 into
tokens of 64 features; FLUX.1-dev takes the guidance scale as an input (no doubled batch).

Default hook: the last double-stream block (``transformer.transformer_blocks.18`` of 19), the
place published editing work steers FLUX at, where the image stream is still its own. Every
FLUX block returns ``(text tokens, image tokens)``; h is the image stream's mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditkit.models.adapters import _tiny_parts as parts
from auditkit.models.adapters.base import (
    BLOCKS,
    DefaultHook,
    FlowAdapter,
    Geometry,
    read_config,
    safetensors_params,
    vae_scale,
)

if TYPE_CHECKING:
    import torch


class Flux(FlowAdapter):
    family, title = "flux", "FLUX.1"
    pipeline_classes = ("FluxPipeline",)
    hook = DefaultHook(BLOCKS + "{last}", "last double-stream block: image stream apart", 19)
    guidance = "embedded"
    image_stream = 1
    tiny = "flux"
    transformer_class = "FluxTransformer2DModel"

    def noise(self, pipe: Any, seed: int, resolution: int) -> tuple[torch.Tensor, torch.Generator]:
        """The unit's noise drawn as the pipeline draws it ([C, h, w], C = in_channels / 4),
        then packed into its 2x2 patch tokens: [(h/2)(w/2), 4C]."""
        import torch

        channels = int(pipe.transformer.config.in_channels) // 4
        side = 2 * (resolution // (int(pipe.vae_scale_factor) * 2))
        generator = torch.Generator("cpu").manual_seed(int(seed))
        noise = torch.randn((1, channels, side, side), generator=generator, dtype=torch.float32)
        packed = type(pipe)._pack_latents(noise, 1, channels, side, side)
        return packed[0], generator

    def encode_images(self, pipe: Any, pixels: torch.Tensor) -> torch.Tensor:
        """``(z - shift_factor) * scaling_factor``, packed into 2x2 patch tokens as the
        pipeline's latents are: [N, (h/2)(w/2), 4C]."""
        z = super().encode_images(pipe, pixels)
        n, channels, height, width = z.shape
        return type(pipe)._pack_latents(z, n, channels, height, width)

    def sweep_hooks(self, folder: Path | None) -> list[str]:
        """Every double-stream block, then every single-stream block."""
        config = read_config(folder, self.denoiser) or {}
        single = int(config.get("num_single_layers", 38))
        singles = [f"transformer.single_transformer_blocks.{i}" for i in range(single)]
        return [*super().sweep_hooks(folder), *singles]

    def geometry(self, folder: Path | None, resolution: int, hook: str) -> Geometry | None:
        config = read_config(folder, self.denoiser)
        if config is None or folder is None:
            return None
        latent = resolution // vae_scale(folder)
        width = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
        return Geometry(
            h_shape=((latent // 2) ** 2, width),  # 2x2 packing, patch 1
            params=float(safetensors_params(folder / self.denoiser)),
            latent_area=latent * latent,
            cfg_capable=False,
        )

    def text_parts(
        self, config: dict[str, Any], seed: int, words: tuple[str, ...], clip: Any
    ) -> dict[str, Any]:
        return {
            "text_encoder": parts.clip_encoder(config["text_encoder"], seed + 2, projection=False),
            "tokenizer": clip,
            "text_encoder_2": parts.t5_encoder(config["text_encoder_2"], seed + 3),
            "tokenizer_2": parts.t5_tokenizer(words),
        }


# the tiny pipeline's denoiser
TINY_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1, "in_channels": 16, "num_layers": 2, "num_single_layers": 2,
    "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32,
    "pooled_projection_dim": 16, "guidance_embeds": True, "axes_dims_rope": [4, 6, 6],
}  # fmt: skip
TINY_FLOW: dict[str, Any] = {
    "t5_key": "text_encoder_2", "latent_channels": 4, "vae_scaling": (0.1159, 0.3611),
    "scheduler": {"shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
                  "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096},
}  # fmt: skip

Flux.tiny_transformer = TINY_TRANSFORMER
Flux.tiny_flow = TINY_FLOW

ADAPTERS = (Flux(),)
