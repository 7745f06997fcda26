"""The measures on synthetic activations with planted directions: exact answers to 1e-6."""

from __future__ import annotations

import numpy as np
import pytest

from auditkit.analyses.stage import analyze_audit
from auditkit.analyze.latents import LatentSet
from auditkit.plan import plan_audit
from auditkit.spec import AuditSpec, parse_spec

D = 96
SPEC = """
spec_version: 1
name: synthetic
model: {id: builtin:tiny-sd}
seeds: [3, 5, 7, 11]
axes:
  - name: gender
    templates: ["a photo of a {term}", "a picture of a {term}"]
    groups: {man: [man, male person], woman: [woman, female person]}
  - name: age
    templates: ["a photo of a {term}"]
    groups: {young: [young person], adult: [adult], old: [old person]}
concepts:
  - name: jobs
    templates: ["a photo of a {term}", "a picture of a {term}"]
    terms: [doctor, nurse, pilot, baker]
centring: {reference: base, base_prompt: a photo of a person}
"""

# Planted truth: lean score of each job on the gender axis, its closest age group, and
# which gender-marked variant its unmarked prompt sits nearest.
SCORES = {"doctor": 0.8, "nurse": -0.6, "pilot": 0.3, "baker": -0.05}
AGE_OF = {"doctor": "old", "nurse": "young", "pilot": "adult", "baker": "old"}
DEFAULT_OF = {"doctor": "man", "nurse": "woman", "pilot": "man", "baker": "woman"}
MARK_DIR = {"man": 0, "woman": 1, "young": 2, "adult": 3, "old": 2}


def _basis(rng: np.random.Generator, k: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(D, k)))
    return q.T  # k orthonormal rows


