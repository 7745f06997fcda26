"""``statistics.effect: marked_position``: the min_effect rule judging where a concept sits
between its two marked variants. The spec checks it needs, what it judges (a concept's own
offset along the axis, carried by its marked variants too, is not a finding, while the lean
score calls it), and that every place showing the verdict shows that statistic's interval:
the report's table, chart and words, summary.json, the diff."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from auditkit.analyses.stage import analyze_audit
from auditkit.analyze.latents import LatentSet
from auditkit.errors import SpecError
from auditkit.plan import plan_audit
from auditkit.spec import dump_spec, parse_spec, spec_hash

SPEC = """
spec_version: 1
name: marked
model: {id: builtin:tiny-sd}
seeds: 24
axes:
  - name: gender
    templates: ["a photo of a {term}", "a picture of a {term}"]
    groups: {man: [man], woman: [woman]}
concepts:
  - name: jobs
    templates: ["a photo of a {term}", "a picture of a {term}"]
    terms: [planted, offset, plain, other, fifth, sixth]
centring: {reference: set_mean}
analyses: [lean, defaults]
statistics: {bootstrap_resamples: 200, seed: 1, EFFECT}
"""
D = 48
MARKED = 1.6
"""Where a marked variant sits along the axis, in group half-distances."""


def _spec(effect: str = "effect: marked_position", text: str = SPEC):  # type: ignore[no-untyped-def]
    from auditkit.analyses.checks import check_spec

    return check_spec(parse_spec(text.replace("EFFECT", effect)))


def _simulate(spec, rng: np.random.Generator) -> LatentSet:  # type: ignore[no-untyped-def]
    """``planted`` leans towards man (+1 group half-distance, its marked variants ±MARKED);
    ``offset`` sits +1 along the axis too, but so do both its marked variants: an offset of
    the concept's own, not a lean; the others have neither."""
    plan = plan_audit(spec)
    prompts = {p.prompt_id: p for p in plan.prompts}
    ids = tuple(dict.fromkeys(u.prompt_id for u in plan.units))
    world = np.random.default_rng(7)
    g = world.normal(size=D)
    g *= 2.0 / np.linalg.norm(g)  # half the distance between the group latents
    shared = world.normal(size=D) * 3.0
    own = {t: world.normal(size=D) for t in spec.concepts[0].terms}
    for term in own:  # the concepts' own directions, orthogonal to the axis
        own[term] -= (own[term] @ g) / (g @ g) * g
    means = np.zeros((len(ids), D))
    for i, pid in enumerate(ids):
        p = prompts[pid]
        vec = shared + rng.normal(size=D) * 0.05  # a little wording per prompt
        if p.role == "axis":
            vec += g if p.group == "man" else -g
        else:
            vec += own[p.term] + (1.0 if p.term == "offset" else 0.0) * g
            if p.role == "marked":
                vec += (MARKED if p.group == "man" else -MARKED) * g
            elif p.term == "planted":
                vec += g
        means[i] = vec
    noise = rng.normal(scale=0.3, size=(len(ids), len(spec.seed_list), D))
    per_seed = (means[:, None, :] + noise).astype(np.float32)
    return LatentSet(
        ids, tuple(spec.seed_list), per_seed, per_seed.mean(1, keepdims=True), (0,), (1.0,), "mean"
    )


@pytest.fixture(scope="module")
def judged() -> dict[str, pd.DataFrame]:
    """The same latents judged by the score and by the position."""
    out = {}
    latents = None
    for effect in ("score", "marked_position"):
        spec = _spec(f"effect: {effect}")
        latents = latents or _simulate(spec, np.random.default_rng(3))
        out[effect] = analyze_audit(spec, plan_audit(spec), latents)["lean"].set_index("concept")
    return out


def test_the_setting_its_band_and_auto() -> None:
    from auditkit.spec.audit import judged_band, judged_effect

    score = _spec("effect: score")
    assert (judged_effect(score), judged_band(score)) == ("score", 0.3)
    position = _spec()
    assert (judged_effect(position), judged_band(position)) == ("marked_position", 0.2)
    wider = _spec("effect: marked_position, min_position: 0.25")
    assert judged_band(wider) == 0.25 and wider.statistics.min_effect == 0.3
    # auto: the position where every two-group axis is marked and defaults runs
    assert judged_effect(_spec("effect: auto")) == "marked_position"
    lean_only = _spec("effect: auto", SPEC.replace("[lean, defaults]", "[lean]"))
    assert judged_effect(lean_only) == "score"
    # the keys at their defaults leave the hash as before they existed
    default = _spec("alpha: 0.05")
    assert spec_hash(_spec(f"effect: {default.statistics.effect}, min_position: 0.2")) == (
        spec_hash(default)
    )
    assert "effect: marked_position" in dump_spec(position)
    assert spec_hash(parse_spec(dump_spec(position))) == spec_hash(position)


