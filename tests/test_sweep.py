"""The layer sweep: one sampling pass read at every hook point, one lean audit per hook, and
the table that sets them side by side (Spearman against planted rates when the model has them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from auditkit.analyze.stats import spearman
from auditkit.extract.store import ActivationStore
from auditkit.run import run_audit
from auditkit.spec import parse_spec
from auditkit.sweep import sweep_hooks

SPEC = """
spec_version: 1
name: sweep
model: {{id: "{model}", device: cpu, steps: 2, guidance_scale: 3.0, resolution: 32}}
seeds: 3
batch_size: 6
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
concepts:
  - name: jobs
    templates: ["a photo of a {{term}}"]
    terms: [doctor, nurse, pilot, chef]
analyses: [lean, defaults]
"""
HOOKS = ["unet.down_blocks.0", "unet.mid_block", "unet.up_blocks.1"]
RATES = {"doctor": 0.7, "nurse": 0.1, "pilot": 0.9, "chef": 0.4}


@pytest.fixture(scope="module")
def model(tiny_pipeline_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD pipeline with a model card's planted rates beside it."""
    folder = tmp_path_factory.mktemp("model") / "tiny-sd-planted"
    shutil.copytree(tiny_pipeline_dirs["sd"], folder)
    card = {"rates": {"gender": RATES}, "rate_meaning": "share of the first group"}
    (folder / "planted_rates.json").write_text(json.dumps(card))
    return folder


def test_one_pass_feeds_every_hook_and_the_table_compares_them(model: Path, tmp_path: Path) -> None:
    spec = parse_spec(SPEC.format(model=model))
    outcome = sweep_hooks(spec, tmp_path / "sweep", hooks=HOOKS, show_progress=False)
    table = pd.read_csv(outcome.table)
    assert list(table["hook"]) == HOOKS and set(table["axis"]) == {"gender"}
    assert list(table["depth"]) == [0, 1, 2]
    widths = dict(zip(table["hook"], table["width"], strict=True))
    # 32 px -> 16x16 latents; down block 0 keeps 16x16 at 32 channels... every hook its own h
    assert widths["unet.mid_block"] == 64 * 8 * 8 and len(set(widths.values())) == 3
    for hook in HOOKS:
        run = tmp_path / "sweep" / hook
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["stages"]["extract"]["units_run"] == 0  # the sweep's pass stored them
        lean = pd.read_parquet(run / "results" / "lean.parquet")
        assert not (run / "results" / "defaults.parquet").exists()  # lean-only audits
        row = table[table["hook"] == hook].iloc[0]
        scores = [float(lean.set_index("concept").loc[c, "score"]) for c in RATES]
        assert row["spearman_planted"] == pytest.approx(
            spearman(scores, list(RATES.values())), abs=1e-4
        )
        assert row["mean_abs_score"] == pytest.approx(lean["score"].abs().mean(), abs=1e-4)
    assert outcome.chart is not None and outcome.chart.stat().st_size > 1000


def test_a_hook_read_in_the_sweep_equals_its_own_audit(model: Path, tmp_path: Path) -> None:
    """Reading several hooks in one pass changes nothing: the mid block's stored h is the one
    an audit of that hook alone stores."""
    spec = parse_spec(SPEC.format(model=model))
    sweep_hooks(spec, tmp_path / "sweep", hooks=HOOKS, show_progress=False)
    alone = parse_spec(
        SPEC.format(model=model).replace("analyses: [lean, defaults]", "analyses: [lean]")
        + "probe: {hook: unet.mid_block}\n"
    )
    run_audit(alone, tmp_path / "alone", show_progress=False, render=False)
    swept = ActivationStore(tmp_path / "sweep" / "unet.mid_block" / "activations")
    single = ActivationStore(tmp_path / "alone" / "activations")
    assert swept.completed() == single.completed()
    units = sorted(single.completed())
    pairs = zip(swept.iter_units(units), single.iter_units(units), strict=True)
    for (unit_a, a), (unit_b, b) in pairs:
        assert unit_a == unit_b and np.array_equal(np.asarray(a), np.asarray(b))


def test_the_cli_prints_the_table(model: Path, tmp_path: Path) -> None:
    from auditkit.cli import main

    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(model=model))
    out = tmp_path / "sweep"
    result = CliRunner().invoke(
        main, ["sweep-hooks", str(path), "--out", str(out), "--hooks", ",".join(HOOKS),
               "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| `unet.mid_block` |" in result.output and "table:" in result.output
    assert (out / "sweep.csv").is_file()
