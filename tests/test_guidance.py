"""The guidance sweep: the spec's located errors, the amplification statistic on planted
shares, and the stage on the tiny LCM pipeline (stored apart, resumable, no model on rerun)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from auditkit.analyze.guidance import (
    GUIDANCE_COLUMNS,
    amplification,
    amplification_sentence,
    amplification_verdict,
)
from auditkit.errors import SpecError
from auditkit.spec import dump_spec, parse_spec, spec_hash

BODY = """\
spec_version: 1
name: sweep
model: {{id: {model}, device: cpu, steps: 2, guidance_scale: 3.0, resolution: 32}}
seeds: 3
batch_size: 4
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
concepts:
  - name: jobs
    templates: ["a photo of a {{term}}"]
    terms: [doctor, nurse, pilot]
analyses: [lean]
statistics: {{bootstrap_resamples: 0}}
captions:
  captioner: {{kind: toyworld}}
  seeds: 2
{guidance}"""


def _spec_text(model: Path | str, guidance: str = "") -> str:
    return BODY.format(model=model, guidance=guidance)


def test_guidance_scales_are_checked_and_default_leaves_hashes_unchanged() -> None:
    plain = parse_spec(_spec_text("builtin:tiny-lcm"))
    assert plain.captions is not None and plain.captions.guidance == []
    assert "\n  guidance: []\n" in dump_spec(plain)  # recorded; the hash leaves it out
    swept = parse_spec(_spec_text("builtin:tiny-lcm", "  guidance: [1.0, 7.5]\n"))
    assert swept.captions is not None and swept.captions.guidance == [1.0, 7.5]
    assert spec_hash(swept) != spec_hash(plain)
    for bad, message in (
        ("[3.0]", "captions.guidance[0] (line 19): 3 is the audit's own guidance scale"),
        ("[1.0, 1.0]", "captions.guidance[1] (line 19): 1 is listed twice"),
        ("[-1.0]", "captions.guidance[0] (line 19): -1.0 is not a guidance scale"),
        ("[0.5]", "captions.guidance[0] (line 19): 0.5 is not a guidance scale between 1"),
    ):
        with pytest.raises(SpecError) as err:
            parse_spec(_spec_text("builtin:tiny-lcm", f"  guidance: {bad}\n"))
        assert any(p.startswith(message) for p in err.value.problems), err.value.problems
    with pytest.raises(SpecError) as err:
        parse_spec(_spec_text("builtin:tiny-lcm", "  guidance: [1.0]\n  roles: [axis]\n"))
    assert any("captions.roles does not caption them" in p for p in err.value.problems)


def _shares(audit: dict[str, float], other: dict[str, float], scale: float) -> pd.DataFrame:
    """A guidance table: share read as 'man' per concept at the audit's scale 4 and ``scale``."""
    rows = []
    for guidance, is_audit, table in ((4.0, True, audit), (scale, False, other)):
        for concept, share in table.items():
            for group, value in (("man", share), ("woman", 1 - share)):
                rows.append(
                    {
                        **{"guidance": guidance, "audit": is_audit, "concept_set": "jobs"},
                        **{"concept": concept, "attribute": "gender", "group": group},
                        **{"n_images": 100, "n_unread": 0, "count": round(100 * value)},
                        **{"share": value, "share_low": value, "share_high": value},
                        **{"reference_kind": "uniform", "reference": 0.5},
                    }
                )
    return pd.DataFrame(rows, columns=list(GUIDANCE_COLUMNS))


def test_amplification_is_the_ratio_of_mean_distances_with_a_concept_interval() -> None:
    audit = {"a": 0.9, "b": 0.1, "c": 0.8, "d": 0.3}  # distances 0.4, 0.4, 0.3, 0.2
    plain = {"a": 0.7, "b": 0.3, "c": 0.65, "d": 0.4}  # distances 0.2, 0.2, 0.15, 0.1
    row = amplification(_shares(audit, plain, 1.0), resamples=500, seed=3).iloc[0]
    assert row["n_concepts"] == 4 and row["guidance"] == 1.0 and row["audit_guidance"] == 4.0
    assert row["spread"] == pytest.approx(0.1625) and row["audit_spread"] == pytest.approx(0.325)
    assert row["amplification"] == pytest.approx(2.0)
    # every concept is exactly twice as far: every resample gives 2
    assert row["amplification_ci_low"] == pytest.approx(2.0)
    assert row["amplification_ci_high"] == pytest.approx(2.0)
    assert amplification_verdict(row) == "amplifies"
    assert "×2.00 as far from the reference" in amplification_sentence(row)


