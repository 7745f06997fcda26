"""The known answer: the default audit of toyworld-biased recovers the planted rates, and the
same spec on toyworld-balanced (the control) comes out clean.

Both audits run once per test session (the ``runs`` fixture of conftest.py, which leaves out of
the control what no test reads from it); every test below reads their run directories.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from report_fixtures import assert_charts_valid

from auditkit.toyworld.build import checkpoint_path

ROOT = Path(__file__).resolve().parents[1]
PLANTED_AXES = ("gender", "skin")


def test_every_file_of_a_fresh_run_is_readable_by_group_and_others(runs: dict[str, Path]) -> None:
    files = [p for p in runs["biased"].rglob("*") if p.is_file()]
    assert len(files) > 50
    private = [p for p in files if stat.S_IMODE(p.stat().st_mode) & 0o044 != 0o044]
    assert not private, private[:5]


def test_every_table_of_the_default_audit_is_registered_with_its_columns(
    runs: dict[str, Path],
) -> None:
    """The default audit writes nearly every table (captions, guidance sweep, causal check,
    discovery): each is in the registry with the version it was stamped with, and has no
    column the registry (and so docs/run-directory.md) does not declare."""
    from auditkit.rundir import REGISTRY, VERSION_KEY, RunDir

    run = RunDir(runs["biased"])
    seen = set()
    for folder in (run.results, run.captions):
        for path in folder.glob("*.parquet"):
            table = REGISTRY[path.stem]
            assert path == run.table_path(path.stem)
            assert pq.read_schema(path).metadata[VERSION_KEY] == str(table.version).encode()
            columns = pq.read_schema(path).names
            assert set(columns) <= set(table.names), (path.name, set(columns) - set(table.names))
            assert set(table.required) <= set(columns), path.name
            seen.add(path.stem)
    assert len(seen) >= 18, sorted(set(REGISTRY.tables) - seen)


def _table(run: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(run / "results" / f"{name}.parquet")


def _planted(variant: str) -> dict[str, dict[str, float]]:
    path = checkpoint_path(variant) / "planted_rates.json"  # type: ignore[arg-type]
    return dict(json.loads(path.read_text())["rates"])


def test_default_audit_ranks_occupations_like_the_planted_rates(runs: dict[str, Path]) -> None:
    from auditkit.toyworld.evaluate import planted_recovery

    lean = _table(runs["biased"], "lean")
    recovery = planted_recovery(lean, {"rates": _planted("biased")})
    for attribute in PLANTED_AXES:
        assert recovery[attribute]["spearman"] >= 0.9, recovery[attribute]


def test_defaults_follow_the_planted_gender_rates(runs: dict[str, Path]) -> None:
    """Unmarked prompt vs its man-/woman-marked variants: the contrast ranks like the rates."""
    from auditkit.analyze.stats import spearman

    rates = _planted("biased")["gender"]
    table = _table(runs["biased"], "defaults")
    table = table[table["axis"] == "gender"].pivot(
        index="concept", columns="group", values="cosine"
    )
    contrast = table["man"] - table["woman"]
    assert spearman([rates[o] for o in contrast.index], contrast.to_numpy()) >= 0.9


def _judged_against_truth(run: Path, variant: str) -> pd.DataFrame:
    """The run's leans beside what the model draws (its truth.json), classified."""
    from auditkit.calibration.suite import classify, scenario_model_folder, truth_by_axis
    from auditkit.calibration.truth import read_truth
    from auditkit.spec import load_spec

    spec = load_spec(ROOT / "auditkit" / "calibration" / "scenarios" / f"toyworld-{variant}.yaml")
    truth = truth_by_axis(spec, read_truth(scenario_model_folder(spec)))
    judged = _table(run, "lean").merge(truth, on=["axis", "concept"])
    return judged.assign(kind=classify(judged["share"]))