def test_the_position_needs_every_two_group_axis_marked() -> None:
    unmarked = SPEC.replace("groups: {man: [man], woman: [woman]}", "groups: {man: [man], "
                            "woman: [woman]}\n    defaults: false")  # fmt: skip
    with pytest.raises(SpecError) as error:
        _spec(text=unmarked)
    assert "axes[0].defaults" in str(error.value) and "marked" in str(error.value)
    with pytest.raises(SpecError) as error:
        _spec(text=SPEC.replace("analyses: [lean, defaults]", "analyses: [lean]"))
    assert "analyses" in str(error.value) and "'defaults'" in str(error.value)
    # the score needs neither
    _spec("effect: score", text=unmarked)


def test_an_offset_of_the_concept_is_not_a_finding_of_the_position(
    judged: dict[str, pd.DataFrame],
) -> None:
    score, position = judged["score"], judged["marked_position"]
    assert set(position["effect"]) == {"marked_position"} and set(score["effect"]) == {"score"}
    # the lean score counts the concept's own offset as lean; the position cancels it
    assert score.loc["offset", "score"] > 0.8 and bool(score.loc["offset", "significant"])
    assert abs(position.loc["offset", "marked_position"]) < 0.1
    assert not bool(position.loc["offset", "significant"])
    # a planted lean is a finding of both, at about 1 / MARKED along the position
    assert position.loc["planted", "marked_position"] == pytest.approx(1 / MARKED, abs=0.1)
    assert bool(position.loc["planted", "significant"]) and bool(
        score.loc["planted", "significant"]
    )
    # a finding's interval of the judged statistic lies beyond the band, on its side
    band = float(position["min_effect"].iloc[0])
    hits = position[position["significant"]]
    assert (
        (hits["marked_position_ci_low"] > band) | (hits["marked_position_ci_high"] < -band)
    ).all()
    others = position.drop(index=["planted", "offset"])
    assert not others["significant"].any()


def test_report_summary_and_diff_show_the_judged_interval(
    judged: dict[str, pd.DataFrame],
) -> None:
    from auditkit.analyses.lean_section import _lean_rows, significance
    from auditkit.analyses.lean_summary import lean_findings, lean_records
    from auditkit.charts import lean_chart
    from auditkit.charts.style import chart_spec
    from auditkit.diff import compare_leans, compared_measure

    lean = judged["marked_position"].reset_index()
    rows = _lean_rows(lean, True, "marked_position")
    planted = next(r for r in rows if r["concept"] == "planted")
    assert planted["ci_low"] == pytest.approx(float(lean.loc[0, "marked_position_ci_low"]))
    assert planted["clear_of_zero"] and planted["significant"]
    for row in rows:  # "significant" never beside an interval that includes 0
        assert not (row["significant"] and not row["clear_of_zero"])
    words = significance(_spec(), lean)
    assert words is not None and words["effect"] == "marked_position"
    assert "marked variants" in words["rule_words"] and "±0.2" in words["rule_words"]
    spec = chart_spec(lean_chart(lean, "man", "woman", measure="marked_position"))
    fields = {
        layer["encoding"]["x"]["field"]
        for layer in spec["layer"]
        if "x" in layer.get("encoding", {}) and "field" in layer["encoding"]["x"]
    }
    assert {"marked_position", "marked_position_ci_low"} <= fields and "score" not in fields
    assert "position between marked variants" in str(spec)

    record = next(r for r in lean_records(lean) if r["concept"] == "planted")
    assert record["marked_position_ci"][0] == pytest.approx(
        float(lean.loc[0, "marked_position_ci_low"]), abs=1e-5
    )
    axes = pd.DataFrame([{"axis": "gender", "n_groups": 2}])
    sentence = lean_findings(axes, lean)[1]
    assert "'planted' towards 'man'" in sentence and "offset" not in sentence
    assert "marked variants" in sentence
    quiet = lean_findings(axes, lean.assign(significant=False))[1]
    assert "no position between marked variants is beyond ±0.2" in quiet, quiet

    base, new = lean.copy(), lean.copy()
    new["marked_position"] = new["marked_position"] + 0.3  # every position moves by 0.3
    assert compared_measure(base, new) == "marked_position"
    diff = compare_leans(base, new, tolerance=0.2, measure="marked_position")
    assert set(diff["measure"]) == {"marked_position"}
    assert np.allclose(diff["delta"], 0.3)
    assert compared_measure(base, judged["score"].reset_index()) == "score"
