"""`auditkit plan`: exact counts from the spec, and the device the estimate is for."""

from __future__ import annotations

from pathlib import Path

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
    forced = CliRunner().invoke(
        main, ["plan", str(ROOT / "audits" / "toyworld.yaml"), "--device", "cuda"]
    )
    assert forced.exit_code == 0 and "on cuda for extraction" in forced.output
