"""The lean-by-step analysis slice: exact answers on planted per-step latents, an independent
recomputation from a real tiny pipeline's activation store, its summary, gate and report
section, and the completeness of every registered analysis slice."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from auditkit.analyses import report_order, slices
from auditkit.analyses.base import (
    DECLARED,
    METHODS,
    PARTS,
    Analysis,
    AnalysisContext,
    SectionContext,
)
from auditkit.analyze.latents import LatentSet
from auditkit.analyze.measures import build_layout
from auditkit.plan import plan_audit
from auditkit.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
D = 48
RAMP = (0.0, 0.1, 0.8, 1.0)
"""Planted share of each concept's final lean at the four kept steps: it forms at step 2."""
FINAL = {"doctor": 0.9, "nurse": -0.7, "pilot": 0.4}
SPEC = """
spec_version: 1
name: planted-steps
model: {id: builtin:tiny-sd}
seeds: [1, 2, 3]
axes:
  - name: gender
    templates: ["a photo of a {term}"]
    groups: {man: [man], woman: [woman]}
concepts:
  - name: jobs
    templates: ["a photo of a {term}"]
    terms: [doctor, nurse, pilot]
analyses: [lean, lean_by_step]
"""


def test_every_registered_analysis_declares_every_part() -> None:
    found = slices()
    assert {"lean_by_step", "defaults", "descriptors", "similarity"} <= set(found)
    for name, analysis in found.items():
        assert name in report_order()
        assert report_order().index(name) == report_order().index(analysis.after) + 1 or (
            analysis.after in found
        )
        for part in PARTS:
            assert getattr(analysis, part, None) not in (None, "", ()), (name, part)
        for part in DECLARED:  # may be empty, but said so on the slice itself
            assert any(part in vars(cls) for cls in type(analysis).__mro__[:-2]), (name, part)
        for method in METHODS:
            assert getattr(type(analysis), method) is not getattr(Analysis, method), (name, method)
        assert (ROOT / "templates" / "sections" / f"{name}.html.j2").is_file(), name
        for metric in analysis.gate_metrics:
            assert metric.bound in ("max", "min") and metric.meaning and callable(metric.measure)


def _planted() -> tuple[AnalysisContext, dict[tuple[str, int], float]]:
    """Step s: concept = midpoint + RAMP[s] * FINAL * g/2 (+ an orthogonal part of its own)."""
    spec = parse_spec(SPEC)
    plan = plan_audit(spec)
    rng = np.random.default_rng(0)
    e = np.linalg.qr(rng.normal(size=(D, 8)))[0].T
    ids = tuple(dict.fromkeys(u.prompt_id for u in plan.units))
    first = {p.prompt_id: p for p in plan.prompts}
    step_means = np.zeros((len(ids), len(RAMP), D), dtype=np.float32)
    for i, pid in enumerate(ids):
        p = first[pid]
        for s, ramp in enumerate(RAMP):
            half_g = (1.0 + s) * e[1]  # the axis itself changes size along the trajectory
            if p.role == "axis":
                step_means[i, s] = 4 * e[0] + (half_g if p.group == "man" else -half_g)
            elif p.role == "concept":
                extra = e[2 + list(FINAL).index(p.term)]
                step_means[i, s] = 4 * e[0] + ramp * FINAL[p.term] * half_g + extra
            else:  # a base prompt
                step_means[i, s] = 4 * e[0]
    per_seed = np.repeat(step_means.mean(axis=1)[:, None], 3, axis=1)
    latents = LatentSet(
        ids, (1, 2, 3), per_seed, step_means, (0, 1, 2, 3), (999, 750, 500, 250), "mean"
    )
    ctx = AnalysisContext(spec, plan, latents, build_layout(spec, latents.row_map()))
    truth = {(c, s): RAMP[s] * FINAL[c] for c in FINAL for s in range(len(RAMP))}
    return ctx, truth


def test_planted_per_step_leans_are_recovered_exactly() -> None:
    ctx, truth = _planted()
    analysis = slices()["lean_by_step"]
    table = analysis.build(ctx)["lean_by_step"]
    assert len(table) == 3 * 4 and list(table["concept"].unique()) == list(FINAL)
    for row in table.itertuples():
        assert row.score == pytest.approx(truth[(row.concept, row.step)], abs=1e-5)
    assert "score_ci_low" not in table.columns  # no activation store: point estimates only
    block = analysis.summary(ctx.spec, {"lean_by_step": table})
    (entry,) = block["axes"]
    assert entry["forms_at_step"] == 2 and entry["peak_step"] == 3 and entry["phase"] == "midway"
    assert entry["final_side_at_forms"] == 3 and entry["forms_at_timestep"] == 500
    (sentence,) = analysis.findings(ctx.spec, {"lean_by_step": table})
    assert "'gender'" in sentence and "at step 2 (kept step 3 of 4" in sentence


