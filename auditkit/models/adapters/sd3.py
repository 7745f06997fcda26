"""Stable Diffusion 3 and 3.5: an MMDiT denoiser (``SD3Transformer2DModel``) whose joint blocks
carry the text and image streams side by side; two CLIP encoders and T5; 16 latent channels,
patch 2, classifier-free guidance.

Default hook: the middle joint block (``transformer.transformer_blocks.12`` of 24 in 3.5
medium, ``.19`` of 38 in large). A joint block returns ``(text tokens, image tokens)``; h is
the image stream's mean over its tokens, so text tokens never enter h.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditkit.models.adapters import _tiny_parts as parts
from auditkit.models.adapters.pixart import TransformerAdapter

CLIP_LENGTH = 77


class StableDiffusion3(TransformerAdapter):
    family = "sd3"
    title = "SD3 / 3.5"
    pipeline_classes = ("StableDiffusion3Pipeline",)
    default_hook = "transformer.transformer_blocks.{middle}"
    published_layers = 24
    hook_reason = "the middle joint (MMDiT) block: its image stream, mean-pooled"
    image_stream = 1
    tiny = "sd3"

    def tiny_config(self, words: tuple[str, ...]) -> dict[str, Any]:
        return {
            "transformer": {
                "sample_size": 8,
                "patch_size": 2,
                "in_channels": 16,
                "out_channels": 16,
                "num_layers": 3,
                "attention_head_dim": 8,
                "num_attention_heads": 2,
                "joint_attention_dim": 32,
                "caption_projection_dim": 16,
                "pooled_projection_dim": 32,
                "pos_embed_max_size": 16,
                "dual_attention_layers": [0],
                "qk_norm": "rms_norm",
            },
            "text_encoder": parts.clip_config(words, 16, CLIP_LENGTH),
            "text_encoder_3": parts.t5_config(len(parts.t5_vocab(words)), width=32),
            "vae": parts.vae_config(
                16,
                use_quant_conv=False,
                use_post_quant_conv=False,
                shift_factor=0.0609,
                scaling_factor=1.5305,
            ),
            "scheduler": {"shift": 3.0},
        }

    def tiny_pipeline(
        self, config: dict[str, Any], seed: int, words: tuple[str, ...], workdir: Path
    ) -> Any:
        clip = parts.clip_tokenizer(words, CLIP_LENGTH, workdir / "clip")
        text = config["text_encoder"]
        return parts.flow_pipeline(
            "StableDiffusion3Pipeline",
            "SD3Transformer2DModel",
            config,
            seed,
            text_encoder=parts.clip_encoder(text, seed + 2, projection=True),
            tokenizer=clip,
            text_encoder_2=parts.clip_encoder(text, seed + 3, projection=True),
            tokenizer_2=clip,
            text_encoder_3=parts.t5_encoder(config["text_encoder_3"], seed + 4),
            tokenizer_3=parts.t5_tokenizer(words),
        )


ADAPTERS = (StableDiffusion3(),)
