"""Tiny random-weight text-to-image pipelines, built offline from configs.

Why: the audit pipeline (generate -> hook ``pipe.unet.mid_block`` -> analyse -> report) must be
testable end to end without network access, model downloads or a GPU. This module builds
miniature but structurally faithful diffusers pipelines -- the same classes, the same folder
layout, the same loading path (``DiffusionPipeline.from_pretrained(folder)``) as real checkpoints
-- with random weights, in about a second each on a CPU.

Kinds and their classes:

* ``"sd"``   -- :class:`~diffusers.StableDiffusionPipeline`, DDIM scheduler, classifier-free
  guidance (the U-Net sees a doubled batch when ``guidance_scale > 1``).
* ``"lcm"``  -- :class:`~diffusers.LatentConsistencyModelPipeline`, LCM scheduler; the guidance
  scale is embedded through ``time_cond_proj_dim``, so there is no CFG batch doubling.
* ``"sdxl"`` -- :class:`~diffusers.StableDiffusionXLPipeline`, Euler scheduler, two text encoders
  (the second with a projection) and ``text_time`` added conditioning.

Sizes (shared by all kinds unless noted):

* U-Net: ``block_out_channels=(32, 64)``, ``layers_per_block=1``, one ``DownBlock2D`` and one
  ``CrossAttnDownBlock2D`` (a single 2x downsample), ``UNetMidBlock2DCrossAttn`` mid block,
  ``attention_head_dim=(2, 4)`` (head counts), ``norm_num_groups=8``, ``sample_size=16``;
  ``cross_attention_dim=32`` (``64`` for sdxl = 32 + 32 from the two encoders); lcm adds
  ``time_cond_proj_dim=32``; sdxl adds ``addition_time_embed_dim=8`` and
  ``projection_class_embeddings_input_dim=80`` (32 pooled text dims + 6 time ids x 8).
* VAE: ``AutoencoderKL`` with ``block_out_channels=(32, 64)``, 4 latent channels,
  ``norm_num_groups=8`` -- so ``vae_scale_factor == 2`` and a 32 px image has 16 x 16 latents.
* Text encoders: ``CLIPTextModel`` (sdxl: plus ``CLIPTextModelWithProjection``), hidden size 32,
  2 layers, 4 heads, intermediate size 64, ``projection_dim=32``, ``max_position_embeddings``
  equal to the tokenizer's ``model_max_length`` (32).
* Tokenizer: byte-level BPE CLIP tokenizer (see :func:`build_clip_tokenizer`), 850 tokens with
  :data:`DEFAULT_WORDS`; the same tokenizer serves as sdxl's ``tokenizer_2``.

Mid-block output shape (what the audit hooks), with ``B`` the number of images:

=======  ============  ======================  ======================
kind     U-Net batch   32 px (16x16 latents)   64 px (32x32 latents)
=======  ============  ======================  ======================
sd       2B with CFG   (2B, 64, 8, 8)          (2B, 64, 16, 16)
lcm      B             (B, 64, 8, 8)           (B, 64, 16, 16)
sdxl     2B with CFG   (2B, 64, 8, 8)          (2B, 64, 16, 16)
=======  ============  ======================  ======================

The default resolution of every kind is 32 px (``unet.sample_size * vae_scale_factor``).

Measured on 2 CPU threads (torch 2.13 CPU, diffusers 0.42), after imports: building and saving
takes about 0.1 s per kind (about 6 MB of weights); loading about 0.1-0.2 s; a 2-step generation
of 4 images takes about 40-55 ms at 32 px and 70-140 ms at 64 px with ``output_type="latent"``
(VAE decoding to PIL adds up to about 50 ms).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline
    from transformers import CLIPTokenizer

TinyKind = Literal["sd", "lcm", "sdxl"]
"""Which tiny pipeline to build: Stable Diffusion 1.x style, Latent Consistency, or SDXL."""

TINY_KINDS: tuple[TinyKind, ...] = get_args(TinyKind)
"""All supported kinds, in a stable order."""

PIPELINE_CLASS_NAMES: dict[TinyKind, str] = {
    "sd": "StableDiffusionPipeline",
    "lcm": "LatentConsistencyModelPipeline",
    "sdxl": "StableDiffusionXLPipeline",
}
"""The diffusers pipeline class that each kind builds (and ``from_pretrained`` returns)."""

BUILD_VERSION = 1
"""Bump when the build procedure changes in a way the fingerprint would not notice."""

FINGERPRINT_KEY = "_auditkit_tiny"
"""Private key added to ``model_index.json``; diffusers ignores keys starting with ``_``."""

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
MERGES_HEADER = "#version: 0.2"
DEFAULT_MODEL_MAX_LENGTH = 32

DEFAULT_WORDS: tuple[str, ...] = (
    # prompt scaffolding
    "a", "an", "the", "of", "in", "at", "with", "and", "on", "photo", "portrait", "picture",
    "image", "face", "close", "up", "headshot",
    # people and groups
    "person", "people", "man", "woman", "men", "women", "boy", "girl", "male", "female",
    "he", "she", "his", "her", "they",
    # age
    "young", "old", "elderly", "child", "adult",
    # appearance / ethnicity descriptors
    "white", "black", "asian", "indian", "latino", "skin", "light", "dark",
    # occupations
    "doctor", "nurse", "engineer", "teacher", "ceo", "scientist", "lawyer", "pilot", "chef",
    "cook", "farmer", "artist", "programmer", "secretary", "cleaner", "janitor", "firefighter",
    "police", "officer", "soldier", "judge", "professor", "student", "manager", "worker",
    "housekeeper", "receptionist", "librarian", "designer", "accountant", "cashier", "baker",
    "mechanic", "surgeon", "dancer", "singer",
    # traits
    "smart", "kind", "strong", "beautiful", "happy", "rich", "poor", "successful",
)  # fmt: skip
"""Words that the tiny tokenizer encodes as single tokens (89 common bias-audit words)."""

_WORD_RE = re.compile(r"[a-z]+")

# Offsets added to the seed before each component is initialised, so that components with the
# same shapes (the two sdxl text encoders) do not get identical weights.
_SEED_OFFSETS: dict[str, int] = {"unet": 0, "vae": 1, "text_encoder": 2, "text_encoder_2": 3}

# Scaled-linear betas of Stable Diffusion; shared by all schedulers.
_SD_BETAS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP map from each byte to a printable unicode character.

    CLIP's byte-level BPE works on these characters, not on raw bytes; printable ASCII maps to
    itself. Having all 256 in the vocabulary means *any* UTF-8 text tokenizes without ``unk``.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(0xA1, 0xAC + 1),
        *range(0xAE, 0xFF + 1),
    ]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes, strict=True)}


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Segment one pre-tokenized word exactly like CLIP's reference BPE.

    The last character carries the end-of-word marker; the lowest-ranked adjacent pair is merged
    (all its occurrences, left to right) until no known merge applies.
    """
    parts = [*word[:-1], word[-1] + END_OF_WORD]
    while len(parts) > 1:
        pairs = set(itertools.pairwise(parts))
        best = min(pairs, key=lambda pair: ranks.get(pair, len(ranks)))
        if best not in ranks:
            break
        merged: list[str] = []
        i = 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def _normalize_words(words: Iterable[str]) -> tuple[str, ...]:
    """Lower-case, strip and de-duplicate (first occurrence wins); reject non-letter words.

    Only ``[a-z]+`` words can become a single CLIP token: CLIP's pre-tokenizer splits digits,
    punctuation and apostrophes into separate pieces.
    """
    seen: dict[str, None] = {}
    bad: list[str] = []
    for raw in words:
        word = raw.strip().lower()
        if not _WORD_RE.fullmatch(word):
            bad.append(repr(raw))
        else:
            seen.setdefault(word, None)
    if bad:
        raise ValueError(
            "tiny tokenizer words must be single words of letters a-z; got " + ", ".join(bad)
        )
    return tuple(seen)


