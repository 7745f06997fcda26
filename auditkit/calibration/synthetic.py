"""Synthetic activation stores with planted directions and planted nuisance structure.

A synthetic scenario draws per-seed prompt latents whose population values are known exactly,
so a rule can be scored without a model: each concept's planted lean along each axis maps to
a share of images through a fixed link (:data:`SHARE_PER_SCORE`), and everything else in the
latents is nuisance that no image would show:

* seed noise, most of it along the axes as in a real model's h-space, and a per-seed
  component shared by every prompt (the paired noise of a real audit, which cancels in
  differences);
* every concept's own direction, with chance alignment to the axes;
* a shift of every concept along the first axis (as a model whose group prompts are worded
  unevenly shows: every concept leans a little towards one group);
* wording: each template moves every concept along each axis by its own random amount, and
  each group term moves its group; a new draw of templates and terms per simulated audit, so
  a rule that ignores the wording mistakes a lucky template for an effect.

Every axis is marked (the defaults analysis' "a photo of a man job03"): a marked variant is the
concept wholly of its group, so it sits where an image share of 1 (or 0) would put a lean
through the link, ``±1 / (2·SHARE_PER_SCORE)`` group half-distances out, carrying the
concept's own direction, its lean along the other axes and a wording shift of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from auditkit.analyze.latents import LatentSet
from auditkit.plan import plan_audit
from auditkit.spec import AuditSpec, parse_spec

SHARE_PER_SCORE = 0.3
"""The synthetic link: a planted lean score s goes with images 0.5 + 0.3·s of the first group
(about the slope the toyworld calibration models show, docs/method.md)."""

D = 64
HALF_AXIS = 2.0
"""Half the distance between a two-group axis's group latents (the score's unit)."""

# fmt: off
PLANTED: dict[str, tuple[float, ...]] = {
    # 16 concepts: large, middling and null-sized leans of both signs along the first axis
    "gender": (-1.2, -0.9, -0.7, -0.5, -0.3, -0.15, 0.0, 0.0,
               0.0, 0.0, 0.15, 0.3, 0.5, 0.7, 0.9, 1.2),
    # the second axis: four planted, twelve at parity
    "age": (0.9, -0.9, 0.7, -0.7, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
}
# fmt: on
CONCEPTS = tuple(f"job{i:02d}" for i in range(16))
TEMPLATE_POOL = tuple(
    f"{kind} of a {{term}}"
    for kind in ("a photo", "a picture", "an image", "a drawing", "a portrait", "a sketch")
)


@dataclass(frozen=True)
class Nuisance:
    """Sizes of the nuisance structure, in lean-score units where they move a lean."""

    templates: int = 1
    terms: int = 1
    seed_noise: float = 0.25
    axis_noise: float = 0.8
    shared_seed: float = 1.0
    own_direction: float = 1.5
    shift: float = 0.0
    wording: float = 0.0
    term_wording: float = 0.0


CLEAN = Nuisance()
NUISANCE = Nuisance(templates=4, terms=2, shift=0.1, wording=0.12, term_wording=0.1)
SCENARIOS = {"synthetic": CLEAN, "synthetic-nuisance": NUISANCE}


def scenario_spec(nuisance: Nuisance, seeds: int) -> AuditSpec:
    """The audit spec a synthetic store stands for (its templates are the first of the pool;
    each simulated audit gives them new wording effects)."""
    templates = ", ".join(f'"{t}"' for t in TEMPLATE_POOL[: nuisance.templates])
    words = {
        "gender": (["man", "male person"], ["woman", "female person"]),
        "age": (["young person", "youth"], ["old person", "elder"]),
    }
    axes = []
    for axis, (first, second) in words.items():
        a, b = ("man", "woman") if axis == "gender" else ("young", "old")
        first_terms = ", ".join(first[: nuisance.terms])
        second_terms = ", ".join(second[: nuisance.terms])
        axes.append(
            f"  - name: {axis}\n    templates: [{templates}]\n"
            f"    groups: {{{a}: [{first_terms}], {b}: [{second_terms}]}}"
        )
    text = (
        "spec_version: 1\nname: synthetic\nmodel: {id: builtin:tiny-sd}\n"
        f"seeds: {seeds}\ncentring: {{reference: set_mean}}\nanalyses: [lean, defaults]\n"
        "axes:\n" + "\n".join(axes) + "\nconcepts:\n  - name: jobs\n"
        f"    templates: [{templates}]\n    terms: [{', '.join(CONCEPTS)}]\n"
    )
    return parse_spec(text)


def truth_table() -> pd.DataFrame:
    """The synthetic truth: per axis and concept, the share of images of the first group."""
    rows = [
        {
            "axis": axis,
            "concept": concept,
            "planted": planted,
            "share": 0.5 + SHARE_PER_SCORE * planted,
        }
        for axis, values in PLANTED.items()
        for concept, planted in zip(CONCEPTS, values, strict=True)
    ]
    return pd.DataFrame(rows)


def simulate(
    spec: AuditSpec, nuisance: Nuisance, rng: np.random.Generator
) -> tuple[LatentSet, pd.DataFrame]:
    """One simulated audit: per-seed latents of every prompt of ``spec``, and the population
    lean score of every (axis, concept) (over seeds and over the wording population: the
    planted lean, the shift, and each concept's chance alignment).

    The world (axis directions, concept directions) is fixed by a generator of its own, so
    that only noise and wording are drawn anew by ``rng``.
    """
    world = np.random.default_rng(20261130)
    plan = plan_audit(spec)
    prompts = {p.prompt_id: p for p in plan.prompts}
    ids = tuple(dict.fromkeys(u.prompt_id for u in plan.units))
    directions = np.linalg.qr(world.normal(size=(D, D)))[0].T
    axis_unit = {"gender": directions[0], "age": directions[1]}
    shared = world.normal(size=D) * 3.0
    own = {c: world.normal(size=D) * nuisance.own_direction / np.sqrt(D) for c in CONCEPTS}
    templates = list(TEMPLATE_POOL[: nuisance.templates])
    wording = {
        (axis, c, t): rng.normal() * nuisance.wording
        for axis in PLANTED
        for c in CONCEPTS
        for t in templates
    }
    term_wording = {term: rng.normal() * nuisance.term_wording for term in _terms(spec)}
    marked_wording = {
        (axis, c, t, side): rng.normal() * nuisance.wording
        for axis in PLANTED
        for c in CONCEPTS
        for t in templates
        for side in (1.0, -1.0)
    }
    first_group = {a.name: next(iter(a.groups)) for a in spec.analysis_axes}
    means = np.zeros((len(ids), D))
    population: dict[tuple[str, str], float] = {}
    for i, pid in enumerate(ids):
        p = prompts[pid]
        vec = shared.copy()
        if p.role == "axis":
            sign = 1.0 if p.group == first_group[p.set_name] else -1.0
            vec += sign * HALF_AXIS * axis_unit[p.set_name]
            vec += term_wording[p.term] * HALF_AXIS * axis_unit[p.set_name]
        elif p.role in ("concept", "marked"):
            k = CONCEPTS.index(p.term)
            vec += own[p.term]
            marked_axis = p.set_name.split("/")[0] if p.role == "marked" else None
            for axis, values in PLANTED.items():
                if axis == marked_axis:  # wholly of its group, with a wording of its own
                    side = 1.0 if p.group == first_group[axis] else -1.0
                    lean = side / (2.0 * SHARE_PER_SCORE)
                    lean += marked_wording[(axis, p.term, p.template, side)]
                else:
                    lean = values[k] + (nuisance.shift if axis == "gender" else 0.0)
                    lean += wording[(axis, p.term, p.template)]
                vec += lean * HALF_AXIS * axis_unit[axis]
        means[i] = vec
    for axis, values in PLANTED.items():
        for k, concept in enumerate(CONCEPTS):
            chance = float(own[concept] @ axis_unit[axis]) / HALF_AXIS
            shift = nuisance.shift if axis == "gender" else 0.0
            population[(axis, concept)] = values[k] + shift + chance
    n_seeds = len(spec.seed_list)
    noise = rng.normal(scale=nuisance.seed_noise, size=(len(ids), n_seeds, D))
    # most of a real model's seed noise along an axis is in few directions; isotropic noise
    # alone would shrink the score (a noisy axis is longer) more than real h-space does
    for unit in axis_unit.values():
        along = rng.normal(scale=nuisance.axis_noise, size=(len(ids), n_seeds, 1))
        noise += along * unit
    per_seed_shared = rng.normal(scale=nuisance.shared_seed, size=(1, n_seeds, D))
    per_seed = (means[:, None, :] + noise + per_seed_shared).astype(np.float32)
    latents = LatentSet(
        ids, tuple(spec.seed_list), per_seed, per_seed.mean(1, keepdims=True), (0,), (1.0,), "mean"
    )
    table = pd.DataFrame(
        [{"axis": a, "concept": c, "population_score": v} for (a, c), v in population.items()]
    )
    return latents, table


def _terms(spec: AuditSpec) -> list[str]:
    return [t for a in spec.analysis_axes for terms in a.groups.values() for t in terms]
