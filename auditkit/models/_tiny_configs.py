"""The component configs of the tiny pipelines (U-Net, VAE, text encoder, scheduler).

Pure data, computed without torch: :mod:`auditkit.models.tiny` fingerprints them and builds
the pipelines from them. Their sizes are described in that module's docstring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditkit.models.tokenizer import BOS_TOKEN, EOS_TOKEN, TokenizerPlan

if TYPE_CHECKING:
    from auditkit.models.tiny import TinyKind

# Offsets added to the seed before each component is initialised, so that components with the
# same shapes (the two sdxl text encoders) do not get identical weights.
SEED_OFFSETS: dict[str, int] = {"unet": 0, "vae": 1, "text_encoder": 2, "text_encoder_2": 3}

# Scaled-linear betas of Stable Diffusion; shared by all schedulers.
SD_BETAS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def unet_config(kind: TinyKind) -> dict[str, Any]:
    """U-Net config: diffusers' own test-sized model, with a real cross-attention mid block."""
    config: dict[str, Any] = {
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": [32, 64],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "cross_attention_dim": 32,
        "attention_head_dim": [2, 4],
        "norm_num_groups": 8,
    }
    if kind == "lcm":
        config["time_cond_proj_dim"] = 32
    elif kind == "sdxl":
        time_embed_dim = 8
        config.update(
            cross_attention_dim=64,  # 32 (text_encoder) + 32 (text_encoder_2)
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_embed_dim,
            # pooled text_embeds (projection_dim 32) + 6 time ids, each embedded to 8 dims
            projection_class_embeddings_input_dim=32 + 6 * time_embed_dim,
        )
    return config


def vae_config() -> dict[str, Any]:
    """Two-level AutoencoderKL: 4 latent channels, ``vae_scale_factor == 2``."""
    return {
        "sample_size": 32,
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": [32, 64],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
        "norm_num_groups": 8,
    }


def text_config(plan: TokenizerPlan, model_max_length: int) -> dict[str, Any]:
    """CLIPTextConfig kwargs matched to the tokenizer (vocab size, special ids, max length)."""
    eos = plan.vocab[EOS_TOKEN]
    return {
        "vocab_size": len(plan.vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": model_max_length,
        "projection_dim": 32,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "bos_token_id": plan.vocab[BOS_TOKEN],
        "eos_token_id": eos,
        "pad_token_id": eos,
    }


def scheduler_config(kind: TinyKind) -> tuple[str, dict[str, Any]]:
    """Scheduler class name and config: DDIM (sd), LCM (lcm), Euler (sdxl), all SD betas."""
    if kind == "sd":
        return "DDIMScheduler", {
            **SD_BETAS,
            "clip_sample": False,
            "set_alpha_to_one": False,
            "steps_offset": 1,
        }
    if kind == "lcm":
        return "LCMScheduler", {
            **SD_BETAS,
            "original_inference_steps": 50,
            "clip_sample": False,
            "set_alpha_to_one": True,
            "timestep_spacing": "leading",
        }
    return "EulerDiscreteScheduler", {
        **SD_BETAS,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "interpolation_type": "linear",
    }