@dataclass(frozen=True)
class _TokenizerPlan:
    """Vocabulary and merges of the tiny tokenizer (pure data, computed without torch)."""

    vocab: dict[str, int]
    merges: tuple[tuple[str, str], ...]


def _plan_tokenizer(words: Sequence[str]) -> _TokenizerPlan:
    """Char-level byte BPE vocabulary plus merges that turn each word into one token.

    For each word in order, the current merges are simulated; while the word is still split,
    merges joining its pieces left to right are *appended*. Appended merges have the lowest
    priority, so they never change how earlier words segment (those reach one token using only
    higher-priority merges).
    """
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        for _ in range(len(word) + 1):
            parts = _bpe(word, ranks)
            if len(parts) == 1:
                break
            acc = parts[0]
            for piece in parts[1:]:
                ranks.setdefault((acc, piece), len(ranks))
                acc += piece
        else:  # pragma: no cover - defensive: the construction always converges
            raise RuntimeError(f"could not build BPE merges for {word!r}")
    merges = tuple(sorted(ranks, key=ranks.__getitem__))

    base = list(_bytes_to_unicode().values())
    tokens = [*base, *(ch + END_OF_WORD for ch in base), *("".join(m) for m in merges)]
    tokens += [BOS_TOKEN, EOS_TOKEN]  # EOS last: highest id, as CLIP's pooling expects
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return _TokenizerPlan(vocab=vocab, merges=merges)


