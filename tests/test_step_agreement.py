"""Per-step axis agreement: the cosine matrix between the axes of each pair of steps."""

from __future__ import annotations

import numpy as np
import pytest

from auditkit.analyze.latents import LatentSet
from auditkit.analyze.tables import analyze
from auditkit.plan import plan_audit
from auditkit.spec import parse_spec

SPEC = """
spec_version: 1
name: steps
model: {id: builtin:tiny-sd}
seeds: 2
probe: {aggregation: per_step}
axes:
  - name: gender
    templates: ["a photo of a {term}"]
    groups: {man: [man], woman: [woman]}
concepts:
  - name: jobs
    templates: ["a photo of a {term}"]
    terms: [nurse, pilot, chef]
analyses: [lean]
statistics: {bootstrap_resamples: 0}
"""


def test_step_agreement_matrix_matches_planted_per_step_axes() -> None:
    spec = parse_spec(SPEC)
    plan = plan_audit(spec)
    ids = tuple(dict.fromkeys(u.prompt_id for u in plan.units))
    prompts = {p.prompt_id: p for p in plan.prompts}
    D = 8
    e = np.eye(D)
    # per-step axis directions: steps 0 and 1 along e0, step 2 along e0 + e1 (45 degrees)
    directions = [e[0], e[0], (e[0] + e[1]) / np.sqrt(2)]
    step_means = np.zeros((len(ids), 3, D))
    for i, pid in enumerate(ids):
        p = prompts[pid]
        for s, d in enumerate(directions):
            sign = {"man": 1.0, "woman": -1.0}.get(p.group, 0.0)
            step_means[i, s] = 5 * e[7] + sign * d + (0.3 * e[3 + i % 3] if not sign else 0)
    per_seed = np.repeat(step_means.reshape(len(ids), 1, -1), 2, axis=1).astype(np.float32)
    latents = LatentSet(
        ids, (0, 1), per_seed, step_means.astype(np.float32), (0, 1, 2), (900.0, 500.0, 100.0),
        "per_step",
    )  # fmt: skip
    table = analyze(spec, plan, latents)["step_agreement"]
    matrix = table.pivot(index="step_a", columns="step_b", values="cosine").to_numpy()
    expected = np.array([[1, 1, 0.5**0.5], [1, 1, 0.5**0.5], [0.5**0.5, 0.5**0.5, 1]])
    assert matrix == pytest.approx(expected, abs=1e-6)
    assert set(table["timestep_a"]) == {900.0, 500.0, 100.0}
