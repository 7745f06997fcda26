"""Tiny offline pipelines: build, load, generate, tokenize, determinism, idempotence."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from auditkit.models.tiny import (  # noqa: E402
    DEFAULT_WORDS,
    FINGERPRINT_KEY,
    build_tiny_pipeline,
    tiny_pipeline_path,
)
from auditkit.models.tokenizer import build_clip_tokenizer  # noqa: E402

PROMPTS = ["a photo of a doctor", "a photo of a nurse"]
EXPECTED_CLASS = {
    "sd": "StableDiffusionPipeline",
    "lcm": "LatentConsistencyModelPipeline",
    "sdxl": "StableDiffusionXLPipeline",
}
EXPECTED_SCHEDULER = {
    "sd": "DDIMScheduler",
    "lcm": "LCMScheduler",
    "sdxl": "EulerDiscreteScheduler",
}
# U-Net batch seen by the mid block for 2 prompts: CFG doubles it, except for LCM.
EXPECTED_MID_BATCH = {"sd": 4, "lcm": 2, "sdxl": 4}


def _unet_sha256(folder: Path) -> str:
    data = (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", ["sd", "lcm", "sdxl"])
def test_pipeline_loads_and_generates(tiny_pipeline_dirs: dict[str, Path], kind: str) -> None:
    folder = tiny_pipeline_dirs[kind]
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(folder.rglob("*.bin")), "weights must be saved as safetensors"

    pipe = diffusers.DiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe).__name__ == EXPECTED_CLASS[kind]
    assert type(pipe.scheduler).__name__ == EXPECTED_SCHEDULER[kind]
    assert type(pipe.unet.mid_block).__name__ == "UNetMidBlock2DCrossAttn"

    shapes: list[tuple[int, ...]] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        shapes.append(tuple(output.shape))

    handle = pipe.unet.mid_block.register_forward_hook(hook)
    try:
        result = pipe(
            prompt=PROMPTS,
            num_inference_steps=2,
            height=32,
            width=32,
            output_type="latent",
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        handle.remove()

    latents = result.images
    assert tuple(latents.shape) == (2, 4, 16, 16)
    assert torch.isfinite(latents).all()
    assert shapes == [(EXPECTED_MID_BATCH[kind], 64, 8, 8)] * 2


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_tokenizers_round_trip_words(tiny_pipeline_dirs: dict[str, Path], kind: str) -> None:
    folder = tiny_pipeline_dirs[kind]
    names = ["tokenizer", "tokenizer_2"] if kind == "sdxl" else ["tokenizer"]
    for name in names:
        assert (folder / name / "vocab.json").is_file()
        assert (folder / name / "merges.txt").is_file()
        tok = transformers.CLIPTokenizer.from_pretrained(folder / name)
        encoder = "text_encoder" if name == "tokenizer" else "text_encoder_2"
        config = json.loads((folder / encoder / "config.json").read_text())
        assert config["vocab_size"] == len(tok)
        assert config["max_position_embeddings"] == tok.model_max_length == 32
        assert config["eos_token_id"] == tok.eos_token_id == len(tok) - 1

        for word in DEFAULT_WORDS:
            ids = tok(word, add_special_tokens=False)["input_ids"]
            assert len(ids) == 1, (word, tok.convert_ids_to_tokens(ids))
            assert tok.decode(ids) == word

        # Unknown words fall back to characters, never to <|endoftext|> (= unk).
        for text in ["xylophone", "zebra-crossing 42", "café"]:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert len(ids) > 1
            assert tok.eos_token_id not in ids
            assert tok.decode(ids).replace(" ", "") == text.replace(" ", "")

        padded = tok(PROMPTS, padding="max_length", max_length=tok.model_max_length)
        assert all(len(ids) == 32 for ids in padded["input_ids"])
        assert padded["input_ids"][0][:6] == [
            tok.bos_token_id,
            *tok.convert_tokens_to_ids(["a</w>", "photo</w>", "of</w>", "a</w>", "doctor</w>"]),
        ]


def test_build_clip_tokenizer_custom_words(tmp_path: Path) -> None:
    words = ["banana", "aaaa", "mississippi", "a", "an", "ana", "nan", "Banana", "Doctor "]
    tok = build_clip_tokenizer(tmp_path / "tok", words, model_max_length=16)
    assert tok.model_max_length == 16
    for word in ["banana", "aaaa", "mississippi", "a", "an", "ana", "nan", "doctor"]:
        assert tok.tokenize(word) == [word + "</w>"]
    assert tok.tokenize("DOCTOR") == ["doctor</w>"]
    assert len(tok.tokenize("bananas")) > 1
    reloaded = transformers.CLIPTokenizer.from_pretrained(tmp_path / "tok")
    assert reloaded("nan banana")["input_ids"] == tok("nan banana")["input_ids"]

    with pytest.raises(ValueError, match="ice-cream"):
        build_clip_tokenizer(tmp_path / "bad", ["ice-cream"])


def test_build_is_deterministic_idempotent_and_replaces_stale(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path
) -> None:
    reference = _unet_sha256(tiny_pipeline_dirs["sd"])
    folder = tmp_path / "sd"

    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_pipeline("sd", folder, seed=1)
    assert torch.equal(torch.rand(3), expected_draw), "building must not disturb the caller's RNG"
    assert _unet_sha256(folder) != reference

    # A different fingerprint in an earlier tiny build is replaced; same seed -> same bytes.
    build_tiny_pipeline("sd", folder, seed=0)
    assert _unet_sha256(folder) == reference
    index = json.loads((folder / "model_index.json").read_text())
    assert index[FINGERPRINT_KEY]["seed"] == 0

    # Same fingerprint: nothing is rewritten.
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert build_tiny_pipeline("sd", folder, seed=0) == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging left behind"


def test_tiny_pipeline_path_reuses_cache(tiny_pipeline_dirs: dict[str, Path]) -> None:
    for kind, folder in tiny_pipeline_dirs.items():
        assert folder.name == f"tiny-{kind}"
        stamp = (folder / "model_index.json").stat().st_mtime_ns
        assert tiny_pipeline_path(kind, folder.parent) == folder  # type: ignore[arg-type]
        assert (folder / "model_index.json").stat().st_mtime_ns == stamp


def test_refuses_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        build_tiny_pipeline("sd9", tmp_path / "x")
    with pytest.raises(ValueError, match="letters"):
        build_tiny_pipeline("sd", tmp_path / "x", words=["don't"])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not a pipeline")
    with pytest.raises(FileExistsError):
        build_tiny_pipeline("lcm", foreign)
    assert (foreign / "keep.txt").read_text() == "not a pipeline"