def _write_tokenizer_files(out_dir: Path, plan: _TokenizerPlan, model_max_length: int) -> None:
    """Write the classic CLIP tokenizer files (``vocab.json``, ``merges.txt``, configs).

    These are the files every transformers version can load as ``CLIPTokenizer``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(
        json.dumps(plan.vocab, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    merges_lines = [MERGES_HEADER, *(f"{a} {b}" for a, b in plan.merges)]
    (out_dir / "merges.txt").write_text("\n".join(merges_lines) + "\n", encoding="utf-8")
    special = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
    }
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "do_lower_case": True,
        **special,
    }
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps(special, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def build_clip_tokenizer(
    out_dir: Path,
    words: Iterable[str] = (),
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
) -> CLIPTokenizer:
    """Write a tiny CLIP tokenizer to ``out_dir`` and return it, loaded back from disk.

    The vocabulary holds every byte-level character alone and with the end-of-word marker
    ``</w>`` (so any text, ASCII or not, tokenizes without ``unk``), one merge chain per entry of
    ``words`` (so each becomes exactly one token) and the special tokens ``<|startoftext|>`` and
    ``<|endoftext|>`` (which is also ``pad`` and ``unk``, as in Stable Diffusion 1.x).

    Files written: ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``,
    ``special_tokens_map.json`` and (from transformers' own save) ``tokenizer.json``.

    Raises:
        ValueError: a word is not made of letters a-z only.
        RuntimeError: a word does not round-trip to one token (a bug in this module).
    """
    from transformers import CLIPTokenizer

    normalized = _normalize_words(words)
    plan = _plan_tokenizer(normalized)
    out_dir = Path(out_dir)
    _write_tokenizer_files(out_dir, plan, model_max_length)
    tokenizer = CLIPTokenizer.from_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))  # adds tokenizer.json for fast loading
    _write_tokenizer_files(out_dir, plan, model_max_length)  # keep our tokenizer_config.json

    broken = [
        word
        for word in normalized
        if tokenizer(word, add_special_tokens=False)["input_ids"]
        != [plan.vocab[word + END_OF_WORD]]
    ]
    if broken:  # pragma: no cover - would mean our BPE simulation disagrees with tokenizers
        raise RuntimeError(f"tiny tokenizer does not map these words to one token: {broken}")
    return tokenizer


# --------------------------------------------------------------------------------------------
# Component configs
# --------------------------------------------------------------------------------------------


def _unet_config(kind: TinyKind) -> dict[str, Any]:
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


def _vae_config() -> dict[str, Any]:
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


def _text_config(plan: _TokenizerPlan, model_max_length: int) -> dict[str, Any]:
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


def _scheduler_config(kind: TinyKind) -> tuple[str, dict[str, Any]]:
    """Scheduler class name and config: DDIM (sd), LCM (lcm), Euler (sdxl), all SD betas."""
    if kind == "sd":
        return "DDIMScheduler", {
            **_SD_BETAS,
            "clip_sample": False,
            "set_alpha_to_one": False,
            "steps_offset": 1,
        }
    if kind == "lcm":
        return "LCMScheduler", {
            **_SD_BETAS,
            "original_inference_steps": 50,
            "clip_sample": False,
            "set_alpha_to_one": True,
            "timestep_spacing": "leading",
        }
    return "EulerDiscreteScheduler", {
        **_SD_BETAS,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "interpolation_type": "linear",
    }


def _build_spec(
    kind: TinyKind, seed: int, words: tuple[str, ...], model_max_length: int
) -> dict[str, Any]:
    """Everything that determines the built weights and files, as JSON-able data.

    Library versions come from package metadata, so checking a cached build does not import
    torch or diffusers.
    """
    plan = _plan_tokenizer(words)
    scheduler_class, scheduler_config = _scheduler_config(kind)
    return {
        "build_version": BUILD_VERSION,
        "kind": kind,
        "seed": seed,
        "words": list(words),
        "model_max_length": model_max_length,
        "unet": _unet_config(kind),
        "vae": _vae_config(),
        "text": _text_config(plan, model_max_length),
        "scheduler": [scheduler_class, scheduler_config],
        "seed_offsets": _SEED_OFFSETS,
        "versions": {name: _version(name) for name in ("torch", "diffusers", "transformers")},
    }


def _version(package: str) -> str:
    """Installed version of ``package`` (``"unknown"`` if it has no metadata)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _fingerprint(spec: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a build spec."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _read_fingerprint(folder: Path) -> str | None:
    """Fingerprint recorded in ``folder/model_index.json``; ``None`` if absent or unreadable."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = index.get(FINGERPRINT_KEY) if isinstance(index, dict) else None
    value = record.get("fingerprint") if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for one component without disturbing the caller's RNG."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _make_pipeline(spec: dict[str, Any], tokenizer_dir: Path) -> DiffusionPipeline:
    """Instantiate the random-weight pipeline described by ``spec``."""
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    kind: TinyKind = spec["kind"]
    seed: int = spec["seed"]
    offsets: dict[str, int] = spec["seed_offsets"]

    with _seeded(seed + offsets["unet"]):
        unet = UNet2DConditionModel(**spec["unet"])
    with _seeded(seed + offsets["vae"]):
        vae = AutoencoderKL(**spec["vae"])
    text_config = CLIPTextConfig(**spec["text"])
    with _seeded(seed + offsets["text_encoder"]):
        text_encoder = CLIPTextModel(text_config)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    scheduler_class, scheduler_config = spec["scheduler"]
    scheduler = getattr(diffusers, scheduler_class)(**scheduler_config)

    components: dict[str, Any] = {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": scheduler,
    }
    if kind == "sdxl":
        with _seeded(seed + offsets["text_encoder_2"]):
            components["text_encoder_2"] = CLIPTextModelWithProjection(text_config)
        components["tokenizer_2"] = tokenizer
    else:
        components.update(
            safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    # getattr: diffusers' lazy top-level names are dummies to static type checkers.
    pipeline_class: type[DiffusionPipeline] = getattr(diffusers, PIPELINE_CLASS_NAMES[kind])
    return pipeline_class(**components)


def _is_replaceable(folder: Path) -> bool:
    """True if ``folder`` may be overwritten: missing, empty, or an earlier tiny build."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    if not any(folder.iterdir()):
        return True
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(index, dict) and FINGERPRINT_KEY in index


def build_tiny_pipeline(
    kind: TinyKind,
    out_dir: Path,
    *,
    seed: int = 0,
    words: Iterable[str] = DEFAULT_WORDS,
) -> Path:
    """Build a tiny random-weight pipeline and save it as a diffusers folder at ``out_dir``.

    The folder is a normal ``save_pretrained`` output (``.safetensors`` weights) that
    ``DiffusionPipeline.from_pretrained(out_dir)`` loads offline. ``model_index.json`` also
    records, under ``_auditkit_tiny``, a fingerprint of everything that determines the build
    (kind, seed, words, component configs, library versions).

    Idempotent: if ``out_dir`` already holds a build with the same fingerprint it is returned
    untouched. Deterministic: each component is initialised right after
    ``torch.manual_seed(seed + offset)`` (inside a forked RNG, so the caller's RNG state is not
    changed), so the same seed gives byte-identical weight files. The folder is assembled in a
    temporary sibling and renamed into place, so an interrupted or concurrent build never leaves a
    half-written folder that looks complete.

    Raises:
        ValueError: unknown ``kind`` or invalid ``words``.
        FileExistsError: ``out_dir`` exists and is neither empty nor an earlier tiny build.
    """
    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny pipeline kind {kind!r}; expected one of {TINY_KINDS}")
    out_dir = Path(out_dir)
    normalized = _normalize_words(words)
    spec = _build_spec(kind, seed, normalized, DEFAULT_MODEL_MAX_LENGTH)
    fingerprint = _fingerprint(spec)
    if _read_fingerprint(out_dir) == fingerprint:
        return out_dir
    if not _is_replaceable(out_dir):
        raise FileExistsError(
            f"{out_dir} exists and is not a tiny auditkit pipeline; refusing to overwrite it"
        )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        tokenizer_dir = staging / "_tokenizer"
        build_clip_tokenizer(tokenizer_dir, normalized, DEFAULT_MODEL_MAX_LENGTH)
        pipeline = _make_pipeline(spec, tokenizer_dir)
        built = staging / "pipeline"
        pipeline.save_pretrained(str(built), safe_serialization=True)
        # Rewrite the tokenizer folders so they carry vocab.json + merges.txt too.
        for name in ("tokenizer", "tokenizer_2"):
            if (built / name).is_dir():
                build_clip_tokenizer(built / name, normalized, DEFAULT_MODEL_MAX_LENGTH)
        index_path = built / "model_index.json"
        index = json.loads(index_path.read_text(encoding="utf-8"))
        index[FINGERPRINT_KEY] = {
            "fingerprint": fingerprint,
            "kind": kind,
            "seed": seed,
            "build_version": BUILD_VERSION,
        }
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", "utf-8")
        _install(built, out_dir, fingerprint, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _install(built: Path, out_dir: Path, fingerprint: str, staging: Path) -> None:
    """Move ``built`` to ``out_dir``, replacing a stale build; tolerate a concurrent winner."""
    if out_dir.exists():
        if _read_fingerprint(out_dir) == fingerprint:
            return  # another process finished the same build first
        if not _is_replaceable(out_dir):
            raise FileExistsError(
                f"{out_dir} exists and is not a tiny auditkit pipeline; refusing to overwrite it"
            )
        os.replace(out_dir, staging / "old")  # removed with the staging folder
    try:
        os.replace(built, out_dir)
    except OSError:
        if _read_fingerprint(out_dir) != fingerprint:
            raise


def tiny_pipeline_path(kind: TinyKind, cache_dir: Path) -> Path:
    """Folder of the default tiny ``kind`` pipeline under ``cache_dir``, built on first use.

    The folder is ``cache_dir / f"tiny-{kind}"`` (seed 0, :data:`DEFAULT_WORDS`); later calls
    return at once because the build is fingerprinted.
    """
    return build_tiny_pipeline(kind, Path(cache_dir) / f"tiny-{kind}")