def test_amplification_interval_covers_one_when_guidance_changes_nothing() -> None:
    rng = np.random.default_rng(0)
    base = {f"c{i}": float(v) for i, v in enumerate(rng.uniform(0.2, 0.8, 12))}
    noisy = {c: float(np.clip(v + rng.normal(0, 0.05), 0, 1)) for c, v in base.items()}
    row = amplification(_shares(noisy, base, 1.0), resamples=1000, seed=0).iloc[0]
    assert row["amplification_ci_low"] < 1.0 < row["amplification_ci_high"], row
    assert amplification_verdict(row) == "no clear change"
    # a higher swept scale is compared the same way: higher over lower
    sharper = amplification(_shares(base, {c: 0.95 for c in base}, 9.0), seed=0).iloc[0]
    assert sharper["amplification"] > 1 and amplification_verdict(sharper) == "amplifies"
    assert "Guidance 9 vs 4" in amplification_sentence(sharper)
    flatter = amplification(_shares(base, {c: 0.5 for c in base}, 9.0), seed=0).iloc[0]
    assert flatter["amplification"] == 0 and amplification_verdict(flatter) == "dampens"


def test_no_spread_at_the_lower_scale_is_infinite_amplification_not_missing() -> None:
    row = amplification(_shares({"a": 0.9, "b": 0.8}, {"a": 0.5, "b": 0.5}, 1.0)).iloc[0]
    assert np.isinf(row["amplification"]) and amplification_verdict(row) == "amplifies"
    assert "only at the higher scale" in amplification_sentence(row)
    # one concept far off at the lower scale: resamples without it are infinite, and the
    # interval keeps them (its upper end), so a ratio of 1 is not called 'dampens'
    audit = {c: 0.6 for c in "abcde"}
    lower = {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5, "e": 1.0}
    even = amplification(_shares(audit, lower, 1.0), resamples=2000, seed=0).iloc[0]
    assert even["amplification"] == pytest.approx(1.0)
    assert np.isinf(even["amplification_ci_high"]) and even["amplification_ci_low"] < 1
    assert amplification_verdict(even) == "no clear change"
    neither = amplification(_shares({"a": 0.5}, {"a": 0.5}, 1.0)).iloc[0]
    assert np.isnan(neither["amplification"]) and "not measured" in amplification_sentence(neither)


def test_unread_concepts_are_left_out_of_the_comparison() -> None:
    table = _shares({"a": 0.9, "b": 0.2}, {"a": 0.7, "b": 0.4}, 1.0)
    table.loc[(table["concept"] == "b") & ~table["audit"], "share"] = np.nan
    row = amplification(table, resamples=100).iloc[0]
    assert row["n_concepts"] == 1 and row["amplification"] == pytest.approx(2.0)
    assert np.isnan(row["amplification_ci_low"])  # one concept: nothing to resample


def test_sweep_is_stored_apart_resumes_and_feeds_the_analysis(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from auditkit.passes.guidance import read_guidance_readings
    from auditkit.run import run_audit

    path = tmp_path / "spec.yaml"
    path.write_text(_spec_text(tiny_pipeline_dirs["lcm"], "  guidance: [1.0]\n"))
    out = run_audit(path, tmp_path / "run", cache_dir=tmp_path, show_progress=False, render=False)
    stage = out.manifest["stages"]["guidance"]
    assert stage["scales"] == [1.0] and stage["units_run"] == 6 and stage["model_loaded"]
    swept = read_guidance_readings(out.run_dir / "captions")
    assert swept is not None and set(swept["guidance"]) == {1.0}
    assert len(swept) == 6 * 4  # 3 concepts x 2 seeds x 4 attributes read
    captions = out.run_dir / "captions"
    assert len(list((captions / "guidance" / "units").iterdir())) == 1
    assert len(list((captions / "units").iterdir())) == 1  # the audit's own readings apart
    shares = pd.read_parquet(out.run_dir / "results" / "guidance.parquet")
    assert set(shares["guidance"]) == {1.0, 3.0} and shares["audit"].sum() == 6  # 3 x 2 groups
    amplified = pd.read_parquet(out.run_dir / "results" / "amplification.parquet")
    assert list(amplified["attribute"]) == ["gender"]
    summary = json.loads((out.run_dir / "results" / "summary.json").read_text())
    assert summary["outputs"]["amplification"][0]["attribute"] == "gender"

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a finished sweep loaded the model")

    monkeypatch.setattr("auditkit.models.loading.load_pipeline", refuse)
    again = run_audit(path, tmp_path / "run", cache_dir=tmp_path, show_progress=False, render=False)
    assert again.manifest["stages"]["guidance"]["units_run"] == 0
    # dropping the sweep from the spec removes its tables
    path.write_text(_spec_text(tiny_pipeline_dirs["lcm"]))
    run_audit(path, tmp_path / "run", cache_dir=tmp_path, show_progress=False, render=False)
    assert not (captions / "guidance_readings.parquet").exists()
    assert not (out.run_dir / "results" / "amplification.parquet").exists()
