"""The calibration suite, reduced: the min_effect rule on synthetic stores with planted
nuisance (null-sized leans not called, large ones found, intervals that carry the wording),
the legacy rules' failure it replaces, and the truth stored with the toyworld checkpoints.

The full suite (every scenario at 16-128 seeds) is ``auditkit calibrate run``; its table is in
docs/method.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from auditkit.analyses.stage import analyze_audit
from auditkit.analyze.stats import spearman
from auditkit.calibration.suite import (
    classify,
    lean_share_mapping,
    rates,
    scenario_model_folder,
    stored_scenarios,
    synthetic_calls,
    truth_by_axis,
    with_statistics,
)
from auditkit.calibration.synthetic import NUISANCE, scenario_spec, simulate
from auditkit.calibration.truth import read_truth
from auditkit.plan import plan_audit
from auditkit.spec import load_spec

SCENARIOS = Path(__file__).resolve().parents[1] / "auditkit" / "calibration" / "scenarios"


@pytest.fixture(scope="module")
def nuisance_calls() -> pd.DataFrame:
    """Eight simulated audits of the nuisance scenario at 16 and 32 seeds, judged by the
    default rule and the legacy permuted-labels rule."""
    return synthetic_calls(
        "synthetic-nuisance",
        (16, 32),
        replicates=6,
        methods=("min_effect", "min_effect, marked position", "labels (legacy)"),
        resamples=300,
    )


def test_min_effect_calls_no_null_sized_lean_and_finds_large_ones(
    nuisance_calls: pd.DataFrame,
) -> None:
    table = rates(nuisance_calls).set_index(["method", "seeds"])
    for seeds in (16, 32):
        row = table.loc[("min_effect", seeds)]
        assert row["null_called"] <= 0.10, row
    assert table.loc[("min_effect", 32), "large_found"] >= 0.8


def test_the_marked_position_calls_no_null_sized_lean_and_finds_large_ones(
    nuisance_calls: pd.DataFrame,
) -> None:
    """The same rule judging the position between marked variants, with its own band."""
    table = rates(nuisance_calls).set_index(["method", "seeds"])
    for seeds in (16, 32):
        assert table.loc[("min_effect, marked position", seeds), "null_called"] <= 0.10
    assert table.loc[("min_effect, marked position", 32), "large_found"] >= 0.8
    judged = nuisance_calls[nuisance_calls["method"] == "min_effect, marked position"]
    assert judged["marked_position"].notna().all()  # every synthetic axis is marked


def test_the_legacy_labels_rule_calls_null_sized_leans(nuisance_calls: pd.DataFrame) -> None:
    """The failure the default rule replaces: a shift and chance alignments that no image
    shows, reproducible across seeds, are 'significant' under the permuted-labels rule, and
    more so with more seeds."""
    table = rates(nuisance_calls).set_index(["method", "seeds"])
    legacy = table.xs("labels (legacy)", level="method")["null_called"]
    assert legacy.loc[32] >= 0.2
    assert legacy.loc[32] >= legacy.loc[16]


def test_hierarchical_intervals_carry_the_wording() -> None:
    """Over simulated audits whose templates and group terms move the leans, 95% intervals
    that resample the wording cover the population lean in 90-99% of cases; seed-only
    intervals do not."""
    coverage = {}
    for mode in ("hierarchical", "seeds"):
        spec = with_statistics(
            scenario_spec(NUISANCE, 24), resampling=mode, bootstrap_resamples=300
        )
        plan = plan_audit(spec)
        rng = np.random.default_rng(11)
        covered: list[bool] = []
        for _ in range(12):
            latents, population = simulate(spec, NUISANCE, rng)
            lean = analyze_audit(spec, plan, latents)["lean"].merge(
                population, on=["axis", "concept"]
            )
            inside = (lean["score_ci_low"] <= lean["population_score"]) & (
                lean["population_score"] <= lean["score_ci_high"]
            )
            covered.extend(inside.tolist())
        coverage[mode] = float(np.mean(covered))
    assert 0.90 <= coverage["hierarchical"] <= 0.99, coverage
    assert coverage["seeds"] < 0.85, coverage


def test_classify_and_mapping_on_known_rows() -> None:
    share = pd.Series([0.5, 0.54, 0.56, 0.69, 0.71, 0.2])
    assert classify(share).tolist() == [
        "null-sized",
        "null-sized",
        "between",
        "between",
        "large",
        "large",
    ]
    calls = pd.DataFrame(
        {
            "scenario": ["m"] * 4,
            "method": ["min_effect"] * 4,
            "seeds": [32] * 4,
            "replicate": [0] * 4,
            "axis": ["g"] * 4,
            "concept": ["a", "b", "c", "d"],
            "score": [0.1, -0.6, 0.9, 0.2],
            "share": [0.52, 0.2, 0.9, 0.5],
            "significant": [False, True, True, False],
        }
    )
    mapping = lean_share_mapping(calls).set_index("score_low")
    assert mapping.loc[0.5, "median_skew"] == pytest.approx(0.3)  # -0.6 with 0.2: 0.3 towards
    assert mapping.loc[0.8, "median_skew"] == pytest.approx(0.4)
    assert mapping.loc[0.0, "pairs"] == 1 and mapping.loc[0.15, "pairs"] == 1


@pytest.mark.parametrize("name", stored_scenarios())
def test_truth_is_stored_with_each_calibration_model(name: str) -> None:
    """Each stored scenario's model carries a truth read at 512 seeds at the scenario's own
    settings, covering every axis and concept of the scenario."""
    spec = load_spec(SCENARIOS / f"{name}.yaml")
    truth = read_truth(scenario_model_folder(spec))
    settings = truth["settings"]
    assert settings["seeds"] == 512
    assert settings["guidance_scale"] == spec.model.guidance_scale
    assert settings["steps"] == spec.model.steps
    assert settings["templates"] == list(spec.concepts[0].templates)
    table = truth_by_axis(spec, truth)
    axes = [a.name for a in spec.analysis_axes]
    assert len(table) == len(axes) * len(spec.concepts[0].terms)
    assert (table["share"].between(0, 1)).all()
    assert all(row["images"] == 512 for row in truth["rows"])


def test_biased_truth_follows_the_planted_rates() -> None:
    spec = load_spec(SCENARIOS / "toyworld-biased.yaml")
    folder = scenario_model_folder(spec)
    truth = truth_by_axis(spec, read_truth(folder)).set_index(["axis", "concept"])
    planted = json.loads((folder / "planted_rates.json").read_text())["rates"]
    for axis in ("gender", "skin"):
        concepts = list(planted[axis])
        drawn = [truth.loc[(axis, c), "share"] for c in concepts]
        assert spearman([planted[axis][c] for c in concepts], drawn) >= 0.9


def test_calibrate_quick_writes_the_table(tmp_path: Path) -> None:
    from auditkit.cli import main

    result = CliRunner().invoke(
        main,
        [
            "calibrate",
            "run",
            "--quick",
            "--seeds",
            "16",
            "--replicates",
            "1",
            "--work",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    text = (tmp_path / "calibration.md").read_text()
    assert "| synthetic-nuisance | min_effect |" in text
    assert pd.read_parquet(tmp_path / "rates.parquet")["seeds"].tolist()[0] == 16
    bad = CliRunner().invoke(
        main, ["calibrate", "run", "--scenario", "nowhere", "--work", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "unknown calibration scenario" in bad.output

    # judged in parts (one scenario each), merged: the same rates and table
    calls = pd.read_parquet(tmp_path / "calls.parquet")
    parts = []
    for name, frame in calls.groupby("scenario", sort=False):
        parts.append(tmp_path / f"{name}.parquet")
        frame.to_parquet(parts[-1], index=False)
    assert len(parts) == 2
    merged = tmp_path / "merged"
    table = ["calibrate", "table", *map(str, parts), "--work", str(merged)]
    result = CliRunner().invoke(main, table)
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(
        pd.read_parquet(merged / "rates.parquet"), pd.read_parquet(tmp_path / "rates.parquet")
    )
    rows = [line for line in text.splitlines() if line.startswith("| synthetic")]
    assert rows and rows == [
        line
        for line in (merged / "calibration.md").read_text().splitlines()
        if line.startswith("| synthetic")
    ]
    assert "merged from 2 runs" in (merged / "calibration.md").read_text()
    twice = CliRunner().invoke(main, [*table[:2], str(parts[0]), str(parts[0])])
    assert twice.exit_code == 2 and "judges scenario 'synthetic' again" in twice.output
    (tmp_path / "other.parquet").write_bytes(b"not parquet")
    broken = CliRunner().invoke(main, [*table[:2], str(tmp_path / "other.parquet")])
    assert broken.exit_code == 2 and "other.parquet' cannot be read" in broken.output
