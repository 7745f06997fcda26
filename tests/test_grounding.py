"""Image-grounded axes: the estimator on planted image latents (exact answers), the spec's
checks, every family's tiny pipeline reading labelled images at its hook through extraction's
path, and the bad inputs a run refuses before it samples anything.

The known-answer test on toyworld-biased is in ``tests/test_grounding_toyworld.py``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from test_analysis_synthetic import SPEC as SYNTHETIC
from test_analysis_synthetic import _planted

from auditkit.analyze.grounding import ground_axes, read_grounded
from auditkit.analyze.grounding_fit import contrast_weights, design, design_problem
from auditkit.analyze.measures import build_layout
from auditkit.cli import main
from auditkit.errors import UsageError
from auditkit.spec import parse_spec

D = 96


# --- the estimator, on planted latents ------------------------------------------------------


def _images(
    n: int, gender: float, confound: float, noise: float, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray]:
    """``n`` images of each gender: an offset far from the prompts' latents, ``gender`` x e[1]
    towards the man's side (the prompt axis is 4 e[1]), and an occupation attribute (e[14])
    that 80% of the men and 20% of the women have, weighted ``confound``; plus noise."""
    rng = np.random.default_rng(seed)
    e = np.linalg.qr(np.random.default_rng(0).normal(size=(D, 16)))[0].T  # the planted basis
    offset = 7.0 * e[15] + 2.0 * e[0]
    rows, latents = [], {}
    for i in range(2 * n):
        man = i < n
        builder = (i % n) < (0.8 * n if man else 0.2 * n)
        unit = f"u{i:03d}"
        latents[unit] = (
            offset
            + (gender if man else -gender) * e[1]
            + (confound if builder else 0.0) * e[14]
            + noise * rng.normal(size=D)
        )
        rows.append(
            {
                "axis": "gender",
                "group": "man" if man else "woman",
                "file": f"{unit}.png",
                "unit_id": unit,
                "seed": 0,
                "covariates": json.dumps({"occupation": "builder" if builder else "clerk"}),
            }
        )
    return pd.DataFrame(rows), latents, e


def _ground(table: pd.DataFrame, latents: dict[str, np.ndarray], resamples: int = 0) -> dict:
    spec = parse_spec(SYNTHETIC)
    prompt_latents, _ = _planted(spec)
    layout = build_layout(spec, prompt_latents.row_map())
    H = prompt_latents.means().astype(np.float64)
    return ground_axes(H, layout, read_grounded(table, latents), resamples=resamples, seed=0)


def test_the_image_axis_is_recovered_exactly_once_adjusted() -> None:
    """Without noise, the adjusted fit recovers the images' gender direction (3 e1) whatever
    the occupation imbalance: cosine 1 with the prompt axis (4 e1), and each concept's centred
    score along it is its centred score along the prompt axis times |g| / |g_img|."""
    table, latents, _ = _images(20, gender=3.0, confound=5.0, noise=0.0)
    out = _ground(table, latents)
    axis = out["grounding_axes"].iloc[0]
    assert axis["axis"] == "gender" and axis["adjusted_for"] == "occupation"
    assert (axis["n_positive"], axis["n_negative"]) == (20, 20)
    assert axis["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert axis["image_norm"] == pytest.approx(6.0) and axis["prompt_norm"] == pytest.approx(4.0)
    leans = out["grounding_leans"]
    assert list(leans["concept"]) == ["doctor", "nurse", "pilot", "baker"]
    assert np.allclose(leans["image_score"], leans["prompt_centred"] * 4.0 / 6.0)
    # the lean score proper (from the prompt groups' midpoint) is the lean table's
    assert np.allclose(leans["prompt_score"], [0.8, -0.6, 0.3, -0.05], atol=1e-6)
    assert axis["rho"] == pytest.approx(1.0)
    assert np.isnan(axis["cosine_ci_low"]) and np.isnan(axis["chance_cosine"])
    assert not axis["reproduced"]  # no resamples: no chance level to clear


def test_an_unadjusted_axis_carries_the_imbalance_of_other_attributes() -> None:
    table, latents, _ = _images(20, gender=3.0, confound=5.0, noise=0.0)
    plain = table.assign(covariates="{}")
    cosine = _ground(plain, latents)["grounding_axes"].iloc[0]["cosine"]
    # g_img = 6 e1 + 0.6 * 5 e14: the men's extra builders enter the axis
    assert cosine == pytest.approx(6.0 / np.hypot(6.0, 3.0), abs=1e-6)


def test_intervals_chance_level_and_a_wording_artefact() -> None:
    """With noise: the interval holds the estimate's neighbourhood, the chance level (random
    halves of one group) is far below, and images that carry no gender difference are not
    said to reproduce the axis."""
    table, latents, _ = _images(32, gender=1.5, confound=2.0, noise=0.5, seed=1)
    axis = _ground(table, latents, resamples=300)["grounding_axes"].iloc[0]
    assert axis["cosine_ci_low"] < axis["cosine_ci_high"] <= 1.0
    assert axis["cosine_ci_low"] < axis["cosine"] + 0.02
    assert axis["chance_cosine"] < 0.5 < axis["cosine_ci_low"]
    assert axis["reproduced"] and axis["n_resamples"] == 300
    assert axis["rho_ci_low"] <= axis["rho"] <= axis["rho_ci_high"]

    table, latents, _ = _images(32, gender=0.0, confound=2.0, noise=0.5, seed=2)
    blank = _ground(table, latents, resamples=300)["grounding_axes"].iloc[0]
    assert not blank["reproduced"] and abs(blank["cosine"]) < blank["chance_cosine"] + 0.1


def test_the_contrast_is_the_difference_of_means_without_attributes() -> None:
    first = np.array([True, True, True, False, False])
    v = contrast_weights(design(first, {}), np.ones(5))
    assert np.allclose(v, [1 / 3, 1 / 3, 1 / 3, -1 / 2, -1 / 2])
    counts = np.array([2.0, 1.0, 0.0, 1.0, 1.0])  # a resample: image 0 twice, image 2 not
    assert np.allclose(contrast_weights(design(first, {}), counts), [2 / 3, 1 / 3, 0, -0.5, -0.5])


def test_attributes_that_separate_the_groups_are_refused_by_name() -> None:
    first = np.array([True] * 4 + [False] * 4)
    job = np.array(["doctor"] * 4 + ["nurse"] * 4)
    age = np.array(["young", "old"] * 4)
    problem = design_problem(first, {"occupation": job, "age": age})
    assert problem is not None and "'occupation'" in problem and "separate" in problem
    assert design_problem(first, {"age": age}) is None
    many = design_problem(first, {"batch": np.array(["a", "b", "c", "d"] * 2)})
    assert many is not None and "parameters" in many


# --- the spec ---------------------------------------------------------------------------------

GROUNDED = """
spec_version: 1
name: grounded
model: {{id: "builtin:tiny-{family}", device: cpu, steps: 3, guidance_scale: 4.0, resolution: 64}}
seeds: 2
batch_size: 8
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
  - name: age
    templates: ["a photo of a {{term}}"]
    groups: {{young: [young person], middle: [middle aged person], old: [old person]}}