def _planted(spec: AuditSpec) -> tuple[LatentSet, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    e = _basis(rng, 16)
    m = 5.0 * e[0]  # common component; also the base prompt's latent
    half_g = 2.0 * e[1]  # g / 2
    age_dirs = {"young": 3.0 * e[2], "adult": 3.0 * e[3], "old": 3.0 * e[4]}
    term_noise = {"man": e[5], "male person": -e[5], "woman": e[6], "female person": -e[6]}
    job_extra = {job: 1.5 * e[7 + i] for i, job in enumerate(SCORES)}
    plan = plan_audit(spec)

    def latent(role: str, group: str, term: str, set_name: str) -> np.ndarray:
        if role == "base":
            return m
        if role == "axis" and set_name == "gender":
            sign = 1.0 if group == "man" else -1.0
            return m + sign * half_g + 0.5 * term_noise[term]
        if role == "axis":
            return m + age_dirs[group]
        if role == "concept":
            return m + SCORES[term] * half_g + age_dirs[AGE_OF[term]] * 0.4 + job_extra[term]
        # marked variants: the default group's variant adds little, the other one a lot
        base = m + SCORES[term] * half_g + age_dirs[AGE_OF[term]] * 0.4 + job_extra[term]
        axis = set_name.split("/")[0]
        shift = 0.2 if (axis == "gender" and DEFAULT_OF[term] == group) else 1.0
        if axis == "age":
            shift = 0.2 if AGE_OF[term] == group else 1.0
        return base + shift * e[12 + MARK_DIR[group]]

    ids = tuple(dict.fromkeys(u.prompt_id for u in plan.units))
    first = {p.prompt_id: p for p in reversed(plan.prompts)}
    seeds = tuple(spec.seed_list)
    per_seed = np.zeros((len(ids), len(seeds), D), dtype=np.float32)
    noise = rng.normal(size=(len(ids), 2, D)) * 0.3
    for i, pid in enumerate(ids):
        p = first[pid]
        mu = latent(p.role, p.group, p.term, p.set_name)
        # Seed noise that cancels exactly in the mean over the four seeds.
        per_seed[i] = mu + np.stack([noise[i, 0], -noise[i, 0], noise[i, 1], -noise[i, 1]])
    step_means = per_seed.mean(axis=1, keepdims=True)
    latents = LatentSet(ids, seeds, per_seed, step_means, (0,), (999.0,), "mean")
    truth = {"m": m, "half_g": half_g, **{f"job:{j}": v for j, v in job_extra.items()}}
    return latents, truth


@pytest.fixture(scope="module")
def results():  # type: ignore[no-untyped-def]
    spec = parse_spec(SPEC)
    latents, truth = _planted(spec)
    return analyze_audit(spec, plan_audit(spec), latents), truth


def test_lean_scores_recovered_exactly(results) -> None:  # type: ignore[no-untyped-def]
    tables, _ = results
    lean = tables["lean"].set_index("concept")
    for job, score in SCORES.items():
        assert lean.loc[job, "score"] == pytest.approx(score, abs=1e-6)
        assert lean.loc[job, "toward"] == ("man" if score > 0 else "woman")
        assert lean.loc[job, "projection"] == pytest.approx(score * 2.0, abs=1e-6)
    assert set(tables["lean"]["axis"]) == {"gender"}  # k-way axes have no single direction


def test_lean_cosine_matches_closed_form(results) -> None:  # type: ignore[no-untyped-def]
    tables, truth = results
    lean = tables["lean"].set_index("concept")
    for job, score in SCORES.items():
        centred = score * truth["half_g"] + 0.4 * 0 + truth[f"job:{job}"]
        # the age component is orthogonal to g, so it only adds to the norm
        age_norm2 = (0.4 * 3.0) ** 2
        along = score * 2.0
        expected = along / np.sqrt(np.dot(centred, centred) + age_norm2)
        assert lean.loc[job, "cosine"] == pytest.approx(expected, abs=1e-6)


def test_axes_table(results) -> None:  # type: ignore[no-untyped-def]
    tables, _ = results
    axes = tables["axes"].set_index("axis")
    assert axes.loc["gender", "norm"] == pytest.approx(4.0, abs=1e-6)
    assert axes.loc["gender", "positive_group"] == "man"
    assert axes.loc["age", "n_groups"] == 3
    assert axes.loc["gender", "n_prompts"] == 8


def test_descriptor_ranking_recovers_planted_group(results) -> None:  # type: ignore[no-untyped-def]
    tables, _ = results
    d = tables["descriptors"]
    firsts = d[(d["axis"] == "age") & (d["rank"] == 1)].set_index("concept")["group"]
    assert firsts.to_dict() == AGE_OF


def test_defaults_pick_the_planted_group(results) -> None:  # type: ignore[no-untyped-def]
    tables, _ = results
    d = tables["defaults"]
    firsts = d[(d["axis"] == "gender") & (d["rank"] == 1)].set_index("concept")
    assert firsts["group"].to_dict() == DEFAULT_OF
    assert (firsts["margin"] > 0).all()
    assert firsts.loc["doctor", "marked_prompt"] == "a photo of a man doctor"


def test_similarity_matrix_is_symmetric_with_unit_diagonal(results) -> None:  # type: ignore[no-untyped-def]
    tables, _ = results
    sim = tables["similarity"].pivot(index="concept_a", columns="concept_b", values="cosine")
    assert np.allclose(sim.values, sim.values.T, atol=1e-12)
    assert np.allclose(np.diag(sim.values), 1.0, atol=1e-9)


def test_set_mean_centring_changes_cosine_not_score() -> None:
    spec = parse_spec(SPEC.replace("reference: base", "reference: set_mean"))
    latents, _ = _planted(parse_spec(SPEC))
    # same latents minus the base prompt row, which set_mean does not plan
    plan = plan_audit(spec)
    keep = [latents.prompt_ids.index(u) for u in dict.fromkeys(x.prompt_id for x in plan.units)]
    sub = LatentSet(
        tuple(latents.prompt_ids[i] for i in keep),
        latents.seeds,
        latents.per_seed[keep],
        latents.step_means[keep],
        latents.steps,
        latents.timesteps,
        "mean",
    )
    lean = analyze_audit(spec, plan, sub)["lean"].set_index("concept")
    for job, score in SCORES.items():
        assert lean.loc[job, "score"] == pytest.approx(score, abs=1e-6)
