"""How close ``auditkit plan --measure`` comes to the real wall time, and the rough estimate.

For each spec: ``auditkit plan SPEC`` (rough) and ``auditkit plan SPEC --measure`` are run and
their totals parsed, then ``auditkit run SPEC`` into a fresh folder is timed as a whole command.
Specs: the toyworld default audit, and a model the rough estimate has never seen: a tiny SD
pipeline of another U-Net size (block widths 48/96, not the builtin's 32/64) sampled with
20 DDIM steps, from a local folder.

Usage: python benchmarks/plan_measure.py
Prints, per spec, the estimates, the measured wall time, and estimate / wall.
"""

from __future__ import annotations

import atexit
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AUDITKIT = str(Path(sys.executable).with_name("auditkit"))

UNSEEN = """spec_version: 1
name: unseen-ddim
model: {{id: "{folder}", device: cpu, scheduler: ddim, steps: 20, guidance_scale: 5.0,
        resolution: 64}}
seeds: 8
batch_size: 16
axes:
  - name: gender
    templates: ["a photo of a {{term}}", "a portrait of a {{term}}"]
    groups: {{man: [man, father, boy], woman: [woman, mother, girl]}}
concepts:
  - name: jobs
    templates: ["a photo of a {{term}}", "a portrait of a {{term}}"]
    terms: [doctor, nurse, pilot, teacher, chef, farmer, builder, singer, lawyer, baker]
analyses: [lean, lean_by_step]
centring: {{reference: set_mean}}
"""


def _seconds(text: str) -> float:
    """'1m27s' / '49s' / '1h02m' -> seconds."""
    total = 0.0
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)([hms])", text):
        total += float(value) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


def _estimate(spec: Path, *extra: str) -> tuple[float, str]:
    done = subprocess.run([AUDITKIT, "plan", str(spec), *extra], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    line = next(x for x in done.stdout.splitlines() if "estimated time" in x)
    head = line.split("estimated time", 1)[1].split(" on ", 1)[0]
    if "=" in head:  # --measure: "... loading = TOTAL"
        return _seconds(head.split("=")[-1]), line.strip()
    return sum(_seconds(part) for part in head.split("+")), line.strip()


def _unseen_model(work: Path) -> Path:
    """A tiny SD pipeline with wider U-Net blocks than the builtin's, saved as a folder."""
    from auditkit.models.tiny import tiny_pipeline_path

    base = tiny_pipeline_path("sd", work / "models")  # type: ignore[arg-type]
    import shutil

    folder = work / "unseen-sd"
    shutil.copytree(base, folder)
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["block_out_channels"] = [48, 96]
    config_path.write_text(json.dumps(config))
    from diffusers import UNet2DConditionModel

    UNet2DConditionModel.from_config(config).save_pretrained(folder / "unet")
    return folder


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="auditkit-plan-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # no scratch left in /tmp
    unseen = work / "unseen.yaml"
    unseen.write_text(UNSEEN.format(folder=_unseen_model(work)))
    specs = {"toyworld default audit": ROOT / "audits" / "toyworld.yaml", "unseen DDIM-20": unseen}
    rows = []
    for name, spec in specs.items():
        rough, _ = _estimate(spec)
        measured, line = _estimate(spec, "--measure")
        started = time.perf_counter()
        out = work / f"run-{len(rows)}"
        done = subprocess.run(
            [AUDITKIT, "run", str(spec), "--out", str(out), "--no-progress"],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        if done.returncode not in (0, 1):
            raise SystemExit(done.stdout + done.stderr)
        manifest = json.loads((out / "manifest.json").read_text())
        sampling = sum(
            float(stage.get("seconds") or 0.0)
            for key, stage in manifest["stages"].items()
            if key in ("extract", "caption", "guidance", "causal", "discovery")
        )
        rows.append((name, rough, measured, wall, sampling, line))
    print(f"{'spec':24} {'rough s':>8} {'measure s':>9} {'run wall s':>10} {'sampling s':>10} "
          f"{'measure/wall':>12} {'rough/wall':>10}")  # fmt: skip
    for name, rough, measured, wall, sampling, _ in rows:
        print(f"{name:24} {rough:8.1f} {measured:9.1f} {wall:10.1f} {sampling:10.1f} "
              f"{measured / wall:12.2f} {rough / wall:10.2f}")  # fmt: skip
    for name, *_, line in rows:
        print(f"{name}: {line}")


if __name__ == "__main__":
    main()