concepts:
  - name: occupations
    templates: ["a photo of a {{term}}"]
    terms: [doctor, nurse]
analyses: [lean]
grounding:
  images: {{folder: {folder}}}
  prompt: a photo
"""


def test_grounding_names_only_two_group_axes_of_the_spec(tmp_path: Path) -> None:
    from auditkit.errors import SpecError
    from auditkit.spec import load_spec

    text = GROUNDED.format(family="sd", folder="images") + "  axes: [gender, age, colour]\n"
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert "grounding.axes[1]" in message and "has 3 groups" in message
    assert "grounding.axes[2]" in message and "unknown axis 'colour'" in message
    path.write_text(GROUNDED.format(family="sd", folder="images") + "  adjust_for: [file]\n")
    with pytest.raises(SpecError, match=r"grounding\.adjust_for"):
        load_spec(path)


def test_the_default_audit_has_no_grounding_and_keeps_its_hash() -> None:
    from auditkit.spec import load_spec, spec_hash

    spec = load_spec(Path(__file__).resolve().parents[1] / "audits" / "toyworld.yaml")
    assert spec.grounding is None
    text = (Path(__file__).resolve().parents[1] / "audits" / "toyworld.yaml").read_text()
    assert "grounding" not in text
    # a grounding section changes the spec hash (so a rerun knows), leaving it out does not
    grounded = parse_spec(text + "grounding: {images: {toyworld: 64}}\n")
    assert spec_hash(grounded) != spec_hash(spec)


# --- every family's tiny pipeline -------------------------------------------------------------

FAMILIES = ("sd", "lcm", "sdxl", "pixart", "sd3", "flux", "sana")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this module's tiny pipelines are built (once each)."""
    return tmp_path_factory.mktemp("grounding-cache")


