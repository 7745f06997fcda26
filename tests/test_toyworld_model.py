"""toyworld as a model: a few training steps of every component, and the shipped checkpoints
and captioner (hashes, offline loading, held-out accuracy). The audits of both checkpoints
are checked against the planted answer in test_toyworld_audits.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from auditkit.provenance import sha256_file
from auditkit.toyworld.build import PACKAGE_CHECKPOINTS, checkpoint_path

ROOT = Path(__file__).resolve().parents[1]


def test_a_few_training_steps_of_every_component(tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    from auditkit.toyworld.build import train_toyworld
    from auditkit.toyworld.train import TrainConfig

    config = TrainConfig(vae_steps=3, steps=3, batch_size=8, warmup_steps=1)
    folders = train_toyworld(tmp_path / "ckpt", config=config, variants=("biased",))
    folder = folders["biased"]
    training = json.loads((folder / "training.json").read_text())
    assert len(training["denoiser"]["loss_curve"]) == 3
    assert training["vae"]["scaling_factor"] != 1.0  # set from the latents
    from auditkit.models.loading import dtype_keyword

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), **{dtype_keyword(): torch.float32})
    assert pipe.tokenizer.model_max_length == pipe.text_encoder.config.max_position_embeddings
    assert pipe.vae.config.scaling_factor == training["vae"]["scaling_factor"]
    from safetensors import safe_open

    with safe_open(str(folder / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as fh:
        stored = {fh.get_slice(k).get_dtype() for k in fh.keys()}  # noqa: SIM118
    assert stored == {"F16"}  # stored small
    image = pipe(
        "a photo of a woman doctor",
        num_inference_steps=2,
        height=32,
        width=32,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert image.shape == (1, 32, 32, 3)
    planted = json.loads((folder / "planted_rates.json").read_text())
    assert planted["variant"] == "biased" and len(planted["rates"]["gender"]) == 8
    # the VAE is reused, not retrained, for the second variant
    again = train_toyworld(tmp_path / "ckpt", config=config, variants=("balanced",))
    second = json.loads((again["balanced"] / "training.json").read_text())
    assert second["vae"]["seconds"] == training["vae"]["seconds"]
    assert second["vae"]["threads"] == training["vae"]["threads"] == config.threads


def test_a_few_training_steps_of_the_dit(tmp_path: Path) -> None:
    """toyworld-dit trains its denoiser alone on the biased world, with that checkpoint's
    tokenizer, VAE and text encoder, and saves a PixArt pipeline that loads offline."""
    from auditkit.models.loading import load_pipeline
    from auditkit.spec import ModelSpec
    from auditkit.toyworld.card import write_model_card
    from auditkit.toyworld.dit import DiTConfig, train_dit_checkpoint
    from auditkit.toyworld.train import TrainConfig

    base = checkpoint_path("biased")
    config = TrainConfig(steps=3, batch_size=8, warmup_steps=1)
    folder = train_dit_checkpoint(tmp_path, base=base, config=config, dit=DiTConfig(layers=2))
    planted = json.loads((folder / "planted_rates.json").read_text())
    biased = json.loads((base / "planted_rates.json").read_text())
    assert planted["variant"] == "dit" and planted["world"] == "biased"
    assert planted["rates"] == biased["rates"]
    from safetensors.torch import load_file
    from transformers import CLIPTokenizer

    text = "a photo of a young dark woman doctor"
    tokenizers = [CLIPTokenizer.from_pretrained(str(f / "tokenizer")) for f in (folder, base)]
    assert tokenizers[0](text).input_ids == tokenizers[1](text).input_ids

    ours = load_file(str(folder / "text_encoder" / "model.safetensors"))
    theirs = load_file(str(base / "text_encoder" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # frozen: the same weights
    loaded = load_pipeline(ModelSpec(id=str(folder), device="cpu"), cache_dir=tmp_path)
    assert loaded.pipeline_class == "PixArtSigmaPipeline" and loaded.kind == "pixart"
    assert loaded.adapter.hook_for(folder) == "transformer.transformer_blocks.1"
    card = write_model_card(folder).read_text()
    assert card.startswith("---") and "# toyworld-dit" in card and "--variant dit" in card
    whitening = json.loads((folder / "training.json").read_text())["denoiser"]
    assert whitening["dit"]["whiten"] and whitening["caption_whitening"]["tokens"] > 8192


def test_the_whitened_caption_projection_is_the_whitening_then_the_layer() -> None:
    """The DiT's first caption layer starts as W0 · P(x - mean): on the statistics' own tokens
    its inputs (P(x - mean)) have mean 0 and identity covariance, where they vary."""
    from auditkit.toyworld.dit import DiTConfig, build_dit, whiten_caption_projection

    torch.manual_seed(0)
    mix = torch.randn(6, 16) * torch.tensor([5.0, 2.0, 1.0, 0.3, 0.05, 0.01]).unsqueeze(1)
    states = (torch.randn(40, 12, 6) @ mix + 3.0).float()  # rank 6 in 16 dimensions
    mask = torch.ones(40, 12, dtype=torch.long)
    mask[:, 9:] = 0
    mask[0, 3:] = 0
    model = build_dit(DiTConfig(layers=1), 16)
    layer = model.caption_projection.linear_1
    weight0, bias0 = layer.weight.detach().double().clone(), layer.bias.detach().double().clone()
    summary = whiten_caption_projection(model, states, mask, eps=1e-9)
    assert summary["tokens"] == int(mask.sum()) and summary["rank_99"] <= 6
    tokens = states[mask.bool()].double()
    inputs = torch.linalg.lstsq(weight0, (layer(tokens.float()).double() - bias0).T).solution.T
    assert inputs.mean(0).abs().max() < 1e-3
    spectrum = torch.linalg.eigvalsh(torch.cov(inputs.T)).flip(0)
    assert torch.allclose(spectrum[:6], torch.ones(6, dtype=torch.float64), atol=1e-3)
    assert spectrum[6:].abs().max() < 1e-3  # directions the captions never move along stay 0


def _card_hashes(folder: Path) -> dict[str, str]:
    card = (folder / "README.md").read_text()
    return dict(re.findall(r"^\| `([^`]+)` \| \d+ \| `([0-9a-f]{64})` \|$", card, re.M))


@pytest.mark.parametrize("variant", ["biased", "balanced", "reworded"])
def test_shipped_checkpoint_loads_offline_and_matches_its_card(variant: str) -> None:
    from auditkit.models.loading import load_pipeline
    from auditkit.spec import ModelSpec

    folder = checkpoint_path(variant)  # type: ignore[arg-type]
    hashes = _card_hashes(folder)
    weights = [p for p in hashes if p.endswith(".safetensors")]
    assert len(weights) == 3, hashes  # vae, text encoder, unet
    for path, digest in hashes.items():
        assert sha256_file(folder / path) == digest, path
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 15 * 1024 * 1024
    loaded = load_pipeline(
        ModelSpec(id=f"builtin:toyworld-{variant}", device="cpu"), cache_dir=Path("/nonexistent")
    )
    assert loaded.pipeline_class == "StableDiffusionPipeline"
    assert loaded.model_dir == folder


@pytest.mark.parametrize("variant", ["biased", "balanced"])
def test_shipped_quality_records_meet_issue_3(variant: str) -> None:
    """The measurements `auditkit toyworld evaluate` recorded with the shipped weights (their
    sha256 is in the card, checked above): prompts followed on at least 90% of images, the
    share of men at guidance 1 within 0.10 of the planted rate over 512 seeds, and the control
    line of the balanced card."""
    folder = checkpoint_path(variant)  # type: ignore[arg-type]
    quality = json.loads((folder / "quality.json").read_text())
    follow = quality["prompt_following"]
    assert follow["seeds_per_prompt"] >= 32
    for group in ("fully_marked", "one_attribute_marked", "attribute_only"):
        assert min(follow[group].values()) >= 0.9, (group, follow[group])
    rates = quality["output_rates_guidance_1"]
    assert rates["guidance_scale"] == 1.0 and rates["seeds_per_prompt"] >= 64
    assert rates["max_abs_error"]["gender"] <= 0.10
    card = (folder / "README.md").read_text()
    if variant == "balanced":
        ratio = re.search(r"- Control: .* is ([0-9.]+), ([0-9.]+) of toyworld-biased's", card)
        assert ratio is not None and float(ratio.group(2)) <= 0.25, card
    else:
        assert "- Control:" not in card


def test_the_reworded_world_follows_its_own_prompts_and_draws_its_planted_age() -> None:
    """toyworld-reworded, the calibration suite's second world: prompts in its own words are
    followed (read by its own reader), and what it draws at the audit's guidance ranks like
    its planted age rates while gender and skin stay near parity (truth.json)."""
    from auditkit.analyze.stats import spearman

    folder = checkpoint_path("reworded")
    follow = json.loads((folder / "quality.json").read_text())["prompt_following"]
    assert follow["seeds_per_prompt"] >= 32
    for group in ("fully_marked", "one_attribute_marked", "attribute_only"):
        assert min(follow[group].values()) >= 0.95, (group, follow[group])
    planted = json.loads((folder / "planted_rates.json").read_text())
    truth = json.loads((folder / "truth.json").read_text())
    drawn = {(r["attribute"], r["concept"]): r["share"] for r in truth["rows"]}
    ages = planted["rates"]["age"]
    assert spearman([ages[c] for c in ages], [drawn[("age", c)] for c in ages]) >= 0.9
    for attribute in ("gender", "skin"):
        assert all(abs(drawn[(attribute, c)] - 0.5) <= 0.2 for c in ages), attribute


def test_toyworld_captioner_is_a_captioner() -> None:
    from auditkit.caption import Captioner
    from auditkit.toyworld.captioner import load_captioner

    assert isinstance(load_captioner(PACKAGE_CHECKPOINTS / "toyworld-captioner"), Captioner)


def test_shipped_captioner_reads_held_out_renders() -> None:
    import numpy as np

    from auditkit.toyworld.captioner import load_captioner
    from auditkit.toyworld.world import random_people, render_many

    captioner = load_captioner(PACKAGE_CHECKPOINTS / "toyworld-captioner")
    rng = np.random.default_rng(12345)
    people = random_people(1000, rng)
    readings = captioner.read(render_many(people, rng))
    for attribute in ("gender", "skin", "age", "occupation"):
        accuracy = np.mean(
            [r[attribute] == getattr(p, attribute) for r, p in zip(readings, people, strict=True)]
        )
        assert accuracy >= 0.95, (attribute, accuracy)