TINY = """\
spec_version: 1
name: tiny-steps
model: {{id: {model}, device: cpu, steps: 3, guidance_scale: 4.0, resolution: 32}}
seeds: 4
batch_size: 16
axes:
  - name: gender
    templates: ["a photo of a {{term}}", "a picture of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
concepts:
  - name: jobs
    templates: ["a photo of a {{term}}", "a picture of a {{term}}"]
    terms: [doctor, nurse, pilot]
analyses: [lean, lean_by_step]
statistics: {{bootstrap_resamples: 200}}
gates:
  - {{name: no lean at any step, metric: max_step_lean, max: 0.0001}}
report: {{formats: [html]}}
"""


@pytest.fixture(scope="module")
def run_dir(tiny_pipeline_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from auditkit.cli import main

    root = tmp_path_factory.mktemp("lean-by-step")
    spec = root / "spec.yaml"
    spec.write_text(TINY.format(model=tiny_pipeline_dirs["sd"]))
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(root / "run")])
    assert result.exit_code == 1, result.output  # the gate fails: every lean is above 0.0001
    assert "no lean at any step: FAILS" in result.output and "at kept step" in result.output
    return root / "run"


def test_scores_match_an_independent_recomputation_from_the_store(run_dir: Path) -> None:
    """Each step's score, recomputed from the raw stored h: mean over seeds and templates of
    the unit tensors at that step, then (c - midpoint) . g / |g|^2 * 2."""
    from safetensors import safe_open

    table = pd.read_parquet(run_dir / "results" / "lean_by_step.parquet")
    index = pd.read_parquet(run_dir / "activations" / "index.parquet")
    plan = plan_audit(parse_spec((run_dir / "spec.yaml").read_text()))
    h: dict[str, list[np.ndarray]] = {}
    for shard, rows in index.groupby("shard"):
        with safe_open(str(run_dir / "activations" / shard), framework="np") as fh:
            for uid, pid in zip(rows["unit_id"], rows["prompt_id"], strict=True):
                h.setdefault(pid, []).append(fh.get_tensor(uid).reshape(3, -1).astype(np.float64))
    by = {}
    for p in plan.prompts:
        key = p.group if p.role == "axis" else p.term
        by.setdefault(key, []).append(np.mean(h[p.prompt_id], axis=0))  # seed mean [steps, D]
    mean = {k: np.mean(v, axis=0) for k, v in by.items()}  # template mean
    assert len(table) == 3 * 3
    for row in table.itertuples():
        g = mean["man"][row.step] - mean["woman"][row.step]
        mid = (mean["man"][row.step] + mean["woman"][row.step]) / 2
        expected = float((mean[row.concept][row.step] - mid) @ g / (g @ g) * 2)
        assert row.score == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert row.score_ci_low <= row.score_ci_high
    inside = (table["score_ci_low"] <= table["score"]) & (table["score"] <= table["score_ci_high"])
    assert inside.mean() >= 0.8


