"""Seed-bootstrap intervals: exactness of the inner-product engine, and coverage measured over
simulated audits with known effects."""

from __future__ import annotations

import numpy as np
import pytest

from auditkit.analyses.stage import analyze_audit
from auditkit.analyze.gram import (
    build_basis,
    gram_of,
    inner_products,
    lean_from_gram,
    resampled_grams,
    seed_gram_pays,
    seed_gram_tensor,
    weighted_grams,
)
from auditkit.analyze.latents import LatentSet
from auditkit.analyze.measures import build_layout
from auditkit.analyze.uncertainty import bootstrap_weights
from auditkit.plan import plan_audit
from auditkit.spec import parse_spec

SPEC = """
spec_version: 1
name: sim
model: {id: builtin:tiny-sd}
seeds: 16
axes:
  - name: gender
    templates: ["a photo of a {term}"]
    groups: {man: [man], woman: [woman]}
concepts:
  - name: jobs
    templates: ["a photo of a {term}"]
    terms: [doctor, nurse, pilot, baker, clerk]
centring: {reference: base}
analyses: [lean]
statistics: {bootstrap_resamples: 400, seed: 1}
"""
TRUE_SCORES = np.array([0.6, -0.4, 0.2, 0.0, -0.1])
D = 24


def _simulate(spec, rng: np.random.Generator) -> tuple[LatentSet, np.ndarray]:  # type: ignore[no-untyped-def]
    """Per-seed latents: a fixed population mean per prompt plus seed noise."""
    plan = plan_audit(spec)
    ids = tuple(dict.fromkeys(u.prompt_id for u in plan.units))
    prompts = {p.prompt_id: p for p in plan.prompts}
    basis = np.linalg.qr(np.random.default_rng(99).normal(size=(D, D)))[0].T
    half_g = 2.0 * basis[0]
    means = np.zeros((len(ids), D))
    for i, pid in enumerate(ids):
        p = prompts[pid]
        if p.role == "axis":
            means[i] = half_g if p.group == "man" else -half_g
        elif p.role == "concept":
            k = ["doctor", "nurse", "pilot", "baker", "clerk"].index(p.term)
            means[i] = TRUE_SCORES[k] * half_g + 1.5 * basis[1 + k]
    noise = rng.normal(scale=0.8, size=(len(ids), len(spec.seed_list), D))
    per_seed = (means[:, None, :] + noise).astype(np.float32)
    latents = LatentSet(
        ids, tuple(spec.seed_list), per_seed, per_seed.mean(1, keepdims=True), (0,), (1.0,), "mean"
    )
    return latents, means


def test_gram_engine_matches_direct_computation() -> None:
    spec = parse_spec(SPEC)
    latents, _ = _simulate(spec, np.random.default_rng(0))
    layout = build_layout(spec, latents.row_map())
    basis = build_basis(layout, len(latents.prompt_ids))
    direct = analyze_audit(spec, plan_audit(spec), latents)["lean"].set_index("concept")
    Q = inner_products(basis, gram_of(latents.per_seed.astype(np.float64).mean(axis=1)))
    for concept in direct.index:
        cosine, projection, score = lean_from_gram(
            Q,
            basis[("concept", "jobs", concept)],
            basis[("ref", "jobs")],
            basis[("group", "gender", "man")],
            basis[("group", "gender", "woman")],
        )
        assert float(score) == pytest.approx(direct.loc[concept, "score"], abs=1e-5)
        assert float(cosine) == pytest.approx(direct.loc[concept, "cosine"], abs=1e-5)
        assert float(projection) == pytest.approx(direct.loc[concept, "projection"], abs=1e-5)
    # uniform weights reproduce the all-seed Gram matrix
    K = seed_gram_tensor(latents.per_seed)
    uniform = np.full((1, len(latents.seeds)), 1.0 / len(latents.seeds))
    M = gram_of(latents.per_seed.astype(np.float64).mean(axis=1))
    assert np.allclose(resampled_grams(K, uniform)[0], M, rtol=1e-9, atol=1e-9)


def test_both_gram_paths_give_the_resampled_grams_and_the_cheaper_one_is_chosen() -> None:
    rng = np.random.default_rng(3)
    per_seed = rng.normal(size=(7, 5, 40)).astype(np.float32)
    weights = bootstrap_weights(5, 30, rng)
    through_k = resampled_grams(seed_gram_tensor(per_seed), weights)
    direct = np.stack(
        [gram_of(np.einsum("n,pnd->pd", w, per_seed.astype(np.float64))) for w in weights]
    )
    assert np.allclose(weighted_grams(per_seed, weights), direct, rtol=1e-12, atol=1e-10)
    assert np.allclose(through_k, direct, rtol=1e-12, atol=1e-10)
    # the default audit's shape (68 prompts, 32 seeds, 2,048 values): K, 3x fewer multiply-adds
    assert seed_gram_pays(68, 32, 2048)
    # 128 seeds: the latents' path is cheaper; 200 prompts: K would outgrow its budget
    assert not seed_gram_pays(68, 128, 2048)
    assert not seed_gram_pays(200, 32, 2048)
    assert seed_gram_pays(5, 4, 40)  # h longer than prompts x seeds, as before


