"""The image-grounded axes' known answer: on toyworld-biased, labelled images drawn by its own
world reproduce the prompt-derived gender and skin axes, and the occupations' leans along the
image-derived axes rank the planted rates (Spearman >= 0.9).

The default audit's session run (``runs`` in conftest.py) is copied (its activation shards
linked, not copied) and run again with a ``grounding`` section: extraction, captioning and the
passes are all reused, so only the labelled images are read and the analysis redone."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from auditkit.analyze.stats import spearman
from auditkit.run import run_audit

ROOT = Path(__file__).resolve().parents[1]
PLANTED = ROOT / "auditkit" / "toyworld" / "checkpoints" / "toyworld-biased" / "planted_rates.json"
GROUNDING = """
grounding:
  # 256 people drawn by toyworld-biased's own world, every attribute uniform and independent;
  # the first 64 of each group of each axis are read (adjusted for the other labels)
  images: {toyworld: 256}
  axes: [gender, skin]
"""


def _link_or_copy(source: str, target: str) -> Any:
    """Activation shards are linked (large, never rewritten: stores replace files), the rest
    copied, so the session run stays as it was."""
    if source.endswith(".safetensors"):
        os.link(source, target)
        return target
    return shutil.copy2(source, target)


@pytest.fixture(scope="module")
def grounded(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("grounded")
    run = root / "run"
    shutil.copytree(runs["biased"], run, copy_function=_link_or_copy)
    spec = root / "grounded.yaml"
    spec.write_text((ROOT / "audits" / "toyworld.yaml").read_text() + GROUNDING)
    started = time.perf_counter()
    first = run_audit(spec, run, show_progress=False, render=True)
    seconds = time.perf_counter() - started
    again = run_audit(spec, run, show_progress=False, render=False)
    return {"run": run, "first": first.manifest, "again": again.manifest, "seconds": seconds}


def test_the_axes_are_grounded_with_intervals(grounded: dict[str, Any]) -> None:
    run = grounded["run"]
    axes = pd.read_parquet(run / "results" / "grounding_axes.parquet").set_index("axis")
    assert list(axes.index) == ["gender", "skin"]
    for axis in ("gender", "skin"):
        row = axes.loc[axis]
        assert (row["n_positive"], row["n_negative"]) == (64, 64)
        others = {"gender", "skin", "age", "occupation"} - {axis}
        assert row["adjusted_for"] == ",".join(sorted(others))
        assert row["cosine_ci_low"] <= row["cosine"] + 0.05 and row["cosine_ci_high"] <= 1.0
        assert row["cosine_ci_low"] < row["cosine_ci_high"]
        # measured: gender 0.71 [0.68, 0.73], skin 0.77 [0.75, 0.78]; chance about 0.14
        assert row["cosine_ci_low"] > 0.5 and row["chance_cosine"] < 0.3
        assert row["reproduced"] and row["other_cosine"] < 0.3
    summary = json.loads((run / "results" / "summary.json").read_text())
    block = {a["axis"]: a for a in summary["analyses"]["grounding"]["axes"]}
    assert block["gender"]["cosine"] == pytest.approx(float(axes.loc["gender", "cosine"]), abs=1e-6)
    assert any(f.startswith("Grounding of 'skin'") for f in summary["findings"])


def test_the_image_leans_rank_the_planted_rates(grounded: dict[str, Any]) -> None:
    rates = json.loads(PLANTED.read_text())["rates"]
    leans = pd.read_parquet(grounded["run"] / "results" / "grounding_leans.parquet")
    for axis in ("gender", "skin"):
        part = leans[leans["axis"] == axis]
        assert len(part) == 8 and part["image_score"].notna().all()
        rho = spearman(part["image_score"], [rates[axis][c] for c in part["concept"]])
        assert rho >= 0.9, (axis, rho)  # measured: gender 0.95, skin 0.95
        # each lean along the image axis has its interval over images
        assert (part["image_score_ci_low"] <= part["image_score_ci_high"]).all()


def test_the_pass_is_recorded_reused_and_sealed(grounded: dict[str, Any]) -> None:
    from auditkit.verify import verify_run

    first, again = grounded["first"]["stages"], grounded["again"]["stages"]
    assert first["extract"]["units_run"] == 0 and first["caption"]["units_run"] == 0
    stage = first["grounding"]
    assert stage["units_run"] == stage["units_total"] == stage["images"] > 64
    assert stage["axes"] == ["gender", "skin"] and stage["source"].startswith("toyworld draw")
    assert again["grounding"]["units_run"] == 0 and again["grounding"]["units_skipped"] > 64
    assert again["analyze"]["reused"] and again["grounding"]["seconds"] == 0.0
    checked = verify_run(grounded["run"])
    assert not checked.problems, checked.problems
    html = (grounded["run"] / "report" / "report.html").read_text()
    assert 'id="grounding"' in html and "Grounding of each axis" in html
    assert html.index("How the images were read") < html.index('id="caveats"')
