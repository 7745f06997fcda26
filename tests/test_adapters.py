"""Model adapters: every transformer family's tiny pipeline through the whole flow (extract,
caption, causal check, report), the image stream read and steered at its blocks, and every
family's published full-size denoiser built on the meta device, its hook shapes and ``plan``
storage checked against numbers worked out by hand below."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from auditkit.extract.hooks import capture_h, steer_h
from auditkit.extract.runner import pipeline_inputs
from auditkit.layout import stored_per_step
from auditkit.models.adapters import adapters, for_family
from auditkit.models.loading import load_pipeline
from auditkit.plan import plan_audit
from auditkit.run import run_audit
from auditkit.spec import parse_spec

TRANSFORMER_FAMILIES = ("pixart", "sd3", "flux", "sana")
FAMILIES = ("sd", "lcm", "sdxl", *TRANSFORMER_FAMILIES)
"""Every family's tiny builtin (``builtin:tiny-<name>``)."""
KINDS = {"sd": "stable-diffusion", "lcm": "lcm", "sdxl": "sdxl"}

SPEC = """
spec_version: 1
name: tiny-{family}-flow
model: {{id: "builtin:tiny-{family}", device: cpu, steps: 3, guidance_scale: 4.0, resolution: 64}}
seeds: 3
batch_size: 8
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
concepts:
  - name: occupations
    templates: ["a photo of a {{term}}"]
    terms: [doctor, nurse, pilot]
analyses: [lean]
captions:
  captioner: {{kind: toyworld}}
  causal: {{alphas: [-4.0, 4.0], seeds: 2, axes: [gender]}}
report: {{formats: [html]}}
"""

