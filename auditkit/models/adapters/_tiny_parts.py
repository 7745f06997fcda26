"""Parts the transformer families' tiny pipelines share: a T5 tokenizer and encoder, CLIP text
encoders, a KL VAE with the real 8x downsampling; built offline from configs, random weights.

Configs are plain data (the tiny build fingerprints them); :func:`seeded` initialises each
component from its own seed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

CLIP_LENGTH = 77
"""Tokens of a tiny CLIP prompt (as the real CLIP encoders')."""
T5_MAX_LENGTH = 16
"""Tokens of the tiny T5 prompt (the pipelines pad or cut the T5 sequence to it)."""
PRINTABLE = [chr(i) for i in range(33, 127)]


def t5_config(vocab_size: int, width: int = 32) -> dict[str, Any]:
    """A two-layer T5 encoder of ``width`` (the real ones' gated-GELU feed-forward)."""
    return {
        "vocab_size": vocab_size,
        "d_model": width,
        "d_ff": 2 * width,
        "d_kv": 8,
        "num_heads": 4,
        "num_layers": 2,
        "relative_attention_num_buckets": 8,
        "feed_forward_proj": "gated-gelu",
    }


def clip_config(words: Sequence[str], width: int, max_length: int) -> dict[str, Any]:
    """A two-layer CLIP text encoder of ``width`` (with a projection of the same width) for the
    byte-level tokenizer of ``words`` (:func:`clip_tokenizer`)."""
    from auditkit.models.tokenizer import BOS_TOKEN, EOS_TOKEN, plan_tokenizer

    vocab = plan_tokenizer(words).vocab
    return {
        "vocab_size": len(vocab),
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": max_length,
        "projection_dim": width,
        "bos_token_id": vocab[BOS_TOKEN],
        "eos_token_id": vocab[EOS_TOKEN],
        "pad_token_id": vocab[EOS_TOKEN],
    }


def vae_config(latent_channels: int, **extra: Any) -> dict[str, Any]:
    """A four-level KL VAE (``vae_scale_factor`` 8, as the real ones) of 8 channels."""
    return {
        "block_out_channels": [8, 8, 8, 8],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "layers_per_block": 1,
        "latent_channels": latent_channels,
        "norm_num_groups": 4,
        "sample_size": 64,
        **extra,
    }


def t5_vocab(words: Sequence[str]) -> list[tuple[str, float]]:
    """A Unigram vocabulary in which every word (and its capitalised form) is one piece and
    every printable ASCII character is a piece too, so no ASCII text maps to ``<unk>``."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    for word in words:
        vocab += [("\u2581" + word, -1.0), ("\u2581" + word.capitalize(), -1.5)]
    vocab += [(c, -5.0) for c in PRINTABLE]
    return list(dict(vocab).items())


def t5_tokenizer(words: Sequence[str]) -> Any:
    """A T5 tokenizer (the class T5 pipelines load) from a word list, without sentencepiece."""
    from transformers import T5Tokenizer  # the fast (tokenizers) class in transformers 5

    return T5Tokenizer(vocab=t5_vocab(words), extra_ids=0, model_max_length=T5_MAX_LENGTH)


def clip_tokenizer(words: Sequence[str], max_length: int, folder: Path) -> Any:
    """The byte-level CLIP tokenizer auditkit writes for its U-Net pipelines, loaded back."""
    from transformers import CLIPTokenizer

    from auditkit.models.tokenizer import build_clip_tokenizer

    build_clip_tokenizer(folder, words, max_length)
    return CLIPTokenizer.from_pretrained(str(folder))


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for one component without disturbing the caller's RNG."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def t5_encoder(config: dict[str, Any], seed: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    with seeded(seed):
        return T5EncoderModel(T5Config(**config)).eval()


def clip_encoder(config: dict[str, Any], seed: int, *, projection: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    with seeded(seed):
        return cls(CLIPTextConfig(**config)).eval()


def vae(config: dict[str, Any], seed: int) -> Any:
    return model("AutoencoderKL", config, seed)


def model(class_name: str, config: dict[str, Any], seed: int) -> Any:
    """diffusers' ``class_name`` built from ``config`` with weights seeded from ``seed``."""
    import diffusers

    with seeded(seed):
        return getattr(diffusers, class_name)(**config).eval()


def flow_config(
    words: Sequence[str],
    transformer: dict[str, Any],
    *,
    t5_key: str,
    latent_channels: int,
    vae_scaling: tuple[float, float],
    scheduler: dict[str, Any],
) -> dict[str, Any]:
    """A rectified-flow family's tiny config (SD3, FLUX): its ``transformer``, a CLIP text
    encoder of width 16, T5 of width 32 (under ``t5_key``), a KL VAE of ``latent_channels``
    without quant convs (``vae_scaling``: its shift and scaling factors) and ``scheduler``."""
    shift, scaling = vae_scaling
    return {
        "transformer": dict(transformer),
        "text_encoder": clip_config(words, 16, CLIP_LENGTH),
        t5_key: t5_config(len(t5_vocab(words)), width=32),
        "vae": vae_config(
            latent_channels,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=shift,
            scaling_factor=scaling,
        ),
        "scheduler": scheduler,
    }


def flow_pipeline(
    pipeline: str, transformer: str, config: dict[str, Any], seed: int, **text: Any
) -> Any:
    """diffusers' rectified-flow ``pipeline`` (SD3, FLUX) from a tiny ``config``: its
    ``transformer`` class (seed), a flow-matching scheduler, the VAE (seed + 1) and the text
    encoders and tokenizers in ``text``."""
    import diffusers

    return getattr(diffusers, pipeline)(
        transformer=model(transformer, config["transformer"], seed),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**config["scheduler"]),
        vae=vae(config["vae"], seed + 1),
        **text,
    )
