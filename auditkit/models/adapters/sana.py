"""SANA: a linear-attention DiT (``SanaTransformer2DModel``) reading Gemma-2 text through
cross-attention; a deep-compression autoencoder (32 latent channels, 32x downsampling), patch
1, classifier-free guidance.

Default hook: the middle transformer block (``transformer.transformer_blocks.10`` of 20 in
SANA 1600M). Its output is the image tokens alone, [B, tokens, 2240]; h is their mean, as for
PixArt, whose design SANA follows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditkit.models.adapters import _tiny_parts as parts
from auditkit.models.adapters.base import BLOCKS, DefaultHook, TransformerAdapter

GEMMA_LENGTH = 16
"""Tokens of the tiny Gemma prompt (the pipeline pads or cuts to it: ``max_sequence_length``)."""


class Sana(TransformerAdapter):
    family, title = "sana", "SANA"
    pipeline_classes = ("SanaPipeline",)
    hook = DefaultHook(BLOCKS + "{middle}", "the middle DiT block: image tokens only", 20)
    tiny = "sana"

    def call_kwargs(self, pipe: Any) -> dict[str, Any]:
        # the spec's resolution exactly, and the prompt as written: no aspect bucket, no
        # instruction preamble (complex_human_instruction), no caption cleaning
        return {
            "use_resolution_binning": False,
            "complex_human_instruction": None,
            "clean_caption": False,
        }

    def tiny_config(self, words: tuple[str, ...]) -> dict[str, Any]:
        levels = 6  # DC-AE f32: 2 ** (6 - 1) = 32
        return {
            "transformer": dict(TINY_TRANSFORMER),
            "text_encoder": {
                "vocab_size": len(_gemma_vocab(words)[0]),
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "head_dim": 8,
                "max_position_embeddings": 512,
                "pad_token_id": 0,
                "bos_token_id": 2,
                "eos_token_id": 1,
                "attn_implementation": "eager",
            },
            "vae": {
                "in_channels": 3,
                "latent_channels": 32,
                "attention_head_dim": 4,
                "encoder_block_types": ["ResBlock"] * levels,
                "decoder_block_types": ["ResBlock"] * levels,
                # the decoder's last width must be a multiple of the latent channels
                "encoder_block_out_channels": [8, 8, 8, 8, 16, 32],
                "decoder_block_out_channels": [8, 8, 8, 8, 16, 32],
                "encoder_layers_per_block": [1] * levels,
                "decoder_layers_per_block": [1] * levels,
                "encoder_qkv_multiscales": [[]] * levels,
                "decoder_qkv_multiscales": [[]] * levels,
                "downsample_block_type": "conv",
                "upsample_block_type": "interpolate",
                "decoder_norm_types": "rms_norm",
                "decoder_act_fns": "silu",
                "scaling_factor": 0.41407,
            },
            "scheduler": {
                "flow_shift": 3.0,
                "use_flow_sigmas": True,
                "prediction_type": "flow_prediction",
            },
        }

    def tiny_pipeline(
        self, config: dict[str, Any], seed: int, words: tuple[str, ...], workdir: Path
    ) -> Any:
        from diffusers import DPMSolverMultistepScheduler, SanaPipeline
        from transformers import Gemma2Config, Gemma2Model, GemmaTokenizer

        vocab, merges = _gemma_vocab(words)
        tokenizer = GemmaTokenizer(
            vocab=vocab,
            merges=merges,
            add_bos_token=True,
            model_max_length=GEMMA_LENGTH,
            padding_side="right",
        )
        with parts.seeded(seed + 2):
            text_encoder = Gemma2Model(Gemma2Config(**config["text_encoder"])).eval()
        vae_config = dict(config["vae"])
        for key in ("encoder_qkv_multiscales", "decoder_qkv_multiscales"):
            vae_config[key] = tuple(tuple(x) for x in vae_config[key])
        return SanaPipeline(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=parts.model("AutoencoderDC", vae_config, seed + 1),
            transformer=parts.model("SanaTransformer2DModel", config["transformer"], seed),
            scheduler=DPMSolverMultistepScheduler(**config["scheduler"]),
        )


def _gemma_vocab(words: tuple[str, ...]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A Gemma-style BPE vocabulary ('▁' marks a space, byte fallback) in which every word is
    one token with and without its leading '▁', and its merges."""
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in ["\u2581", *parts.PRINTABLE]:
        vocab.setdefault(char, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        current = word[0]
        for char in word[1:]:
            merges.append((current, char))
            current += char
            vocab.setdefault(current, len(vocab))
        merges.append(("\u2581", word))
        vocab.setdefault("\u2581" + word, len(vocab))
    return vocab, list(dict.fromkeys(merges))


# the tiny pipeline's denoiser
TINY_TRANSFORMER: dict[str, Any] = {
    "in_channels": 32, "out_channels": 32, "num_attention_heads": 2, "attention_head_dim": 8,
    "num_layers": 2, "num_cross_attention_heads": 2, "cross_attention_head_dim": 8,
    "cross_attention_dim": 16, "caption_channels": 16, "sample_size": 2, "patch_size": 1,
}  # fmt: skip


ADAPTERS = (Sana(),)
