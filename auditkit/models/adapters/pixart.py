"""PixArt-α and PixArt-Σ: a DiT denoiser (``PixArtTransformer2DModel``) reading T5 text through
cross-attention; 4 latent channels, patch 2, classifier-free guidance.

Default hook: the block two thirds of the way down (``transformer.transformer_blocks.18`` of
28). Its output is the image tokens alone, [B, tokens, 1152]; h is their mean (``probe.tokens:
pooled``) or all of them (``full``). On toyworld-dit, a PixArt-style DiT of 8 blocks trained on
the known-answer world, the last third of the blocks ordered the planted rates best, and the
first three worst (the layer sweep in docs/method.md); this default is that measurement carried
over by depth, not a result on a published PixArt model: sweep one before trusting it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditkit.models.adapters import _tiny_parts as parts
from auditkit.models.adapters.base import BLOCKS, DefaultHook, TransformerAdapter


class PixArt(TransformerAdapter):
    family, title = "pixart", "PixArt-α / Σ"
    pipeline_classes = ("PixArtSigmaPipeline", "PixArtAlphaPipeline")
    hook = DefaultHook(
        BLOCKS + "{two_thirds}",
        "two thirds down the DiT: on toyworld-dit its last third orders the planted rates best",
        28,
    )
    tiny = "pixart"
    scales_model_input = True

    def call_kwargs(self, pipe: Any) -> dict[str, Any]:
        # the spec's resolution exactly (binning would move it to a trained aspect bucket),
        # and the prompt as written (caption cleaning needs bs4 and ftfy)
        kwargs: dict[str, Any] = {"use_resolution_binning": False, "clean_caption": False}
        limit = int(getattr(pipe.tokenizer, "model_max_length", 0) or 0)
        if 0 < limit < 300:  # a short text encoder (CLIP in toyworld-dit): its own length
            kwargs["max_sequence_length"] = limit
        return kwargs

    def tiny_config(self, words: tuple[str, ...]) -> dict[str, Any]:
        vocab = len(parts.t5_vocab(words))
        return {
            "transformer": dict(TINY_TRANSFORMER),
            "text_encoder": parts.t5_config(vocab, width=32),
            "vae": parts.vae_config(4),
            "scheduler": {"num_train_timesteps": 1000},
        }

    def tiny_pipeline(
        self, config: dict[str, Any], seed: int, words: tuple[str, ...], workdir: Path
    ) -> Any:
        from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline

        transformer = parts.model("PixArtTransformer2DModel", config["transformer"], seed)
        return PixArtSigmaPipeline(
            tokenizer=parts.t5_tokenizer(words),
            text_encoder=parts.t5_encoder(config["text_encoder"], seed + 2),
            vae=parts.vae(config["vae"], seed + 1),
            transformer=transformer,
            scheduler=DPMSolverMultistepScheduler(**config["scheduler"]),
        )


# the tiny pipeline's denoiser
TINY_TRANSFORMER: dict[str, Any] = {
    "sample_size": 8, "num_layers": 2, "patch_size": 2, "attention_head_dim": 8,
    "num_attention_heads": 3, "caption_channels": 32, "in_channels": 4,
    "cross_attention_dim": 24, "out_channels": 8, "attention_bias": True,
    "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000,
    "norm_type": "ada_norm_single", "norm_elementwise_affine": False, "norm_eps": 1e-6,
    "use_additional_conditions": False,
}  # fmt: skip


ADAPTERS = (PixArt(),)
