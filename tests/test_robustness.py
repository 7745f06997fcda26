"""Leave-one-template-out and alternative centring flag leans that depend on wording."""

from __future__ import annotations

import numpy as np

from auditkit.analyses.stage import analyze_audit
from auditkit.analyze.latents import LatentSet
from auditkit.plan import plan_audit
from auditkit.spec import parse_spec

SPEC = """
spec_version: 1
name: robust
model: {id: builtin:tiny-sd}
seeds: 2
axes:
  - name: gender
    templates: ["a photo of a {term}", "a picture of a {term}"]
    groups: {man: [man], woman: [woman]}
concepts:
  - name: jobs
    templates: ["a photo of a {term}", "a picture of a {term}"]
    terms: [steady, flipper]
centring: {reference: base}
analyses: [lean]
statistics: {bootstrap_resamples: 0}
"""


def test_a_lean_that_flips_with_the_template_is_fragile() -> None:
    spec = parse_spec(SPEC)
    plan = plan_audit(spec)
    e = np.eye(8)
    half_g = e[0]
    by_text = {
        "a photo of a person": np.zeros(8),
        "a photo of a man": half_g,
        "a picture of a man": half_g,
        "a photo of a woman": -half_g,
        "a picture of a woman": -half_g,
        "a photo of a steady": 0.6 * half_g + e[1],
        "a picture of a steady": 0.4 * half_g + e[1],
        "a photo of a flipper": 0.5 * half_g + e[2],
        "a picture of a flipper": -0.7 * half_g + e[2],
    }
    ids = tuple(dict.fromkeys(u.prompt_id for u in plan.units))
    text = {p.prompt_id: p.prompt for p in plan.prompts}
    per_seed = np.stack([[by_text[text[i]]] * 2 for i in ids]).astype(np.float32)
    latents = LatentSet(
        ids, (0, 1), per_seed, per_seed.mean(1, keepdims=True), (0,), (1.0,), "mean"
    )
    lean = analyze_audit(spec, plan, latents)["lean"].set_index("concept")
    assert abs(lean.loc["steady", "score"] - 0.5) < 1e-6
    assert not lean.loc["steady", "fragile"]
    assert abs(lean.loc["flipper", "score"] - (-0.1)) < 1e-6
    assert lean.loc["flipper", "loto_min_score"] < 0 < lean.loc["flipper", "loto_max_score"]
    assert abs(lean.loc["flipper", "loto_max_score"] - 0.5) < 1e-6
    assert lean.loc["flipper", "fragile"]
    # the set-mean alternative centring is reported next to the base-prompt cosine
    assert np.isfinite(lean["cosine_alt_centring"]).all()
