"""Intersectional (crossed) axes: spec expansion, located errors, plan, and the descriptor
ranking recovering a planted intersection on synthetic latents."""

from __future__ import annotations

import numpy as np
import pytest

from auditkit.analyses.stage import analyze_audit
from auditkit.analyze.latents import LatentSet
from auditkit.errors import SpecError
from auditkit.plan import plan_audit
from auditkit.spec import load_spec, parse_spec

SPEC = """
spec_version: 1
name: crossed
model: {id: builtin:tiny-sd}
seeds: 6
axes:
  - name: gender
    templates: ["a photo of a {term}"]
    groups: {man: [man], woman: [woman]}
  - name: skin
    templates: ["a photo of a {term}", "a picture of a {term}"]
    groups: {light: [light], dark: [dark]}
crossings:
  - name: skin_x_gender
    axes: [skin, gender]
concepts:
  - name: jobs
    templates: ["a photo of a {term}"]
    terms: [nurse, pilot, chef, clerk]
centring: {reference: set_mean}
analyses: [lean, descriptors]
statistics: {bootstrap_resamples: 50}
"""
PLANTED = {"nurse": ("dark", "woman"), "pilot": ("light", "man"), "chef": ("dark", "man")}


def test_crossing_expands_to_every_combination() -> None:
    spec = parse_spec(SPEC)
    crossed = spec.analysis_axes[-1]
    assert crossed.name == "skin_x_gender"
    assert crossed.groups == {
        "light_man": ["light man"],
        "light_woman": ["light woman"],
        "dark_man": ["dark man"],
        "dark_woman": ["dark woman"],
    }
    assert crossed.templates == ["a photo of a {term}", "a picture of a {term}"]
    assert crossed.defaults is False
    prompts = {p.prompt for p in plan_audit(spec).prompts}
    assert {"a photo of a dark woman", "a picture of a light man"} <= prompts


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ("axes: [skin, age]", "crossings[0].axes[1]"),
        ("axes: [skin, skin]", "crossings[0].axes"),
        ("axes: [skin]", "crossings[0].axes"),
    ],
)
def test_bad_crossings_are_located(tmp_path, bad: str, where: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace("axes: [skin, gender]", bad))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert where in str(info.value)
    assert "line" in str(info.value)


def test_descriptors_recover_planted_intersections() -> None:
    spec = parse_spec(SPEC)
    plan = plan_audit(spec)
    rng = np.random.default_rng(11)
    words = {
        w: rng.normal(size=48)
        for w in ["man", "woman", "light", "dark", "nurse", "pilot", "chef", "clerk"]
    }
    ids = tuple(dict.fromkeys(u.prompt_id for u in plan.units))
    prompts = {p.prompt_id: p for p in plan.prompts}
    means = np.zeros((len(ids), 48))
    for i, pid in enumerate(ids):
        p = prompts[pid]
        parts = p.term.split()
        if p.role == "concept" and p.term in PLANTED:
            parts = [*parts, *PLANTED[p.term]]
        means[i] = sum(words[w] for w in parts) + rng.normal(size=48) * 0.1
    per_seed = (means[:, None, :] + rng.normal(scale=0.3, size=(len(ids), 6, 48))).astype(
        np.float32
    )
    latents = LatentSet(ids, tuple(spec.seed_list), per_seed, per_seed.mean(1, keepdims=True),
                        (0,), (1.0,), "mean")  # fmt: skip
    tables = analyze_audit(spec, plan, latents)
    d = tables["descriptors"]
    firsts = d[(d["axis"] == "skin_x_gender") & (d["rank"] == 1)].set_index("concept")["group"]
    assert {c: firsts[c] for c in PLANTED} == {c: "_".join(v) for c, v in PLANTED.items()}
    # the crossing has four groups, so it gets descriptors but no lean rows
    assert set(d.loc[d["axis"] == "skin_x_gender", "group"]) == {
        "light_man",
        "light_woman",
        "dark_man",
        "dark_woman",
    }
    assert "skin_x_gender" not in set(tables["lean"]["axis"])
    assert "cosine_ci_low" in d.columns


def test_crossing_prompts_read_naturally_by_default_and_as_declared() -> None:
    """'light person' x 'man' reads 'a photo of a light man', not '... a light person man';
    an axis's qualifiers say it exactly ('light-skinned man')."""
    from auditkit.spec.vocabulary import cross_axes

    text = SPEC.replace(
        "{light: [light], dark: [dark]}", "{light: [light person], dark: [dark person]}"
    )
    spec = parse_spec(text)
    crossed = cross_axes(spec.crossings[0], {a.name: a for a in spec.axes})
    assert crossed.groups == {
        "light_man": ["light man"],
        "light_woman": ["light woman"],
        "dark_man": ["dark man"],
        "dark_woman": ["dark woman"],
    }
    prompts = {p.prompt for p in plan_audit(spec).prompts if p.set_name == "skin_x_gender"}
    assert "a photo of a dark woman" in prompts and not any("person" in p for p in prompts)
    declared = parse_spec(
        text.replace(
            "groups: {light: [light person], dark: [dark person]}",
            "groups: {light: [light person], dark: [dark person]}\n"
            "    qualifiers: {light: light-skinned, dark: dark-skinned}",
        )
    )
    crossed = cross_axes(declared.crossings[0], {a.name: a for a in declared.axes})
    assert crossed.groups["dark_woman"] == ["dark-skinned woman"]
    with pytest.raises(SpecError, match=r"qualifiers must name exactly the groups"):
        parse_spec(
            text.replace(
                "groups: {light: [light person], dark: [dark person]}",
                "groups: {light: [light person], dark: [dark person]}\n"
                "    qualifiers: {light: pale}",
            )
        )
