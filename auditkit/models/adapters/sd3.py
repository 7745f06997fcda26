"""Stable Diffusion 3 and 3.5: an MMDiT denoiser (``SD3Transformer2DModel``) whose joint blocks
carry the text and image streams side by side; two CLIP encoders and T5; 16 latent channels,
patch 2, classifier-free guidance.

Default hook: the middle joint block (``transformer.transformer_blocks.12`` of 24 in 3.5
medium, ``.19`` of 38 in large). A joint block returns ``(text tokens, image tokens)``; h is
the image stream's mean over its tokens, so text tokens never enter h.
"""

from __future__ import annotations

from typing import Any

from auditkit.models.adapters import _tiny_parts as parts
from auditkit.models.adapters.base import BLOCKS, DefaultHook, FlowAdapter


class StableDiffusion3(FlowAdapter):
    family, title = "sd3", "SD3 / 3.5"
    pipeline_classes = ("StableDiffusion3Pipeline",)
    hook = DefaultHook(BLOCKS + "{middle}", "the middle joint block's image stream", 24)
    image_stream = 1
    tiny = "sd3"
    transformer_class = "SD3Transformer2DModel"

    def text_parts(
        self, config: dict[str, Any], seed: int, words: tuple[str, ...], clip: Any
    ) -> dict[str, Any]:
        text = config["text_encoder"]
        return {
            "text_encoder": parts.clip_encoder(text, seed + 2, projection=True),
            "tokenizer": clip,
            "text_encoder_2": parts.clip_encoder(text, seed + 3, projection=True),
            "tokenizer_2": clip,
            "text_encoder_3": parts.t5_encoder(config["text_encoder_3"], seed + 4),
            "tokenizer_3": parts.t5_tokenizer(words),
        }


# the tiny pipeline's denoiser
TINY_TRANSFORMER: dict[str, Any] = {
    "sample_size": 8, "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 3,
    "attention_head_dim": 8, "num_attention_heads": 2, "joint_attention_dim": 32,
    "caption_projection_dim": 16, "pooled_projection_dim": 32, "pos_embed_max_size": 16,
    "dual_attention_layers": [0], "qk_norm": "rms_norm",
}  # fmt: skip
TINY_FLOW: dict[str, Any] = {
    "t5_key": "text_encoder_3", "latent_channels": 16, "vae_scaling": (0.0609, 1.5305),
    "scheduler": {"shift": 3.0},
}  # fmt: skip

StableDiffusion3.tiny_transformer = TINY_TRANSFORMER
StableDiffusion3.tiny_flow = TINY_FLOW

ADAPTERS = (StableDiffusion3(),)