def test_bootstrap_weights_are_resamples() -> None:
    weights = bootstrap_weights(16, 500, np.random.default_rng(0))
    assert weights.shape == (500, 16)
    assert np.allclose(weights.sum(axis=1), 1.0)
    assert np.allclose(weights * 16, np.round(weights * 16))
    # each seed is drawn about once per resample on average
    assert weights.mean() == pytest.approx(1 / 16, rel=0.05)


def test_intervals_cover_the_true_score_in_simulated_audits() -> None:
    """95% intervals of the lean score cover the population value in 90-99% of 200 audits."""
    spec = parse_spec(SPEC)
    plan = plan_audit(spec)
    rng = np.random.default_rng(2024)
    covered = []
    for _ in range(200):
        latents, _ = _simulate(spec, rng)
        lean = analyze_audit(spec, plan, latents)["lean"].set_index("concept")
        for k, concept in enumerate(["doctor", "nurse", "pilot", "baker", "clerk"]):
            truth = TRUE_SCORES[k]
            covered.append(
                lean.loc[concept, "score_ci_low"] <= truth <= lean.loc[concept, "score_ci_high"]
            )
    coverage = float(np.mean(covered))
    assert 0.90 <= coverage <= 0.99, coverage


def test_defaults_margin_interval_matches_a_direct_recomputation() -> None:
    """The margin interval equals the spread of margins recomputed from resampled seed means
    with the measures module (no inner-product shortcut) placed around the point estimate
    (``interval: centred``, the default), or those margins' quantiles themselves (``interval:
    percentile``)."""
    from auditkit.analyze.measures import build_layout, default_cosines, reference

    text = SPEC.replace("analyses: [lean]", "analyses: [lean, defaults]").replace(
        "groups: {man: [man], woman: [woman]}",
        "groups: {man: [man], woman: [woman]}\n    markers: {man: man, woman: woman}",
    )
    spec = parse_spec(text)
    plan = plan_audit(spec)
    latents, _ = _simulate_with_marked(spec, np.random.default_rng(3))
    table = analyze_audit(spec, plan, latents)["defaults"]
    assert {"margin_ci_low", "margin_ci_high", "cosine_ci_low", "cosine_ci_high"} <= set(table)
    assert (table["margin_ci_low"] <= table["margin"] + 1e-9).all()
    assert (table["margin"] <= table["margin_ci_high"] + 1e-9).all()
    # direct recomputation with the same resamples
    layout = build_layout(spec, latents.row_map())
    weights = bootstrap_weights(
        len(latents.seeds),
        spec.statistics.bootstrap_resamples,
        np.random.default_rng(spec.statistics.seed),
    )
    cset = layout.concepts[0]
    row = table[(table["concept"] == "doctor") & (table["rank"] == 1)].iloc[0]
    margins = []
    for w in weights:
        H = np.einsum("n,pnd->pd", w, latents.per_seed.astype(np.float64))
        sims = default_cosines(
            H,
            cset.terms["doctor"],
            {g: layout.marked[("gender", "jobs", g, "doctor")] for g in ("man", "woman")},
            reference(H, layout, cset),
        )
        other = "woman" if row["group"] == "man" else "man"
        margins.append(sims[row["group"]] - sims[other])
    low, median, high = np.quantile(margins, [0.025, 0.5, 0.975])
    assert row["margin_ci_low"] == pytest.approx(row["margin"] + low - median, abs=1e-6)
    assert row["margin_ci_high"] == pytest.approx(row["margin"] + high - median, abs=1e-6)
    assert abs(median - row["margin"]) > 1e-4  # the two ways differ here
    legacy = spec.model_copy(
        update={"statistics": spec.statistics.model_copy(update={"interval": "percentile"})}
    )
    table = analyze_audit(legacy, plan, latents)["defaults"]
    row = table[(table["concept"] == "doctor") & (table["rank"] == 1)].iloc[0]
    assert row["margin_ci_low"] == pytest.approx(low, abs=1e-6)
    assert row["margin_ci_high"] == pytest.approx(high, abs=1e-6)


