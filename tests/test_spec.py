"""The spec as a whole: cross-field problems reported together, the resolved spec a run records,
the spec hash that must not move, and the import paths that must keep working."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from auditkit.calibration.synthetic import SCENARIOS, scenario_spec
from auditkit.cli import main
from auditkit.errors import SpecError
from auditkit.spec import AuditSpec, dump_spec, load_spec, parse_spec, spec_hash

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
spec_version: 1
name: whole
model: {id: builtin:tiny-sd, device: cpu, guidance_scale: 3.0}
seeds: [0, 1, 2, 5]
axes:
  - name: gender
    templates: ["a photo of a {term}"]
    groups: {man: [man], woman: [woman]}
  - name: skin
    templates: ["a photo of a {term}"]
    groups: {dark: [dark-skinned person], light: [light-skinned person]}
concepts:
  - name: jobs
    templates: ["a photo of a {term}"]
    terms: [doctor, nurse]
"""

RICH = (
    BASE
    + """\
crossings:
  - {name: skin_x_gender, axes: [skin, gender]}
statistics: {alpha: 0.1, rule: labels, resampling: seeds}
report: {paper: letter, image_budget_mb: 2.0}
gates:
  - {metric: max_abs_lean, axis: gender, max: 0.5}
captions:
  captioner: {kind: toyworld}
  seeds: 2
  guidance: [1.0]
  reference: {gender: uniform}
  exemplars: {seeds: 2}
  causal: {axes: [gender]}
  discovery: {}
"""
)

# Five cross-field problems from four independent checks (names, gates, caption seeds, guidance).
TANGLED = (
    BASE
    + """\
crossings:
  - {name: jobs, axes: [skin, gender]}
gates:
  - {metric: max_abs_lean, concept_set: foods, max: 0.5}
captions:
  captioner: {kind: toyworld}
  seeds: 9
  roles: [marked]
  guidance: [3.0, 1.0]
"""
)
TANGLED_PROBLEMS = [
    "(top level) (line 1): axis, crossing and concept-set names must be unique; repeated: ['jobs']",
    "gates[0].concept_set (line 19): unknown concept set 'foods'; the spec has ['jobs']",
    "captions.seeds (line 22): asks for 9 seeds but the audit has 4",
    "captions.guidance[0] (line 24): 3 is the audit's own guidance scale (model.guidance_scale)",
    "captions.guidance (line 24): sweeps the concept prompts, but captions.roles does not "
    "caption them",
]


# --- every cross-field problem at once -------------------------------------------------------


def test_every_cross_field_problem_is_in_one_validation_error() -> None:
    with pytest.raises(ValidationError) as err:
        AuditSpec.model_validate(yaml.safe_load(TANGLED))
    assert [e["loc"] for e in err.value.errors()] == [
        (),
        ("gates", 0, "concept_set"),
        ("captions", "seeds"),
        ("captions", "guidance", 0),
        ("captions", "guidance"),
    ]


def test_the_loader_lists_every_cross_field_problem_with_its_location() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(TANGLED, source="tangled.yaml")
    assert err.value.problems == TANGLED_PROBLEMS
    assert str(err.value).startswith("tangled.yaml: 5 problems found:")


def test_the_cli_shows_every_cross_field_problem(tmp_path: Path) -> None:
    path = tmp_path / "tangled.yaml"
    path.write_text(TANGLED)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "5 problems found" in result.output
    for problem in TANGLED_PROBLEMS:
        assert problem in result.output


def test_one_check_reports_each_of_its_problems() -> None:
    """Within one check too: both unknown axes of a crossing, both bad scales of a sweep."""
    crossing = BASE + "crossings:\n  - {name: x, axes: [age, colour]}\n"
    with pytest.raises(SpecError) as err:
        parse_spec(crossing)
    assert [p.split(" (line")[0] for p in err.value.problems] == [
        "crossings[0].axes[0]",
        "crossings[0].axes[1]",
    ]


# --- the resolved spec records every effective value -----------------------------------------


def test_the_resolved_spec_of_a_minimal_spec_records_every_default() -> None:
    spec = parse_spec(BASE)
    resolved = yaml.safe_load(dump_spec(spec))
    assert resolved == spec.model_dump(mode="json")
    assert resolved["statistics"] == {
        "bootstrap_resamples": 1000,
        "seed": 0,
        "resampling": "hierarchical",
        "interval": "centred",
        "alpha": 0.05,
        "rule": "min_effect",
        "min_effect": 0.3,
        "effect": "auto",
        "min_position": 0.2,
        "null_model": None,
    }
    assert resolved["report"]["paper"] == "a4" and resolved["report"]["image_budget_mb"] == 4.0
    assert resolved["crossings"] == [] and resolved["gates"] == []
    assert resolved["captions"] is None
    again = parse_spec(dump_spec(spec))
    assert again == spec and spec_hash(again) == spec_hash(spec)