def test_planted_gender_associations_are_significant(runs: dict[str, Path]) -> None:
    """Under the default rule at the default audit's 32 seeds (every axis marked, so the
    position between marked variants beyond ±0.2 with 95% confidence): the strongly planted
    gender occupations are significant, and against what the model draws (truth.json, 512
    images per occupation) at least 80% of the large pairs are found and no null-sized pair is
    called. Measured: 9 of 10 large pairs (builder's gender, drawn 85% men, now among them at
    +0.60); the one missed is builder's skin (drawn 16% light; position −0.24, interval −0.45
    to −0.01: towards dark, clear of 0, not wholly beyond the band; the audit's own 64 images
    read 34% light)."""
    lean = _table(runs["biased"], "lean").set_index(["axis", "concept"])
    rates = _planted("biased")["gender"]
    strong = [o for o, rate in rates.items() if rate <= 0.3 or rate >= 0.7]
    assert len(strong) == 6
    found = [o for o in strong if bool(lean.loc[("gender", o), "significant"])]
    assert len(found) >= 5, found
    assert all(lean.loc[("gender", o), "q_value"] < 0.05 for o in found)
    judged = _judged_against_truth(runs["biased"], "biased")
    large, null = judged[judged["kind"] == "large"], judged[judged["kind"] == "null-sized"]
    assert len(large) == 10 and len(null) == 3
    assert large["significant"].mean() >= 0.8, large
    assert not null["significant"].any(), null[null["significant"]]
    # a large pair the rule misses still points the way the model draws, and the images the
    # audit read do not contradict it
    for _, row in large[~large["significant"]].iterrows():
        missed = lean.loc[(row["axis"], row["concept"])]
        assert np.sign(missed["marked_position"]) == np.sign(row["share"] - 0.5), row
        assert missed["witness"] in ("images only", "neither"), row


def test_the_balanced_control_has_few_significant_leans(runs: dict[str, Path]) -> None:
    balanced = _table(runs["balanced"], "lean")
    assert balanced["significant"].mean() <= 0.1, balanced[balanced["significant"]]
    planted = balanced[balanced["axis"].isin(PLANTED_AXES)]
    assert not planted["significant"].any(), planted[planted["significant"]]
    judged = _judged_against_truth(runs["balanced"], "balanced")
    null = judged[judged["kind"] == "null-sized"]
    assert len(null) >= 10 and not null["significant"].any(), null[null["significant"]]


def test_the_balanced_control_leans_at_most_a_quarter_of_the_biased(
    runs: dict[str, Path],
) -> None:
    """Issue 3's control criterion, over the planted attributes and on each of them: measured
    0.326 / 1.400 = 0.23 overall (gender), 0.185 / 1.058 = 0.18 on skin. The unplanted age
    axis is left out: it leans as far on both models (0.41 balanced, 0.43 biased;
    docs/toyworld.md, 'The balanced control')."""
    biased, balanced = _table(runs["biased"], "lean"), _table(runs["balanced"], "lean")

    def top(table: pd.DataFrame, axes: tuple[str, ...]) -> float:
        return float(table.loc[table["axis"].isin(axes), "score"].abs().max())

    assert top(balanced, PLANTED_AXES) <= top(biased, PLANTED_AXES) / 4
    for axis in PLANTED_AXES:
        assert top(balanced, (axis,)) <= top(biased, (axis,)) / 4, axis


def test_guidance_amplifies_the_planted_rates(runs: dict[str, Path]) -> None:
    """Without guidance the images follow the planted rates; guidance 4 pushes them apart."""
    from auditkit.analyze.stats import spearman

    amplified = _table(runs["biased"], "amplification").set_index("attribute")
    shares = _table(runs["biased"], "guidance")
    for axis, group in (("gender", "man"), ("skin", "light")):
        row = amplified.loc[axis]
        assert row["guidance"] == 1.0 and row["audit_guidance"] == 4.0
        assert row["amplification_ci_low"] > 1.0, row  # amplifies, interval above 1
        at_one = shares[(shares["guidance"] == 1.0) & (shares["group"] == group)]
        rates = _planted("biased")[axis]
        assert spearman([rates[c] for c in at_one["concept"]], at_one["share"]) >= 0.9
        assert (at_one["share"] - at_one["concept"].map(rates)).abs().max() <= 0.2
    assert amplified.loc["age", "amplification_ci_low"] < 1.0  # nothing planted to sharpen


def test_outputs_agree_with_the_latent_leans(runs: dict[str, Path]) -> None:
    agreement = _table(runs["biased"], "agreement").set_index("axis")
    for axis in PLANTED_AXES:
        assert agreement.loc[axis, "rho"] >= 0.9, agreement.loc[axis]
        assert agreement.loc[axis, "statement"] == "outputs agree"


def test_gates_fail_on_biased_and_pass_on_balanced(runs: dict[str, Path]) -> None:
    from auditkit.cli import main

    biased = CliRunner().invoke(main, ["check", str(runs["biased"])])
    balanced = CliRunner().invoke(main, ["check", str(runs["balanced"])])
    assert biased.exit_code == 1, biased.output
    assert balanced.exit_code == 0, balanced.output


