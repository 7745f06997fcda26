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
    assert "68" in lines["prompts"] and "32" in lines["seeds per prompt"]
    assert "2176" in lines["images (units)"]
    assert "43520" in lines["U-Net evaluations"]  # 2176 units x 10 steps x 2 (guidance)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"on {expected} (auto: this machine)" in lines["estimated time"]
    assert "for the later passes" in lines["estimated time"]
    # the passes after extraction: 8 occupations x 2 templates x 32 seeds are captioned and
    # swept at guidance 1 (no second, unconditional half); the causal check steers 16
    # prompts x 4 seeds x 3 alphas along gender; discovery extracts at most 8 terms x 32 seeds
    assert "512 images, 10240 U-Net evaluations" in lines["captions"]
    assert "512 images, 5120 U-Net evaluations" in lines["guidance 1"]
    assert "192 images, 3840 U-Net evaluations" in lines["causal"]
    assert "at most 5120 U-Net evaluations" in lines["discovery"]
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
    assert "21760 (" in lines["U-Net evaluations"]  # no guidance: one batch half
    assert "512 images, 5120 U-Net evaluations" in lines["captions"]
    assert "512 images, 10240 U-Net evaluations" in lines["guidance 4"]  # both halves


def test_a_cached_hub_model_is_read_for_the_plan(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import huggingface_hub.constants

    from auditkit.models.loading import existing_model_folder
    from auditkit.spec.models import ModelSpec

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
