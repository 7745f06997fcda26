"""The spec as a whole: cross-field problems reported together."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from auditkit.cli import main
from auditkit.errors import SpecError
from auditkit.spec import AuditSpec, parse_spec

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
