"""`auditkit plan`: exact counts from the spec, and the device the estimate is for."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_plan_counts_the_default_audit_and_names_this_machines_device() -> None:
    import torch

    result = CliRunner().invoke(main, ["plan", str(ROOT / "audits" / "toyworld.yaml")])
    assert result.exit_code == 0, result.output
    lines = {line.strip().split("  ")[0]: line for line in result.output.splitlines()[1:]}
    # 68 prompts, and 64 more since every axis is marked (8 occupations x 2 templates x 2
    # groups, for skin and for age)
    assert "132" in lines["prompts"] and "32" in lines["seeds per prompt"]
    assert "4224" in lines["images (units)"]
    assert "84480" in lines["denoiser evaluations"]  # 4224 units x 10 steps x 2 (guidance)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"on {expected} (auto: this machine)" in lines["estimated time"]
    assert "for the later passes" in lines["estimated time"]
    # the passes after extraction: 8 occupations x 2 templates x 32 seeds are captioned (their
    # images decoded by extraction itself) and swept at guidance 1 (no second, unconditional
    # half); the causal check steers 16 prompts x 4 seeds x 3 alphas along gender; discovery
    # extracts at most 8 terms x 32 seeds
    assert "512 images, decoded as extraction samples them, no denoiser" in lines["captions"]
    assert "512 images, 5120 denoiser evaluations" in lines["guidance 1"]
    assert "192 images, 3840 denoiser evaluations" in lines["causal"]
    assert "at most 5120 denoiser evaluations" in lines["discovery"]
    forced = CliRunner().invoke(
        main, ["plan", str(ROOT / "audits" / "toyworld.yaml"), "--device", "cuda"]
    )
    assert forced.exit_code == 0 and "later passes on cuda (rough" in forced.output


def test_a_sweep_above_an_unguided_audit_counts_both_batch_halves(tmp_path: Path) -> None:
    import yaml

    spec = yaml.safe_load((ROOT / "audits" / "toyworld.yaml").read_text())
    spec["model"]["guidance_scale"] = 1.0
    spec["captions"]["guidance"] = [4.0]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(main, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    lines = {line.strip().split("  ")[0]: line for line in result.output.splitlines()[1:]}
    assert "42240 (" in lines["denoiser evaluations"]  # no guidance: one batch half
    assert "512 images, decoded as extraction samples them" in lines["captions"]
    assert "512 images, 10240 denoiser evaluations" in lines["guidance 4"]  # both halves


def test_a_cached_hub_model_is_read_for_the_plan(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import huggingface_hub.constants

    from auditkit.models.loading import existing_model_folder
    from auditkit.spec.sampling import ModelSpec

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--tiny--lcm"
    commit = "3" * 40
    shutil.copytree(tiny_pipeline_dirs["lcm"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    found = existing_model_folder(ModelSpec(id="tiny/lcm"), tmp_path)
    assert found == repo / "snapshots" / commit
    assert existing_model_folder(ModelSpec(id="tiny/absent"), tmp_path) is None


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (None, "no readable manifest.json there"),
        (
            {"model": {"id": "someone/else"}, "device": "cpu", "stages": {}},
            "a rate only carries over for the same model",
        ),
        (
            {"model": {"id": "builtin:toyworld-biased"}, "device": "cuda:0", "stages": {}},
            "that run extracted on cuda, the estimate is for cpu",
        ),
        (
            {
                "model": {"id": "builtin:toyworld-biased"},
                "device": "cpu",
                "stages": {"extract": {"denoiser_evaluations": 0, "seconds": 0.0}},
            },
            "its extraction computed nothing",
        ),
    ],
)
def test_rate_from_refuses_a_run_that_cannot_tell(
    tmp_path: Path, manifest: dict[str, object] | None, message: str
) -> None:
    import json

    if manifest is not None:
        (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    spec = str(ROOT / "audits" / "toyworld.yaml")
    args = ["plan", spec, "--device", "cpu", "--rate-from", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"--rate-from '{tmp_path}'" in result.output and message in result.output


def test_rate_from_scales_extraction_and_later_passes() -> None:
    """2 ms per evaluation: 84,480 evaluations take 169 s, the later passes' 14,080 take 28 s (the
    captioned images are decoded by extraction: no denoiser evaluations of their own)."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        manifest = {
            "model": {"id": "builtin:toyworld-biased"},
            "device": "cpu",
            "stages": {"extract": {"unet_evaluations": 1000, "seconds": 2.0}},
        }
        (Path(folder) / "manifest.json").write_text(json.dumps(manifest))
        spec = str(ROOT / "audits" / "toyworld.yaml")
        args = ["plan", spec, "--device", "cpu", "--rate-from", folder]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "estimated time" in x)
    assert "2m48s + 28s for the later passes on cpu (measured: 2.00 ms" in line, line


def test_measure_times_real_passes_of_the_model_here(tmp_path: Path) -> None:
    """--measure loads toyworld-biased and its captioner, times one extraction batch and one
    captioned batch, and prices every stage from them (the accuracy is measured in
    benchmarks/, not here)."""
    spec = str(ROOT / "audits" / "toyworld.yaml")
    result = CliRunner().invoke(main, ["plan", spec, "--measure"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "estimated time" in x)
    assert "for the later passes +" in line and "loading =" in line, line
    assert "(measured here:" in line and "ms per denoiser evaluation at batch 64" in line, line
    assert "ms per image decoded and read" in line, line
    assert "rough" not in line and "analysis and the report come on top" in result.output
    both = CliRunner().invoke(main, ["plan", spec, "--measure", "--rate-from", str(tmp_path)])
    assert both.exit_code == 2 and "pass one of them" in both.output
