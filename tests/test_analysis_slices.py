"""The defaults, descriptors and similarity slices on planted latents: their intervals come from
the one shared bootstrap pass whatever else the spec lists, their gate metrics read the worst row,
and their findings and report sections are built from their tables alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_analysis_synthetic import AGE_OF, DEFAULT_OF, SPEC, _planted

from auditkit.analyses import gate_measures, report_order, slices
from auditkit.analyses.base import SectionContext
from auditkit.analyses.stage import analyze_audit
from auditkit.analyze.measures import build_layout
from auditkit.gates import GateOutcome
from auditkit.gates import evaluate_gate as evaluate_builtin
from auditkit.plan import plan_audit
from auditkit.spec import parse_spec
from auditkit.spec.gates import GateSpec

INTERVALS = {
    "defaults": ["cosine_ci_low", "cosine_ci_high", "margin_ci_low", "margin_ci_high"],
    "descriptors": ["cosine_ci_low", "cosine_ci_high"],
    "similarity": ["cosine_ci_low", "cosine_ci_high"],
}


def _tables(analyses: list[str], resampling: str = "hierarchical") -> dict[str, pd.DataFrame]:
    text = SPEC + f"analyses: [{', '.join(analyses)}]\n"
    # the score judges the leans in every list of analyses ('auto' would judge the position
    # where the defaults analysis marks the axes), so the tables differ only in what is asked
    text += f"statistics: {{bootstrap_resamples: 300, resampling: {resampling}, effect: score}}\n"
    spec = parse_spec(text)
    latents, _ = _planted(parse_spec(SPEC))
    return analyze_audit(spec, plan_audit(spec), latents).tables


@pytest.fixture(scope="module")
def every() -> dict[str, pd.DataFrame]:
    return _tables(["lean", "defaults", "descriptors", "similarity"])


@pytest.mark.parametrize("resampling", ["hierarchical", "seeds"])
def test_intervals_do_not_depend_on_the_other_analyses(
    every: dict[str, pd.DataFrame], resampling: str
) -> None:
    """Each slice's table alone, or beside the others, gets the very same intervals: the draws
    are seeded per pass, not consumed table by table."""
    together = every if resampling == "hierarchical" else _tables(["lean", *INTERVALS], "seeds")
    for name, columns in INTERVALS.items():
        alone = _tables([name], resampling)
        assert set(alone) >= {name} and "lean" not in alone
        pd.testing.assert_frame_equal(alone[name], together[name])
        assert set(columns) <= set(together[name].columns)
        assert (together[name][columns[0]] <= together[name][columns[1]]).all()
    if resampling == "hierarchical":
        lean_alone = _tables(["lean"])["lean"]
        # the position between marked variants needs the defaults analysis' marked prompts:
        # NaN without them, and every other column the same
        position = ["marked_position", "marked_position_ci_low", "marked_position_ci_high"]
        assert lean_alone[position].isna().all().all()
        assert every["lean"][position].notna().any().all()
        pd.testing.assert_frame_equal(
            lean_alone.drop(columns=position), every["lean"].drop(columns=position)
        )


def test_structure_is_written_with_similarity(every: dict[str, pd.DataFrame]) -> None:
    structure = every["structure"]
    assert list(structure.columns) == slices()["similarity"].tables[1].required
    assert sorted(structure["concept"]) == sorted(AGE_OF)
    assert "ci" not in " ".join(structure.columns)


def evaluate_gate(gate: GateSpec, tables: dict[str, pd.DataFrame]) -> GateOutcome:
    return evaluate_builtin(gate, tables, gate_measures())


def _gate(text: str) -> GateSpec:
    import yaml

    return GateSpec.model_validate(yaml.safe_load(text))


def test_max_default_margin_reads_the_widest_default(every: dict[str, pd.DataFrame]) -> None:
    firsts = every["defaults"][every["defaults"]["rank"] == 1]
    worst = firsts.loc[firsts["margin"].idxmax()]
    outcome = evaluate_gate(_gate("{metric: max_default_margin, max: 0.0}"), every)
    assert outcome.value == pytest.approx(float(worst["margin"])) and not outcome.passed
    assert f"'{worst['concept']}' defaults to '{worst['group']}'" in str(outcome.worst)
    scoped = evaluate_gate(_gate("{metric: max_default_margin, axis: age, max: 10}"), every)
    age = firsts[firsts["axis"] == "age"]["margin"].max()
    assert scoped.value == pytest.approx(float(age)) and scoped.passed
    missing = evaluate_gate(_gate("{metric: max_default_margin, max: 1}"), {"lean": every["lean"]})
    assert missing.value is None and "add defaults to analyses" in missing.message


def test_max_descriptor_spread_reads_the_most_uneven_concept(
    every: dict[str, pd.DataFrame],
) -> None:
    table = every["descriptors"]
    by = table.groupby(["axis", "concept_set", "concept"])["cosine"]
    expected = float((by.max() - by.min()).max())
    outcome = evaluate_gate(_gate("{metric: max_descriptor_spread, max: 0.01}"), every)
    assert outcome.value == pytest.approx(expected) and not outcome.passed
    assert "against" in str(outcome.worst)


def test_findings_and_sections(every: dict[str, pd.DataFrame]) -> None:
    spec = parse_spec(SPEC)
    found = slices()
    defaults = found["defaults"].findings(spec, every)
    assert defaults[0].startswith("Defaults on 'gender': for 2 of 4 concepts the unmarked")
    (descriptors,) = found["descriptors"].findings(spec, every)  # the one k-way axis
    assert descriptors.startswith("Descriptors on 'age': 'old' ranks first for 2 of 4")
    assert found["similarity"].findings(spec, every) == []
    for name in INTERVALS:
        assert found[name].summary(spec, every) is None  # summary.json has no block for them

    ctx = SectionContext(spec, every)
    data = found["defaults"].section(ctx)
    assert data is not None
    gender = data["axes"][0]
    assert gender["axis"] == "gender" and gender["groups"] == ["man", "woman"]
    assert {r["concept"]: r["default"] for r in gender["rows"]} == DEFAULT_OF
    margins = [r["margin"] for r in gender["rows"]]
    assert margins == sorted(margins, reverse=True)
    ranking = found["descriptors"].section(ctx)
    assert ranking is not None and ranking["axes"][1]["intervals"] is True
    sets = found["similarity"].section(ctx)
    assert sets is not None and sets["sets"][0]["map_chart_id"] == "concept-map-0"
    assert set(ctx.charts) == {
        "defaults-0", "defaults-1", "descriptors-0", "descriptors-1", "similarity-0",
        "concept-map-0",
    }  # fmt: skip
    assert found["defaults"].section(SectionContext(spec, {"lean": every["lean"]})) is None


def test_the_default_analyses_and_their_report_order_are_unchanged() -> None:
    spec = parse_spec(SPEC)
    assert spec.analyses == ["lean", "defaults", "descriptors", "similarity"]
    assert np.all([name in slices() for name in spec.analyses[1:]])
    order = report_order()
    start = order.index("lean")
    assert order[start : start + 6] == (
        "lean", "lean_by_step", "defaults", "descriptors", "similarity", "outputs",
    )  # fmt: skip


def test_findings_follow_the_order_the_spec_lists_the_analyses() -> None:
    """The summary's findings of the slices come in the spec's order (a spec that lists the
    slices after lean, defaults, descriptors and similarity keeps the findings of those first,
    as when they were built in)."""
    from auditkit.analyses.stage import chosen_slices, in_spec_order

    spec = parse_spec(SPEC + "analyses: [lean, defaults, descriptors, similarity, lean_by_step]\n")
    chosen = chosen_slices(spec)
    assert [a.name for a in chosen] == [
        "lean", "lean_by_step", "defaults", "descriptors", "similarity",
    ]  # fmt: skip
    assert [a.name for a in in_spec_order(spec, chosen)] == [
        "lean", "defaults", "descriptors", "similarity", "lean_by_step",
    ]  # fmt: skip


def test_the_plan_and_the_layout_take_the_prompts_the_slices_ask_for() -> None:
    """The defaults slice's marked prompts close the plan, after the concepts', and the layout
    finds their rows under the slice's keys, one per template; without defaults there are none."""
    spec = parse_spec(SPEC)
    plan, asked = plan_audit(spec), slices()["defaults"].prompts(spec)
    assert len(asked) == (2 + 3) * 4 * 2  # the axes' groups x concepts x templates
    assert list(plan.prompts[-len(asked) :]) == [p.prompt for p in asked]
    assert [p.role for p in plan.prompts].count("marked") == len(asked)
    assert asked[0].prompt.prompt == "a photo of a man doctor"
    latents, _ = _planted(spec)
    layout = build_layout(spec, latents.row_map())
    rows = latents.row_map()
    assert layout.marked[("gender", "jobs", "woman", "nurse")] == [
        rows[p.prompt.prompt_id] for p in asked if p.key == ("gender", "jobs", "woman", "nurse")
    ]
    assert len(layout.marked) == (2 + 3) * 4
    lean_only = parse_spec(SPEC + "analyses: [lean]\n")
    assert "marked" not in {p.role for p in plan_audit(lean_only).prompts}
    assert build_layout(lean_only, latents.row_map()).marked == {}


def test_planning_without_the_slices_refuses_rather_than_leaving_their_prompts_out() -> None:
    import subprocess
    import sys

    code = (
        "from auditkit.plan import plan_audit; from auditkit.spec import load_spec; "
        "plan_audit(load_spec('audits/toyworld.yaml'))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert out.returncode != 0 and "import auditkit.analyses first" in out.stderr