def _simulate_with_marked(spec, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """Like _simulate, with marked prompts near their concept plus a group offset."""
    plan = plan_audit(spec)
    ids = tuple(dict.fromkeys(u.prompt_id for u in plan.units))
    prompts = {p.prompt_id: p for p in plan.prompts}
    means = rng.normal(size=(len(ids), D))
    for i, pid in enumerate(ids):
        if prompts[pid].role == "marked":
            means[i] *= 0.5
    noise = rng.normal(scale=0.8, size=(len(ids), len(spec.seed_list), D))
    per_seed = (means[:, None, :] + noise).astype(np.float32)
    latents = LatentSet(
        ids, tuple(spec.seed_list), per_seed, per_seed.mean(1, keepdims=True), (0,), (1.0,), "mean"
    )
    return latents, means


POSITION_SPEC = (
    SPEC.replace("analyses: [lean]", "analyses: [lean, defaults]")
    .replace(
        'templates: ["a photo of a {term}"]\n    terms:',
        'templates: ["a photo of a {term}", "a picture of a {term}"]\n    terms:',
    )
    .replace(
        "concepts:\n",
        "  - name: age\n"
        '    templates: ["a photo of a {term}"]\n'
        "    groups: {young: [young person], old: [old person]}\n"
        "    defaults: false\n"
        "concepts:\n",
    )
    .replace("{bootstrap_resamples: 400, seed: 1}", "{bootstrap_resamples: 300, resampling: seeds}")
)
TRUE_POSITIONS = np.array([0.6, -0.4, 0.2, 0.0, -0.8])


def _simulate_positions(spec, rng: np.random.Generator) -> LatentSet:  # type: ignore[no-untyped-def]
    """Each concept's marked variants at ±d_k around an offset of its own, its unmarked prompt
    at TRUE_POSITIONS[k]·d_k from that offset plus a direction orthogonal to d_k."""
    plan = plan_audit(spec)
    ids = tuple(dict.fromkeys(u.prompt_id for u in plan.units))
    prompts = {p.prompt_id: p for p in plan.prompts}
    basis = np.linalg.qr(np.random.default_rng(98).normal(size=(D, D)))[0].T
    terms = ["doctor", "nurse", "pilot", "baker", "clerk"]
    means = np.zeros((len(ids), D))
    for i, pid in enumerate(ids):
        p = prompts[pid]
        if p.role == "axis":
            means[i] = basis[20 if p.set_name == "gender" else 21]
            means[i] *= 1 if p.group in ("man", "young") else -1
            continue
        if p.role not in ("concept", "marked"):
            continue  # the base prompt: at the origin
        k = terms.index(p.term)
        offset = 2.0 * basis[5 + k]
        if p.role == "marked":
            means[i] = offset + (basis[k] if p.group == "man" else -basis[k])
        else:
            means[i] = offset + TRUE_POSITIONS[k] * basis[k] + 0.7 * basis[10 + k]
    noise = rng.normal(scale=0.5, size=(len(ids), len(spec.seed_list), D))
    per_seed = (means[:, None, :] + noise).astype(np.float32)
    return LatentSet(
        ids, tuple(spec.seed_list), per_seed, per_seed.mean(1, keepdims=True), (0,), (1.0,), "mean"
    )


def test_the_position_between_marked_variants_and_its_interval() -> None:
    """The lean table's position is where the unmarked prompt sits between its two marked
    variants (near the planted one; NaN on an axis without marked prompts), and its interval is
    the spread of positions recomputed from resampled seed means with the measures module."""
    from auditkit.analyze.measures import marked_position

    spec = parse_spec(POSITION_SPEC)
    plan = plan_audit(spec)
    latents = _simulate_positions(spec, np.random.default_rng(4))
    table = analyze_audit(spec, plan, latents)["lean"]
    age = table[table["axis"] == "age"]
    assert age["marked_position"].isna().all() and age["marked_position_ci_low"].isna().all()
    assert age["score_ci_low"].notna().all()  # the lean's own interval is untouched
    gender = table[table["axis"] == "gender"].set_index("concept")
    assert np.abs(gender["marked_position"].to_numpy() - TRUE_POSITIONS).max() < 0.15
    layout = build_layout(spec, latents.row_map())
    cset = layout.concepts[0]
    per_seed = latents.per_seed.astype(np.float64)

    def position(H: np.ndarray, concept: str) -> float:
        first, second = (layout.marked[("gender", "jobs", g, concept)] for g in ("man", "woman"))
        return marked_position(H, cset.terms[concept], first, second)

    assert gender.loc["pilot", "marked_position"] == pytest.approx(
        position(per_seed.mean(axis=1), "pilot"), abs=1e-6
    )
    weights = bootstrap_weights(
        len(latents.seeds),
        spec.statistics.bootstrap_resamples,
        np.random.default_rng(spec.statistics.seed),
    )
    drawn = [position(np.einsum("n,pnd->pd", w, per_seed), "pilot") for w in weights]
    low, median, high = np.quantile(drawn, [0.025, 0.5, 0.975])
    estimate = gender.loc["pilot", "marked_position"]
    assert gender.loc["pilot", "marked_position_ci_low"] == pytest.approx(estimate + low - median)
    assert gender.loc["pilot", "marked_position_ci_high"] == pytest.approx(estimate + high - median)
    # with the templates resampled too, each interval still holds its estimate
    wording = spec.model_copy(
        update={"statistics": spec.statistics.model_copy(update={"resampling": "hierarchical"})}
    )
    table = analyze_audit(wording, plan, latents)["lean"]
    gender = table[table["axis"] == "gender"]
    assert (gender["marked_position_ci_low"] <= gender["marked_position"]).all()
    assert (gender["marked_position"] <= gender["marked_position_ci_high"]).all()
    assert (gender["marked_position_ci_high"] - gender["marked_position_ci_low"] > 0).all()
