"""The U-Net families: Stable Diffusion 1.x / 2.x, SDXL and Latent Consistency Models.

Their default hook is ``unet.mid_block``: the U-Net's bottleneck, the h-space in which
semantic directions were first found (Kwon et al., "Diffusion models already have a semantic
latent space"), one [C, h, w] tensor per sample at every step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditkit.models.adapters.base import (
    DefaultHook,
    Geometry,
    ModelAdapter,
    read_config,
    safetensors_params,
    vae_scale,
)

REFERENCE_PARAMS = 860e6
"""An SD 1.5-sized U-Net, the plan's assumption when the model folder cannot tell."""


class UNetAdapter(ModelAdapter):
    """What the U-Net families share: CFG doubling unless the U-Net embeds the guidance scale
    (``time_cond_proj_dim``: LCM), the mid block as h, noise of [C, h, w]."""

    denoiser = "unet"
    hook = DefaultHook("unet.mid_block", "the U-Net's bottleneck, where h-space was found")
    scales_model_input = True

    def uses_cfg(self, pipe: Any, guidance_scale: float) -> bool:
        unet = getattr(pipe, "unet", None)
        distilled = unet is not None and unet.config.get("time_cond_proj_dim") is not None
        return not distilled and self.guidance == "cfg" and guidance_scale > 1.0

    def sweep_hooks(self, folder: Path | None) -> list[str]:
        """Every down block, the mid block and every up block, in the order h passes them."""
        unet = read_config(folder, "unet") or {}
        down = len(unet.get("down_block_types") or [0] * 4)
        up = len(unet.get("up_block_types") or [0] * 4)
        return [
            *(f"unet.down_blocks.{i}" for i in range(down)),
            "unet.mid_block",
            *(f"unet.up_blocks.{i}" for i in range(up)),
        ]

    def geometry(self, folder: Path | None, resolution: int, hook: str) -> Geometry | None:
        unet = read_config(folder, "unet")
        if unet is None or folder is None:
            return None
        latent = resolution // vae_scale(folder)
        side = max(1, latent // (2 ** (len(unet.get("down_block_types", [])) - 1)))
        channels = int(unet.get("block_out_channels", [1280])[-1])
        distilled = unet.get("time_cond_proj_dim") is not None
        return Geometry(
            h_shape=(channels, side, side),
            params=float(safetensors_params(folder / "unet")) or REFERENCE_PARAMS,
            latent_area=latent * latent,
            cfg_capable=not distilled and self.guidance == "cfg",
        )


class StableDiffusion(UNetAdapter):
    family = "stable-diffusion"
    title = "SD 1.x / 2.x"
    pipeline_classes = ("StableDiffusionPipeline",)
    tiny = "sd"

    def load_kwargs(self) -> dict[str, Any]:
        return {"safety_checker": None, "requires_safety_checker": False}


class LatentConsistency(UNetAdapter):
    family = "lcm"
    title = "LCM"
    pipeline_classes = ("LatentConsistencyModelPipeline",)
    guidance = "distilled"
    scales_model_input = False  # its pipeline feeds the latent to the U-Net as it is
    tiny = "lcm"


class StableDiffusionXL(UNetAdapter):
    family = "sdxl"
    title = "SDXL"
    pipeline_classes = ("StableDiffusionXLPipeline",)
    tiny = "sdxl"


ADAPTERS = (StableDiffusion(), LatentConsistency(), StableDiffusionXL())