# the tiny configs (auditkit/models/adapters/*.py): 64 px, VAE /8 -> 8x8 latents
TINY = {
    # family: (default hook, h per step (pooled image tokens: width), image tokens, CFG factor)
    "pixart": ("transformer.transformer_blocks.1", 24, 16, 2),  # 2 blocks; 3 heads x 8; patch 2
    "sd3": ("transformer.transformer_blocks.1", 16, 16, 2),  # 3 blocks; 2 x 8; patch 2
    "flux": ("transformer.transformer_blocks.1", 32, 16, 1),  # 2 double blocks; 2 x 16; 2x2 packed
    "sana": ("transformer.transformer_blocks.1", 16, 4, 2),  # 2 blocks; 2 x 8; DC-AE /32: 2x2
    # the U-Nets: VAE /2 -> 32x32 latents, one 2x downsample -> mid block [64, 16, 16]
    "sd": ("unet.mid_block", 64 * 16 * 16, 0, 2),
    "lcm": ("unet.mid_block", 64 * 16 * 16, 0, 1),  # guidance embedded (LCM)
    "sdxl": ("unet.mid_block", 64 * 16 * 16, 0, 2),
}


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One audit per transformer family on its tiny pipeline (built into a shared cache)."""
    root = tmp_path_factory.mktemp("adapters")
    runs = {}
    for family in FAMILIES:
        spec = parse_spec(SPEC.format(family=family))
        runs[family] = run_audit(
            spec, root / family, cache_dir=root / "cache", show_progress=False
        ).run_dir
    return runs


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_runs_the_whole_flow(flows: dict[str, Path], family: str) -> None:
    run = flows[family]
    hook, width, _tokens, cfg = TINY[family]
    assert f"hook: {hook}" in (run / "spec.yaml").read_text()  # left out: the family's default
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"]["kind"] == KINDS.get(family, family)
    extract = manifest["stages"]["extract"]
    units = (1 + 2 + 3) * 3  # (the base prompt, 2 group prompts, 3 concepts) x 3 seeds
    assert extract["units_run"] == units and math.prod(extract["h_shape"]) == width
    assert extract["denoiser_evaluations"] == units * 3 * cfg  # FLUX embeds its guidance
    lean = pd.read_parquet(run / "results" / "lean.parquet")
    assert sorted(lean["concept"]) == ["doctor", "nurse", "pilot"]
    assert lean["score"].notna().all()
    causal = pd.read_parquet(run / "captions" / "causal_curve.parquet")
    assert sorted(causal["alpha"]) == [-4.0, 4.0] and (causal["n_images"] > 0).all()
    report = (run / "report" / "report.html").read_text()
    assert 'id="lean"' in report and 'id="causal"' in report


@pytest.mark.parametrize("family", TRANSFORMER_FAMILIES)
def test_the_image_stream_is_read_and_steered(flows: dict[str, Path], family: str) -> None:
    """h is the mean over the block's image tokens (never its text tokens), and steering adds
    alpha * g to every image token of the conditional and unconditional halves alike."""
    hook, width, tokens, _cfg = TINY[family]
    spec = parse_spec(SPEC.format(family=family))
    cache = flows[family].parent / "cache"
    loaded = load_pipeline(spec.model, cache_dir=cache)
    spec = spec.model_copy(update={"probe": spec.probe.model_copy(update={"hook": hook})})
    units = plan_audit(spec).units[:2]
    components = loaded.pipe.components
    seen: list[torch.Tensor] = []
    block = loaded.pipe.transformer.get_submodule(hook.split(".", 1)[1])
    raw = block.register_forward_hook(
        lambda _m, _a, out: seen.append(loaded.adapter.image_tensor(out))
    )
    try:
        with (
            torch.inference_mode(),
            capture_h(components, hook, expected_batch=2, adapter=loaded.adapter) as session,
        ):
            base = loaded.pipe(**pipeline_inputs(loaded, spec, units), output_type="latent")[0]
    finally:
        raw.remove()
    assert seen[0].shape[1:] == (tokens, width)  # image tokens, not the text stream
    first = session.by_step("cond")[0].tensor
    assert torch.allclose(first, seen[0][-2:].mean(dim=1), atol=1e-6)
    g = torch.linspace(-1.0, 1.0, width)
    changed: list[torch.Tensor] = []
    with (
        torch.inference_mode(),
        steer_h(components, hook, g, 3.0, adapter=loaded.adapter) as steered,
    ):
        handle = block.register_forward_hook(
            lambda _m, _a, out: changed.append(loaded.adapter.image_tensor(out))
        )
        try:
            moved = loaded.pipe(**pipeline_inputs(loaded, spec, units), output_type="latent")[0]
        finally:
            handle.remove()
    assert steered.steered_calls == 3
    assert not torch.allclose(base, moved)
    # registered after the steering hook, the probe sees the steered output of step 0
    assert torch.allclose(changed[0] - seen[0], (3.0 * g).expand_as(seen[0]), atol=1e-4)


def test_full_image_tokens_are_kept_when_asked(flows: dict[str, Path]) -> None:
    """``probe.tokens: full`` stores every image token ([tokens, width] per step), and the
    causal check steers with a direction of that shape."""
    text = (
        SPEC.format(family="pixart")
        .replace("probe:", "")
        .replace("seeds: 3\n", "seeds: 3\nprobe: {tokens: full}\n")
    )
    run = run_audit(
        parse_spec(text),
        flows["pixart"].parent / "full",
        cache_dir=flows["pixart"].parent / "cache",
        show_progress=False,
    ).run_dir
    extract = json.loads((run / "manifest.json").read_text())["stages"]["extract"]
    assert extract["h_shape"] == [16, 24]
    causal = pd.read_parquet(run / "captions" / "causal_curve.parquet")
    assert (causal["n_images"] > 0).all()


def test_every_family_names_its_default_hook_and_why() -> None:
    found = adapters()
    assert set(found) >= {"stable-diffusion", "lcm", "sdxl", "pixart", "sd3", "flux", "sana"}
    for adapter in found.values():
        assert adapter.hook.reason and adapter.pipeline_classes and adapter.title
        assert adapter.hook_for(None).startswith(adapter.denoiser + ".")
    assert for_family("pixart").hook_for(None) == "transformer.transformer_blocks.18"  # 2x28 // 3
    assert for_family("sd3").hook_for(None) == "transformer.transformer_blocks.12"
    assert for_family("flux").hook_for(None) == "transformer.transformer_blocks.18"
    assert for_family("sana").hook_for(None) == "transformer.transformer_blocks.10"


# --- full size, on the meta device ---------------------------------------------------------

SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}  # fmt: skip
SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
    "attention_head_dim": [5, 10, 20], "transformer_layers_per_block": [1, 2, 10],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True, "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816,
}  # fmt: skip
SD35_MEDIUM = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "out_channels": 16,
    "num_layers": 24, "attention_head_dim": 64, "num_attention_heads": 24,
    "joint_attention_dim": 4096, "caption_projection_dim": 1536, "pooled_projection_dim": 2048,
    "pos_embed_max_size": 384, "dual_attention_layers": list(range(13)), "qk_norm": "rms_norm",
}  # fmt: skip
SD35_LARGE = {
    **SD35_MEDIUM, "num_layers": 38, "num_attention_heads": 38, "caption_projection_dim": 2432,
    "pos_embed_max_size": 192, "dual_attention_layers": [],
}  # fmt: skip
PIXART_SIGMA = {
    "sample_size": 128, "num_layers": 28, "attention_head_dim": 72, "num_attention_heads": 16,
    "in_channels": 4, "out_channels": 8, "patch_size": 2, "cross_attention_dim": 1152,
    "caption_channels": 4096, "attention_bias": True, "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000, "norm_type": "ada_norm_single",
    "norm_elementwise_affine": False, "norm_eps": 1e-6, "interpolation_scale": 2,
    "use_additional_conditions": False,
}  # fmt: skip
FLUX_DEV = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
    "pooled_projection_dim": 768, "guidance_embeds": True, "axes_dims_rope": [16, 56, 56],
}  # fmt: skip
SANA_1600M = {
    "in_channels": 32, "out_channels": 32, "num_attention_heads": 70, "attention_head_dim": 32,
    "num_layers": 20, "num_cross_attention_heads": 20, "cross_attention_head_dim": 112,
    "cross_attention_dim": 2240, "caption_channels": 2304, "mlp_ratio": 2.5,
    "attention_bias": False, "sample_size": 32, "patch_size": 1,
    "norm_elementwise_affine": False, "norm_eps": 1e-6, "interpolation_scale": None,
}  # fmt: skip
KL_VAE = {"block_out_channels": [128, 256, 512, 512]}  # four levels: /8
DC_AE = {"encoder_block_out_channels": [128, 256, 512, 512, 1024, 1024]}  # six levels: /32

# Worked by hand, at 1024 px (SD 1.5: 512 px), one sample:
# - SD 1.5: latent 512/8 = 64; three 2x downsamples to the mid block: 64/8 = 8 -> [1280, 8, 8]
# - SDXL: latent 128; two downsamples: 32 -> [1280, 32, 32]
# - SD 3.5 medium: latent 128, patch 2 -> 64x64 = 4096 image tokens of 24 x 64 = 1536
# - SD 3.5 large: 4096 tokens of 38 x 64 = 2432
# - PixArt-Σ: 4096 tokens of 16 x 72 = 1152
# - FLUX.1-dev: latent 128 packed 2x2 -> 4096 tokens of 24 x 128 = 3072
# - SANA 1600M: DC-AE latent 1024/32 = 32, patch 1 -> 1024 tokens of 70 x 32 = 2240
# Stored per step (float32, tokens pooled, feature maps kept whole): SD 1.5 1280*8*8*4 =
# 327,680 bytes; SDXL 1280*32*32*4 = 5,242,880; SD3.5-m 1536*4 = 6,144; -l 9,728;
# PixArt-Σ 4,608; FLUX 12,288; SANA 8,960.
B = "transformer.transformer_blocks."
FULL_SIZE = [
    # (family, denoiser class, config, resolution, hook, h per sample, bytes per step)
    ("stable-diffusion", "UNet2DConditionModel", SD15_UNET, 512, "unet.mid_block", (1280, 8, 8),
     327_680),
    ("sdxl", "UNet2DConditionModel", SDXL_UNET, 1024, "unet.mid_block", (1280, 32, 32),
     5_242_880),
    ("sd3", "SD3Transformer2DModel", SD35_MEDIUM, 1024, B + "12", (4096, 1536), 6_144),
    ("sd3", "SD3Transformer2DModel", SD35_LARGE, 1024, B + "19", (4096, 2432), 9_728),
    ("pixart", "PixArtTransformer2DModel", PIXART_SIGMA, 1024, B + "18", (4096, 1152), 4_608),
    ("flux", "FluxTransformer2DModel", FLUX_DEV, 1024, B + "18", (4096, 3072), 12_288),
    ("sana", "SanaTransformer2DModel", SANA_1600M, 1024, B + "10", (1024, 2240), 8_960),
]  # fmt: skip


def _meta_inputs(family: str, config: dict[str, Any], resolution: int) -> dict[str, Any]:
    """One conditional sample's denoiser inputs, on the meta device."""
    meta = {"device": "meta"}
    latent = resolution // 8
    t = torch.tensor([500.0], **meta)
    if family in ("stable-diffusion", "sdxl"):
        inputs = {
            "sample": torch.randn(1, 4, latent, latent, **meta),
            "timestep": t,
            "encoder_hidden_states": torch.randn(1, 77, config["cross_attention_dim"], **meta),
        }
        if family == "sdxl":
            inputs["added_cond_kwargs"] = {
                "text_embeds": torch.randn(1, 1280, **meta),
                "time_ids": torch.randn(1, 6, **meta),
            }
        return inputs
    if family == "pixart":
        return {
            "hidden_states": torch.randn(1, 4, latent, latent, **meta),
            "timestep": t,
            "encoder_hidden_states": torch.randn(1, 300, 4096, **meta),
            "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
        }
    if family == "sana":
        return {
            "hidden_states": torch.randn(1, 32, resolution // 32, resolution // 32, **meta),
            "timestep": t,
            "encoder_hidden_states": torch.randn(1, 300, 2304, **meta),
        }
    if family == "sd3":
        return {
            "hidden_states": torch.randn(1, 16, latent, latent, **meta),
            "timestep": t,
            "encoder_hidden_states": torch.randn(1, 333, 4096, **meta),
            "pooled_projections": torch.randn(1, 2048, **meta),
        }
    side = latent // 2
    ids = torch.zeros(side, side, 3)
    ids[..., 1] += torch.arange(side)[:, None]
    ids[..., 2] += torch.arange(side)[None, :]
    return {
        "hidden_states": torch.randn(1, side * side, 64, **meta),
        "timestep": torch.tensor([1.0], **meta),
        "guidance": torch.tensor([3.5], **meta),
        "encoder_hidden_states": torch.randn(1, 512, 4096, **meta),
        "pooled_projections": torch.randn(1, 768, **meta),
        "txt_ids": torch.zeros(512, 3, **meta),
        "img_ids": ids.reshape(-1, 3).to("meta"),
    }


@pytest.mark.parametrize(
    ("family", "cls", "config", "resolution", "hook", "h_shape", "per_step"),
    FULL_SIZE,
    ids=["sd15", "sdxl", "sd35-medium", "sd35-large", "pixart-sigma", "flux-dev", "sana-1600m"],
)
def test_full_size_denoisers_on_meta(
    tmp_path: Path,
    family: str,
    cls: str,
    config: dict[str, Any],
    resolution: int,
    hook: str,
    h_shape: tuple[int, ...],
    per_step: int,
) -> None:
    """Each published denoiser built on the meta device (no memory, no weights): the adapter's
    default hook exists, its image stream has the shape worked out by hand, and the plan's
    geometry (from config files alone) and storage per step agree."""
    import diffusers

    adapter = for_family(family)
    folder = tmp_path / "model"
    denoiser = adapter.denoiser
    vae = DC_AE if family == "sana" else KL_VAE
    for component, data in ((denoiser, config), ("vae", vae)):
        (folder / component).mkdir(parents=True)
        (folder / component / "config.json").write_text(json.dumps(data))
    assert adapter.hook_for(folder) == hook
    with torch.device("meta"):
        model = getattr(diffusers, cls).from_config(config)
    seen: list[tuple[int, ...]] = []
    module = model.get_submodule(hook.split(".", 1)[1])
    handle = module.register_forward_hook(
        lambda _m, _a, out: seen.append(tuple(adapter.image_tensor(out).shape))
    )
    try:
        with torch.no_grad():
            model(**_meta_inputs(family, config, resolution), return_dict=False)
    finally:
        handle.remove()
    assert seen == [(1, *h_shape)]
    geometry = adapter.geometry(folder, resolution, hook)
    assert geometry is not None and geometry.h_shape == h_shape
    assert stored_per_step(geometry.h_shape, "none") * 4 == per_step
    if len(h_shape) == 2:  # every image token kept: tokens x width
        full = stored_per_step(geometry.h_shape, "none", "full") * 4
        assert full == per_step * h_shape[0]


def config_folder(folder: Path, pipeline_class: str, **components: dict[str, Any]) -> Path:
    """A model folder of config files only (no weights): ``model_index.json`` and each
    component's ``config.json``."""
    for component, data in components.items():
        (folder / component).mkdir(parents=True)
        (folder / component / "config.json").write_text(json.dumps(data))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline_class}))
    return folder