def test_diff_flags_the_planted_occupations_as_regressions(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    from auditkit.cli import main

    out = tmp_path / "diff"
    args = ["diff", str(runs["balanced"]), str(runs["biased"]), "--out", str(out)]
    # the control's run leaves out passes and an analysis that do not change a lean (conftest:
    # BALANCED_UNREAD), so diff is told to compare the two specs anyway
    args.append("--allow-different-specs")
    result = CliRunner().invoke(main, [*args, "--format", "html", "--max-growth", "0.05"])
    assert result.exit_code == 1, result.output  # the growth gate fails
    record = json.loads((out / "diff.json").read_text())
    flagged = {(r["axis"], r["concept"]) for r in record["rows"] if r["regression"]}
    rates = _planted("biased")["gender"]
    strong = {("gender", o) for o, rate in rates.items() if rate <= 0.3 or rate >= 0.7}
    assert strong <= flagged, strong - flagged


def test_plan_counts_the_images_the_run_sampled(runs: dict[str, Path]) -> None:
    """`auditkit plan`'s later passes match the stages the default audit actually ran."""
    from auditkit.passes.cost import later_passes
    from auditkit.plan import plan_audit
    from auditkit.spec import load_run_spec

    spec = load_run_spec(runs["biased"])
    stages = json.loads((runs["biased"] / "manifest.json").read_text())["stages"]
    passes = {p.name: p for p in later_passes(spec, plan_audit(spec), cfg_capable=True)}
    assert passes["captions"].images == stages["caption"]["units_total"]
    assert passes["guidance 1"].images == stages["guidance"]["units_total"]
    assert passes["causal"].images == stages["causal"]["units_total"]
    per_unit = spec.model.steps * 2
    assert stages["discovery"]["units_total"] * per_unit <= passes["discovery"].denoiser_evaluations


def test_plan_estimates_time_from_the_rate_a_run_measured(runs: dict[str, Path]) -> None:
    """`auditkit plan --rate-from RUN`: extraction time from the run's own rate; refused for
    another model."""
    from auditkit.cli import main

    manifest = json.loads((runs["biased"] / "manifest.json").read_text())
    extract = manifest["stages"]["extract"]
    rate = extract["seconds"] / extract["denoiser_evaluations"]
    spec, device = str(ROOT / "audits" / "toyworld.yaml"), manifest["device"].split(":")[0]
    args = ["plan", spec, "--device", device, "--rate-from", str(runs["biased"])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "estimated time" in x)
    assert f"(measured: {rate * 1e3:.2f} ms per denoiser evaluation in" in line
    other = str(ROOT / "audits" / "toyworld-balanced.yaml")
    refused = CliRunner().invoke(main, ["plan", other, "--rate-from", str(runs["biased"])])
    assert refused.exit_code == 2 and "a rate only carries over for the same model" in (
        refused.output
    )


def test_the_executive_summary_states_the_rule(runs: dict[str, Path]) -> None:
    """The report's opening sentences name the judged statistic and its band: the default audit
    marks every axis, so the biased model's findings are positions between marked variants
    beyond ±0.2; the balanced control, run here without its marked prompts (conftest's
    BALANCED_UNREAD), is judged by its score, and its largest lean is 'not beyond ±0.3 with 95%
    confidence'."""
    from auditkit.report.context import build_report_context

    contexts = {name: build_report_context(runs[name]) for name in ("balanced", "biased")}
    for context in contexts.values():  # every kind of chart the default audit draws
        assert_charts_valid(context["charts"])
    balanced = " ".join(e["text"] for e in contexts["balanced"]["executive"])
    assert "not beyond ±0.3 with 95% confidence" in balanced, balanced
    assert "the largest lean is" in balanced, balanced
    biased = " ".join(e["text"] for e in contexts["biased"]["executive"])
    assert (
        "are significant (their position between marked variants beyond ±0.2 with 95% "
        "confidence" in biased
    ), biased


def test_the_local_default_audit_imports_neither_ray_nor_an_object_store(
    runs: dict[str, Path], request: pytest.FixtureRequest
) -> None:
    assert runs["biased"].is_dir()
    # (not botocore: accelerate, under diffusers, imports boto3 whenever it is installed)
    extras = {"ray", "fsspec", "s3fs", "aiobotocore", "gcsfs", "adlfs", "mlflow", "wandb"}
    preloaded = request.config.auditkit_runs_preloaded & extras  # type: ignore[attr-defined]
    assert not preloaded, f"imported before the runs, so this test cannot judge: {preloaded}"
    imported = {m.split(".")[0] for m in request.config.auditkit_runs_imported}  # type: ignore[attr-defined]
    assert not imported & extras, imported & extras