def test_intervals_read_the_scores_own_prompts_and_equal_every_prompts(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the defaults analysis's marked prompts in the plan (more than half its prompts),
    the per-seed bootstrap of each step reads the score's own prompts alone, and its table
    equals the one drawn over every prompt (the slice's path before it was narrowed)."""
    import json

    from auditkit.analyses import lean_by_step
    from auditkit.analyses.stage import analyze_audit
    from auditkit.analyze.latents import load_latents
    from auditkit.extract.store import ActivationStore
    from auditkit.plan import AuditPlan
    from auditkit.run import run_audit

    text = TINY.format(model=tiny_pipeline_dirs["sd"]).replace(
        "analyses: [lean, lean_by_step]", "analyses: [lean, defaults, lean_by_step]"
    )
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(text.split("gates:")[0])
    out = run_audit(spec_path, tmp_path / "run", show_progress=False, render=False).run_dir
    spec = parse_spec((out / "spec.yaml").read_text())
    plan = AuditPlan.from_json(json.loads((out / "plan.json").read_text()))
    store = ActivationStore(out / "activations")
    latents = load_latents(store, plan, "mean", spec=spec)
    every = len(latents.prompt_ids)
    _, own = lean_by_step._lean_layout(build_layout(spec, latents.row_map()))
    assert len(own) == 11 < every == 23  # the base, 4 axis and 6 concept prompts; 12 marked
    narrowed = analyze_audit(spec, plan, latents, store=store)["lean_by_step"]
    monkeypatch.setattr(lean_by_step, "_lean_layout", lambda layout: (layout, list(range(every))))
    whole = analyze_audit(spec, plan, latents, store=store)["lean_by_step"]
    assert narrowed["score_ci_low"].notna().all()
    pd.testing.assert_frame_equal(narrowed, whole, check_exact=False, rtol=1e-12, atol=1e-12)


def test_summary_findings_and_report_section(run_dir: Path) -> None:
    import json

    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    (entry,) = summary["analyses"]["lean_by_step"]["axes"]
    assert entry["axis"] == "gender" and entry["steps"] == 3
    assert any(f.startswith("Lean by denoising step along 'gender'") for f in summary["findings"])
    html = (run_dir / "report" / "report.html").read_text()
    assert '<section id="lean_by_step"' in html and 'href="#lean_by_step"' in html
    assert 'data-chart="lean-by-step-0"' in html and '"lean-by-step-0"' in html
    assert html.index('id="lean"') < html.index('id="lean_by_step"') < html.index('id="caveats"')


def test_the_slice_touches_three_files_of_the_product() -> None:
    """Its module (which also places its section, after "lean"), its tables' data file beside
    it and its partial: nothing else in auditkit/ or templates/ names it, but a slice that
    places its own section after it."""
    hits = [
        path.relative_to(ROOT).as_posix()
        for folder in ("auditkit", "templates")
        for path in (ROOT / folder).rglob("*")
        if path.is_file()
        and path.suffix in (".py", ".j2", ".css", ".js", ".json", ".yaml")
        and "lean_by_step" in path.read_text(encoding="utf-8", errors="replace")
        and not _follows_only(path, "lean_by_step")
    ]
    assert sorted(hits) == [
        "auditkit/analyses/lean_by_step.py",
        "auditkit/analyses/lean_by_step.tables.yaml",
        "templates/sections/lean_by_step.html.j2",
    ], hits
    assert inspect.getsourcefile(type(slices()["lean_by_step"])).endswith("lean_by_step.py")
    assert SectionContext  # the section builder's input type is public


def _follows_only(path: Path, name: str) -> bool:
    """Whether ``path`` is another slice's module that names ``name`` only as the section its
    own follows (its ``after``)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if name in line]
    return path.parent.name == "analyses" and lines == [f'    after = "{name}"']


def test_names_only_the_slices_know_are_checked_with_their_location(tmp_path: Path) -> None:
    """The spec takes any well-formed analysis or metric name; every command that plans or
    runs refuses one that no analysis declares, and a slice's metric bounded the wrong way."""
    from auditkit.cli import main

    bad = SPEC.replace("analyses: [lean, lean_by_step]", "analyses: [lean, lean_by_stepp]")
    bad += "gates:\n  - {metric: max_step_lean, min: 0.2}\n  - {metric: no_such_metric, max: 1}\n"
    path = tmp_path / "spec.yaml"
    path.write_text(bad)
    for command in (["validate", str(path)], ["plan", str(path)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2, result.output
        assert "3 problems found" in result.output
        out = result.output
        assert re.search(r"analyses\[1\] \(line \d+\): unknown analysis 'lean_by_stepp'", out)
        assert "lean_by_step" in out.split("known:")[1]
        assert re.search(r"gates\[0\] \(line \d+\): max_step_lean takes 'max'", out)
        assert re.search(r"gates\[1\]\.metric \(line \d+\): unknown metric 'no_such_metric'", out)
    path.write_text(SPEC)
    assert CliRunner().invoke(main, ["validate", str(path)]).exit_code == 0


def test_the_cli_lists_every_analysis_and_the_schema_names_them() -> None:
    import json

    from auditkit.cli import main

    listed = CliRunner().invoke(main, ["analyses"])
    assert listed.exit_code == 0, listed.output
    assert "lean_by_step  Lean by denoising step" in listed.output
    assert "gate metric max_step_lean (max)" in listed.output
    schema = json.loads(CliRunner().invoke(main, ["schema"]).output)
    assert "lean_by_step" in schema["properties"]["analyses"]["items"]["enum"]
    assert "max_step_lean" in schema["$defs"]["GateSpec"]["properties"]["metric"]["enum"]
