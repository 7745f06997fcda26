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
* Tokenizer: byte-level BPE CLIP tokenizer (see
  :func:`auditkit.models.tokenizer.build_clip_tokenizer`), 850 tokens with :data:`DEFAULT_WORDS`;
  the same tokenizer serves as sdxl's ``tokenizer_2``.

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

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from auditkit.models._tiny_configs import (
    SEED_OFFSETS,
    scheduler_config,
    text_config,
    unet_config,
    vae_config,
)
from auditkit.models.adapters._tiny_parts import seeded
from auditkit.models.tokenizer import (
    DEFAULT_MODEL_MAX_LENGTH,
    build_clip_tokenizer,
    normalize_words,
    plan_tokenizer,
)

if TYPE_CHECKING:
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline

UNetKind = Literal["sd", "lcm", "sdxl"]
"""The U-Net kinds this module builds itself: Stable Diffusion 1.x style, LCM, SDXL."""
TinyKind = str
"""Which tiny pipeline to build: a U-Net kind, or the ``tiny`` of a transformer family's
model adapter (``pixart``, ``sd3``, ``flux``: the adapter builds it)."""

UNET_KINDS: tuple[UNetKind, ...] = get_args(UNetKind)
TINY_KINDS = UNET_KINDS
"""The U-Net kinds (the transformer families' are in :func:`tiny_kinds`)."""


def tiny_kinds() -> tuple[TinyKind, ...]:
    """All supported kinds, in a stable order: the U-Net kinds, then the adapters'."""
    from auditkit.models.adapters import adapters

    extra = [a.tiny for a in adapters().values() if a.tiny and a.tiny not in UNET_KINDS]
    return (*UNET_KINDS, *extra)


PIPELINE_CLASS_NAMES: dict[UNetKind, str] = {
    "sd": "StableDiffusionPipeline",
    "lcm": "LatentConsistencyModelPipeline",
    "sdxl": "StableDiffusionXLPipeline",
}
"""The diffusers pipeline class that each kind builds (and ``from_pretrained`` returns)."""

BUILD_VERSION = 1
"""Bump when the build procedure changes in a way the fingerprint would not notice."""

FINGERPRINT_KEY = "_auditkit_tiny"
"""Private key added to ``model_index.json``; diffusers ignores keys starting with ``_``."""

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


def _build_spec(
    kind: TinyKind, seed: int, words: tuple[str, ...], model_max_length: int
) -> dict[str, Any]:
    """Everything that determines the built weights and files, as JSON-able data.

    Library versions come from package metadata, so checking a cached build does not import
    torch or diffusers.
    """
    if kind not in UNET_KINDS:
        return {
            "build_version": BUILD_VERSION,
            "kind": kind,
            "seed": seed,
            "words": list(words),
            "components": _adapter(kind).tiny_config(words),
            "versions": {name: _version(name) for name in ("torch", "diffusers", "transformers")},
        }
    plan = plan_tokenizer(words)
    scheduler_class, scheduler_settings = scheduler_config(kind)
    return {
        "build_version": BUILD_VERSION,
        "kind": kind,
        "seed": seed,
        "words": list(words),
        "model_max_length": model_max_length,
        "unet": unet_config(kind),
        "vae": vae_config(),
        "text": text_config(plan, model_max_length),
        "scheduler": [scheduler_class, scheduler_settings],
        "seed_offsets": SEED_OFFSETS,
        "versions": {name: _version(name) for name in ("torch", "diffusers", "transformers")},
    }


def _adapter(kind: TinyKind) -> Any:
    """The model adapter that builds the tiny ``kind``."""
    from auditkit.models.adapters import adapters

    for adapter in adapters().values():
        if adapter.tiny == kind:
            return adapter
    raise ValueError(f"unknown tiny pipeline kind {kind!r}; expected one of {tiny_kinds()}")


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
    if kind not in UNET_KINDS:
        return _adapter(kind).tiny_pipeline(
            spec["components"], seed, tuple(spec["words"]), tokenizer_dir
        )
    offsets: dict[str, int] = spec["seed_offsets"]

    with seeded(seed + offsets["unet"]):
        unet = UNet2DConditionModel(**spec["unet"])
    with seeded(seed + offsets["vae"]):
        vae = AutoencoderKL(**spec["vae"])
    text_config = CLIPTextConfig(**spec["text"])
    with seeded(seed + offsets["text_encoder"]):
        text_encoder = CLIPTextModel(text_config)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    scheduler_class, scheduler_settings = spec["scheduler"]
    scheduler = getattr(diffusers, scheduler_class)(**scheduler_settings)

    components: dict[str, Any] = {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": scheduler,
    }
    if kind == "sdxl":
        with seeded(seed + offsets["text_encoder_2"]):
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
    if kind not in tiny_kinds():
        raise ValueError(f"unknown tiny pipeline kind {kind!r}; expected one of {tiny_kinds()}")
    out_dir = Path(out_dir)
    normalized = normalize_words(words)
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
        if kind in UNET_KINDS:
            build_clip_tokenizer(tokenizer_dir, normalized, DEFAULT_MODEL_MAX_LENGTH)
        pipeline = _make_pipeline(spec, tokenizer_dir)
        built = staging / "pipeline"
        pipeline.save_pretrained(str(built), safe_serialization=True)
        # Rewrite the CLIP tokenizer folders so they carry vocab.json + merges.txt too.
        for name in ("tokenizer", "tokenizer_2") if kind in UNET_KINDS else ():
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