@pytest.mark.parametrize("text", [RICH, BASE + "statistics: {null_model: vocabulary}\n"])
def test_the_resolved_spec_reads_back_to_the_same_spec_and_hash(text: str) -> None:
    spec = parse_spec(text)
    resolved = yaml.safe_load(dump_spec(spec))
    assert resolved == spec.model_dump(mode="json")
    again = parse_spec(dump_spec(spec))
    assert again == spec and spec_hash(again) == spec_hash(spec)


# --- the spec hash does not move --------------------------------------------------------------

# Computed on commit d9b091a, before spec.yaml recorded every value; a change here re-keys every
# run made from these specs (resumption, diff, provenance). The two toyworld audits changed on
# purpose since (they list lean_by_step), so their hashes are today's, as do the calibration
# scenarios (every axis marks the occupations, for the position between marked variants).
SHIPPED_HASHES = {
    "audits/tiny-demo.yaml": "a729c62ddb726d8867d2050d04f21e43e297c57e276d81c998b0ebf64afd13b3",
    "audits/toyworld-balanced.yaml": (
        "2d5a1e3f25c5f370880f9fe59fcc0a6d2f8f7f0a7ff1f78d266e3cf7c5e3b3c7"
    ),
    "audits/toyworld.yaml": "c83b3c65677e68df23c9ffa288713a525e335fce4d2fe39a4108a87c990f0ed0",
    "auditkit/calibration/scenarios/toyworld-balanced.yaml": (
        "5b3660503eb64cd38ccebe286069485ffec3b2233622246c7dde9fd04768846a"
    ),
    "auditkit/calibration/scenarios/toyworld-biased.yaml": (
        "96ab1943f132fdaf050f120777488d18f434c5faa6a785a8753cdf63e4c52cfb"
    ),
    "auditkit/calibration/scenarios/toyworld-reworded.yaml": (
        "87f5a98d52b92cc68f68eba8ac06f8f41b7b83591fe34055af96de5ceffd8d10"
    ),
    "tests/golden/toyworld-0.1.0/spec.yaml": (
        "1257c4c1a4612cbc3326fdd9c75f09ed4968b38fb210609e1e2b0c51151f0843"
    ),
}
SYNTHETIC_HASHES = {  # the synthetic calibration scenarios' specs at 8 seeds (every axis marked)
    "synthetic": "d23979897c79e2e07604a6f9d1ce4013e00bf51efd9855d98700d6917bf81732",
    "synthetic-nuisance": "bc1fda294732402e0c7c5521f8b936fde0fdff9742f303d103081be02ced6bc2",
}
TEXT_HASHES = {  # every later key away from its default; a spec naming only the legacy key
    "rich": (RICH, "36face5eb85c2d0a3f6e33a8645972bc6daa53e0d29160d14f460fbfdba6f294"),
    "legacy": (
        BASE + "statistics: {null_model: vocabulary}\n",
        "6f8eebeaf24cddd04df2647386b46bd3d337e7d5ab096de331b94d6433b0252f",
    ),
}


@pytest.mark.parametrize("path", sorted(SHIPPED_HASHES))
def test_the_hash_of_a_shipped_spec_is_unchanged(path: str) -> None:
    spec = load_spec(ROOT / path)
    assert spec_hash(spec) == SHIPPED_HASHES[path]
    assert spec_hash(parse_spec(dump_spec(spec))) == SHIPPED_HASHES[path]


@pytest.mark.parametrize("name", sorted(SYNTHETIC_HASHES))
def test_the_hash_of_a_synthetic_scenario_is_unchanged(name: str) -> None:
    assert spec_hash(scenario_spec(SCENARIOS[name], 8)) == SYNTHETIC_HASHES[name]


@pytest.mark.parametrize("name", sorted(TEXT_HASHES))
def test_the_hash_of_a_spec_using_later_keys_is_unchanged(name: str) -> None:
    text, expected = TEXT_HASHES[name]
    assert spec_hash(parse_spec(text)) == expected


def test_where_an_audit_runs_is_not_part_of_what_it_is() -> None:
    """``execution:`` (local or a Ray cluster) is recorded in spec.yaml but never hashed: a
    cluster run and a local run of one spec are the same audit and resume one run directory."""
    local = parse_spec(BASE)
    ray = parse_spec(BASE + "execution: {executor: ray, address: auto, workers: 4}\n")
    assert ray.execution.executor == "ray" and ray.execution.workers == 4
    assert spec_hash(ray) == spec_hash(local)
    assert yaml.safe_load(dump_spec(ray))["execution"]["address"] == "auto"
    with pytest.raises(SpecError) as err:
        parse_spec(BASE + "execution: {executor: slurm, workers: 0}\n")
    problems = [p.split(" (line")[0] for p in err.value.problems]
    assert problems == ["execution.executor", "execution.workers"], err.value.problems