def _labelled_folder(root: Path, rows: list[tuple[str, str, str]], size: int = 64) -> Path:
    """A folder of small PNGs (each a flat colour with a bright square) and its labels.csv:
    ``rows`` of (file, gender, occupation); a file named ``missing*`` is not written."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, _gender, _job in rows:
        if name.startswith("missing"):
            continue
        pixels = np.full((size, size, 3), rng.integers(0, 200, 3), dtype=np.uint8)
        x, y = rng.integers(0, size // 2, 2)
        pixels[y : y + size // 3, x : x + size // 3] = 250
        Image.fromarray(pixels).save(root / name)
    labels = pd.DataFrame(rows, columns=["file", "gender", "occupation"])
    labels.to_csv(root / "labels.csv", index=False)
    return root


PEOPLE = [
    ("a.png", "man", "doctor"),
    ("b.png", "man", "nurse"),
    ("c.png", "woman", "doctor"),
    ("d.png", "woman", "nurse"),
    ("e.png", "man", "nurse"),
    ("f.png", "woman", "nurse"),
]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_reads_labelled_images_at_its_hook(
    family: str, cache: Path, tmp_path: Path
) -> None:
    """Through the pass's own capture: the denoiser is fed each image's latent noised to
    every step's timestep (the image's latent times a_k plus the noise times b_k, less noise
    step after step; the same in both guidance halves), and h at the hook has the shape and
    store form of a prompt's h, finite, different for different images."""
    from auditkit.extract.images import capture_images_batch, pixels_of
    from auditkit.extract.runner import capture_batch
    from auditkit.layout import resolve_spec
    from auditkit.models.loading import load_pipeline
    from auditkit.passes.grounding import grounding_selection, image_units
    from auditkit.plan import plan_audit

    folder = _labelled_folder(tmp_path / "images", PEOPLE)
    spec = resolve_spec(parse_spec(GROUNDED.format(family=family, folder=folder)), cache)
    selection = grounding_selection(spec)
    assert list(selection.axes) == ["gender"] and selection.adjusted["gender"] == ["occupation"]
    units = image_units(spec, selection)
    rows = selection.rows
    assert rows == [0, 1, 2, 3, 4, 5] and len({units[r].unit.unit_id for r in rows}) == 6
    loaded = load_pipeline(spec.model, cache_dir=cache)
    pipe, adapter = loaded.pipe, loaded.adapter
    images = selection.labelled.images[rows]
    seeds = [units[r].unit.seed for r in rows]
    fed: list[torch.Tensor] = []
    denoiser = getattr(pipe, adapter.denoiser)
    handle = denoiser.register_forward_hook(
        lambda _m, args, kwargs, _out: fed.append(adapter.latent_input(args, kwargs).detach()),
        with_kwargs=True,
    )
    try:
        captured = capture_images_batch(loaded, spec, images, seeds, "a photo")
    finally:
        handle.remove()
    prompt = capture_batch(loaded, [spec], plan_audit(spec).units[:1])
    h = captured.h[0]
    assert h.shape[0] == 6 and h.shape[1:] == prompt.h[0].shape[1:]  # [images, steps, ...]
    assert captured.steps == prompt.steps and torch.isfinite(h).all()
    assert not torch.allclose(h[0], h[1]) and not torch.allclose(h[0], prompt.h[0][0])

    with torch.inference_mode():
        clean = adapter.encode_images(pipe, pixels_of(images)).float()
    noise = adapter.noise(pipe, seeds[0], spec.model.resolution)[0]
    assert len(fed) == spec.model.steps
    a_of, b_of = [], []
    for latent in fed:
        halves = latent.float().reshape(-1, 6, *latent.shape[1:])
        if halves.shape[0] == 2:  # classifier-free guidance: the same image in both halves
            assert torch.allclose(halves[0], halves[1])
        x = halves[-1][0].reshape(-1)
        basis = torch.stack([clean[0].reshape(-1), noise.reshape(-1)], dim=1)
        a, b = torch.linalg.lstsq(basis, x[:, None]).solution[:, 0]
        assert torch.allclose(basis @ torch.stack([a, b]), x, atol=1e-4)
        a_of.append(float(a))
        b_of.append(float(b))
    assert a_of == sorted(a_of) and b_of == sorted(b_of, reverse=True), (a_of, b_of)
    assert b_of[0] > a_of[0] and a_of[-1] > 0.3