def test_plan_prints_full_size_storage(tmp_path: Path) -> None:
    """``auditkit plan`` on a FLUX.1-dev folder (configs only, no weights): h per step is the
    image tokens x width, stored pooled to 3,072 floats; 3 prompts x 2 seeds x 28 steps x
    3,072 x 4 bytes = 2,064,384 bytes (2.0 MiB); FLUX embeds its guidance, so no doubling."""
    from click.testing import CliRunner

    from auditkit.cli import main

    folder = config_folder(tmp_path / "flux-dev", "FluxPipeline", transformer=FLUX_DEV, vae=KL_VAE)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"""spec_version: 1
name: flux-plan
model: {{id: "{folder}", steps: 28, guidance_scale: 3.5, resolution: 1024}}
seeds: 2
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
concepts:
  - name: jobs
    templates: ["a photo of a {{term}}"]
    terms: [doctor]
analyses: [lean]
centring: {{reference: set_mean}}
"""
    )
    result = CliRunner().invoke(main, ["plan", str(spec)])
    assert result.exit_code == 0, result.output
    lines = {line.strip().split("  ")[0]: line for line in result.output.splitlines()[1:]}
    assert "4096x3072" in lines["h per step"]
    assert "2.0 MiB" in lines["activation storage"]
    assert "168 (" in lines["denoiser evaluations"]  # 3 prompts x 2 seeds x 28 steps, no CFG
