"""Null model and Benjamini–Hochberg: calibration under a true null and power under planted
effects, measured over simulated audits (no model, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from auditkit.analyses.stage import analyze_audit
from auditkit.analyze.latents import LatentSet
from auditkit.analyze.measures import build_layout
from auditkit.analyze.significance import null_cosines
from auditkit.plan import plan_audit
from auditkit.spec import parse_spec

CONCEPTS = [f"job{i}" for i in range(12)]
SPEC = f"""
spec_version: 1
name: sim
model: {{id: builtin:tiny-sd}}
seeds: 12
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
  - name: age
    templates: ["a photo of a {{term}}"]
    groups: {{young: [young person], old: [old person]}}
concepts:
  - name: jobs
    templates: ["a photo of a {{term}}"]
    terms: [{", ".join(CONCEPTS)}]
centring: {{reference: set_mean}}
analyses: [lean]
statistics: {{bootstrap_resamples: 100, seed: 3, alpha: 0.05}}
"""
D = 64


def _simulate(  # type: ignore[no-untyped-def]
    spec, rng: np.random.Generator, planted: dict[str, float], *, orthogonal: bool = True
):
    """Every prompt: a shared component, its own idiosyncratic direction, seed noise; concepts
    in ``planted`` also get ``effect x`` the gender direction. With ``orthogonal`` the
    concepts' idiosyncratic directions have no component along any axis (the null of the
    permuted-labels test: no concept prefers a group); without it they are random, so each
    concept has some chance alignment with each axis (the null of the vocabulary test)."""
    plan = plan_audit(spec)
    ids = tuple(dict.fromkeys(u.prompt_id for u in plan.units))
    prompts = {p.prompt_id: p for p in plan.prompts}
    shared = rng.normal(size=D) * 3.0
    gender = rng.normal(size=D)
    gender *= 3.0 / np.linalg.norm(gender)
    means = np.zeros((len(ids), D))
    for i, pid in enumerate(ids):
        p = prompts[pid]
        means[i] = shared + rng.normal(size=D) * 3.0 / np.sqrt(D)
        if p.role == "axis" and p.set_name == "gender":
            means[i] += gender if p.group == "man" else -gender
    axis_rows = [i for i, pid in enumerate(ids) if prompts[pid].role == "axis"]
    span = np.linalg.svd(means[axis_rows] - shared, full_matrices=False)[2]
    for i, pid in enumerate(ids):
        p = prompts[pid]
        if p.role == "concept":
            if orthogonal:
                own = means[i] - shared
                means[i] = shared + own - (span.T @ (span @ own))
            if p.term in planted:
                means[i] += planted[p.term] * gender
    noise = rng.normal(scale=0.25, size=(len(ids), len(spec.seed_list), D))
    per_seed = (means[:, None, :] + noise).astype(np.float32)
    return LatentSet(
        ids, tuple(spec.seed_list), per_seed, per_seed.mean(1, keepdims=True), (0,), (1.0,), "mean"
    )


@pytest.fixture(scope="module")
def spec():  # type: ignore[no-untyped-def]
    return parse_spec(SPEC)


def test_null_axes_are_pairs_of_other_concepts(spec) -> None:  # type: ignore[no-untyped-def]
    latents = _simulate(spec, np.random.default_rng(0), {})
    H = latents.means().astype(np.float64)
    null = null_cosines(H, build_layout(spec, latents.row_map()), "jobs")
    # 11 other concepts -> 55 pairs per concept
    assert set(null) == set(CONCEPTS)
    assert all(v.shape == (55,) for v in null.values())
    assert all(((v >= 0) & (v <= 1 + 1e-9)).all() for v in null.values())


@pytest.mark.parametrize("null", ["labels", "vocabulary"])
def test_true_null_calls_at_most_five_percent_significant(null: str) -> None:
    spec = parse_spec(SPEC.replace("alpha: 0.05", f"alpha: 0.05, null_model: {null}"))
    plan = plan_audit(spec)
    rng = np.random.default_rng(2024)
    called, tested, p_below = 0, 0, 0
    for _ in range(200):
        latents = _simulate(spec, rng, {}, orthogonal=null == "labels")
        lean = analyze_audit(spec, plan, latents)["lean"]
        called += int(lean["significant"].sum())
        tested += len(lean)
        p_below += int((lean["p_value"] < 0.05).sum())
    assert called / tested <= 0.05
    # the raw p-values are close to uniform under the null: about 5% fall below 0.05
    assert 0.02 <= p_below / tested <= 0.08


def test_planted_leans_are_significant_and_unplanted_are_not(spec) -> None:  # type: ignore[no-untyped-def]
    plan = plan_audit(spec)
    planted = {"job0": 1.0, "job1": -1.0, "job2": 0.8, "job3": -0.8}
    rng = np.random.default_rng(7)
    hits, false_calls, runs = 0, 0, 50
    for _ in range(runs):
        lean = analyze_audit(spec, plan, _simulate(spec, rng, planted))["lean"].set_index(
            ["axis", "concept"]
        )
        hits += sum(bool(lean.loc[("gender", c), "significant"]) for c in planted)
        # planted concepts carry the gender direction, which has some chance alignment with
        # the age groups' own directions; the others carry nothing along either axis
        unplanted = [c for c in CONCEPTS if c not in planted]
        false_calls += sum(
            bool(lean.loc[(a, c), "significant"]) for a in ("gender", "age") for c in unplanted
        )
    assert hits / (runs * len(planted)) >= 0.9
    assert false_calls / (runs * 2 * len(unplanted)) <= 0.05


def test_significance_columns_are_consistent(spec) -> None:  # type: ignore[no-untyped-def]
    legacy = parse_spec(SPEC.replace("alpha: 0.05", "alpha: 0.05, null_model: labels"))
    lean = analyze_audit(
        legacy, plan_audit(legacy), _simulate(legacy, np.random.default_rng(5), {})
    )["lean"]
    assert {"null_model", "p_value", "q_value", "significant"} <= set(lean.columns)
    assert set(lean["null_model"]) == {"labels"}
    assert ((lean["p_value"] > 0) & (lean["p_value"] <= 1)).all()
    assert (lean["q_value"] >= lean["p_value"] - 1e-12).all()
    assert not (lean["significant"] & (lean["q_value"] >= 0.05)).any()


def test_min_effect_rule_columns_are_consistent(spec) -> None:  # type: ignore[no-untyped-def]
    """The default rule records itself and its band, and a finding's score interval lies
    beyond the band on the side of its lean."""
    planted = {"job0": 1.0, "job1": -1.0, "job2": 0.25}
    lean = analyze_audit(
        spec, plan_audit(spec), _simulate(spec, np.random.default_rng(5), planted)
    )["lean"]
    assert {"rule", "min_effect", "p_value", "q_value", "significant"} <= set(lean.columns)
    assert set(lean["rule"]) == {"min_effect"}
    assert set(lean["min_effect"]) == {spec.statistics.min_effect}
    assert (lean["q_value"] >= lean["p_value"] - 1e-12).all()
    hits = lean[lean["significant"]]
    band = spec.statistics.min_effect
    assert not hits.empty
    assert ((hits["score_ci_low"] > band) | (hits["score_ci_high"] < -band)).all()
    assert not (lean["significant"] & (lean["q_value"] >= 0.05)).any()


def test_a_spec_keeps_the_rule_it_was_written_for() -> None:
    from auditkit.spec import dump_spec, spec_hash

    default = parse_spec(SPEC).statistics
    assert (default.rule, default.min_effect, default.resampling) == (
        "min_effect",
        0.3,
        "hierarchical",
    )
    legacy = parse_spec(SPEC.replace("alpha: 0.05", "alpha: 0.05, null_model: vocabulary"))
    assert legacy.statistics.rule == "vocabulary"
    both = parse_spec(
        SPEC.replace("alpha: 0.05", "alpha: 0.05, null_model: labels, rule: min_effect")
    )
    assert both.statistics.rule == "min_effect"
    # spec.yaml records the new keys at their defaults, and they leave the hash as before
    resolved = dump_spec(parse_spec(SPEC))
    assert "rule: min_effect" in resolved and "min_effect: 0.3" in resolved
    assert "resampling: hierarchical" in resolved and "null_model: null" in resolved
    explicit = SPEC.replace("alpha: 0.05", "alpha: 0.05, rule: min_effect, min_effect: 0.3")
    assert spec_hash(parse_spec(explicit)) == spec_hash(parse_spec(SPEC))


@pytest.mark.parametrize("seeds", [12, 96])
def test_a_tiny_reproducible_lean_is_never_a_finding(seeds: int) -> None:
    """A small planted lean (score about 0.12, under half the band) with little noise: the
    legacy labels rule calls it at 12 and at 96 seeds, the default rule at neither; a lean of
    0.8 is called by both."""
    text = SPEC.replace("seeds: 12", f"seeds: {seeds}")
    rule_spec = parse_spec(text)
    legacy_spec = parse_spec(text.replace("alpha: 0.05", "alpha: 0.05, null_model: labels"))
    latents = _simulate(rule_spec, np.random.default_rng(3), {"job0": 0.2, "job1": 0.8})
    for spec, tiny_called in ((rule_spec, False), (legacy_spec, True)):
        lean = analyze_audit(spec, plan_audit(spec), latents)["lean"].set_index(["axis", "concept"])
        assert bool(lean.loc[("gender", "job0"), "significant"]) is tiny_called
        assert bool(lean.loc[("gender", "job1"), "significant"])