def test_the_fed_latent_is_the_schedulers_noised_image(cache: Path) -> None:
    """On a DDIM U-Net the numbers can be checked by hand: at timestep t the denoiser reads
    sqrt(alpha_bar_t) * z + sqrt(1 - alpha_bar_t) * noise, z the VAE's mean latent times its
    scaling factor."""
    from diffusers import DDIMScheduler

    from auditkit.extract.feed import feed_latents
    from auditkit.extract.images import pixels_of
    from auditkit.models.loading import load_pipeline

    spec = parse_spec(GROUNDED.format(family="sd", folder="images"))
    loaded = load_pipeline(spec.model, cache_dir=cache)
    pipe = loaded.pipe
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pixels = pixels_of(np.full((1, 64, 64, 3), 90, dtype=np.uint8))
    with torch.inference_mode():
        z = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    clean = loaded.adapter.encode_images(pipe, pixels)
    assert torch.allclose(clean, z)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    seen: list[torch.Tensor] = []
    handle = pipe.unet.register_forward_hook(
        lambda _m, args, _kw, _o: seen.append(args[0].clone()), with_kwargs=True
    )
    try:
        with (
            torch.inference_mode(),
            feed_latents(
                pipe.components, "unet.mid_block", clean, noise, adapter=loaded.adapter
            ) as session,
        ):
            pipe(prompt=["a photo"], num_inference_steps=3, guidance_scale=4.0, height=64,
                 width=64, output_type="latent")  # fmt: skip
    finally:
        handle.remove()
    assert session.denoiser_calls == 3 and len(seen) == 3
    for t, latent in zip(pipe.scheduler.timesteps, seen, strict=True):
        alpha_bar = pipe.scheduler.alphas_cumprod[int(t)]
        expected = alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise
        assert torch.allclose(latent, torch.cat([expected, expected]), atol=1e-5)
    assert session.timesteps == [float(t) for t in pipe.scheduler.timesteps]


# --- bad inputs: located errors, exit 2, nothing sampled ------------------------------------


def _run(tmp_path: Path, text: str, cache: Path) -> tuple[int, str]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["run", str(spec), "--out", str(out), "--cache-dir", str(cache), "--no-progress"]
    )
    assert "Traceback" not in result.output
    assert not (out / "activations").exists() or not any((out / "activations").iterdir())
    return result.exit_code, result.output


def test_a_label_that_names_no_group_is_refused_with_its_line(tmp_path: Path, cache: Path) -> None:
    rows = [*PEOPLE, ("g.png", "robot", "doctor")]
    folder = _labelled_folder(tmp_path / "images", rows)
    code, output = _run(tmp_path, GROUNDED.format(family="sd", folder=folder), cache)
    assert code == 2, output
    assert "grounding.images" in output and "line 8" in output and "'robot'" in output


def test_a_missing_image_is_refused_with_its_line(tmp_path: Path, cache: Path) -> None:
    folder = _labelled_folder(tmp_path / "images", [*PEOPLE, ("missing.png", "man", "nurse")])
    code, output = _run(tmp_path, GROUNDED.format(family="sd", folder=folder), cache)
    assert code == 2, output
    assert "grounding.images" in output and "line 8" in output and "missing.png" in output


def test_a_toyworld_draw_needs_a_toyworld_model(tmp_path: Path, cache: Path) -> None:
    text = GROUNDED.format(family="sd", folder="x").replace(
        "images: {folder: x}", "images: {toyworld: 64}"
    )
    code, output = _run(tmp_path, text, cache)
    assert code == 2, output
    assert "grounding.images.toyworld" in output and "toyworld model" in output


def test_too_few_images_of_a_group_and_separating_attributes(tmp_path: Path, cache: Path) -> None:
    folder = _labelled_folder(tmp_path / "one", [p for p in PEOPLE if p[1] == "man"] + [PEOPLE[2]])
    code, output = _run(tmp_path, GROUNDED.format(family="sd", folder=folder), cache)
    assert code == 2 and "1 image(s) labelled gender = 'woman'" in output, output
    rows = [("a.png", "man", "doctor"), ("b.png", "man", "doctor"),
            ("c.png", "woman", "nurse"), ("d.png", "woman", "nurse")]  # fmt: skip
    folder = _labelled_folder(tmp_path / "split", rows)
    code, output = _run(tmp_path, GROUNDED.format(family="sd", folder=folder), cache)
    assert code == 2 and "grounding.adjust_for" in output and "'occupation'" in output, output


def test_the_selection_error_is_a_usage_error(tmp_path: Path) -> None:
    from auditkit.passes.grounding import grounding_selection

    folder = _labelled_folder(tmp_path / "images", PEOPLE)
    text = GROUNDED.format(family="sd", folder=folder).replace(
        "  prompt: a photo\n", "  prompt: a photo\n  adjust_for: [colour]\n"
    )
    with pytest.raises(UsageError, match=r"grounding.adjust_for\[0\].*no column 'colour'"):
        grounding_selection(parse_spec(text))
