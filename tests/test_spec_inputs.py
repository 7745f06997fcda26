"""Hostile spec inputs (issue 16): each is a located spec error (exit 2) within bounded time,
never an internal error (exit 3). One test per defect found; tests/test_spec_fuzz.py generates
the rest."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.analyses.checks import load_checked_spec
from auditkit.cli import main
from auditkit.errors import SpecError
from auditkit.spec import parse_spec
from auditkit.spec._yaml import MAX_NESTING, MAX_SPEC_BYTES, MAX_VALUES

QUICK = 2.0
"""CPU seconds of the reading thread within which a spec is read or refused, however large or
hostile (the limit RELIABILITY.md states). The thread's CPU time (``time.thread_time``), not wall
time nor the process's: a busy machine's other work (the test session's Ray cluster, another
job) and the worker's own background threads (left by earlier tests) must not fail the guard; a
blow-up (an anchor bomb built, a quadratic check, a plan expanded) still does. Reading a spec is
single-threaded."""

GOOD = """\
spec_version: 1
name: ok
model:
  id: example/model
  device: cpu
seeds: 2
axes:
  - name: gender
    templates: ["a photo of a {term}"]
    groups:
      man: [man]
      woman: [woman]
concepts:
  - name: jobs
    templates: ["a photo of a {term}"]
    terms: [doctor, nurse]
"""


def _validate(tmp_path: Path, data: str | bytes, command: str = "validate") -> tuple[int, str]:
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(data.encode() if isinstance(data, str) else data)
    args = [command, str(spec)]
    if command == "plan":
        args += ["--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "unexpected" not in result.output and "Traceback" not in result.output
    return result.exit_code, result.output


def _refused(tmp_path: Path, data: str | bytes, *expected: str) -> str:
    code, out = _validate(tmp_path, data)
    assert code == 2, out
    assert out.startswith("auditkit: error:"), out
    for text in expected:
        assert text in out, out
    return out


def test_the_good_spec_loads(tmp_path: Path) -> None:
    assert _validate(tmp_path, GOOD)[0] == 0


# --- 1: bytes that are not UTF-8 text, byte-order marks, deep nesting --------------------------


def test_bytes_that_are_not_utf8_are_a_located_spec_error(tmp_path: Path) -> None:
    data = GOOD.encode().replace(b"name: ok", b"name: o\xffk")
    _refused(tmp_path, data, "line 2, column 8", "0xff is not UTF-8", "How to fix")


def test_a_utf8_byte_order_mark_is_read_past(tmp_path: Path) -> None:
    assert _validate(tmp_path, b"\xef\xbb\xbf" + GOOD.encode())[0] == 0


@pytest.mark.parametrize(("encoding", "name"), [("utf-16", "UTF-16"), ("utf-32", "UTF-32")])
def test_a_utf16_or_utf32_spec_is_refused_by_name(tmp_path: Path, encoding: str, name: str) -> None:
    _refused(tmp_path, GOOD.encode(encoding), f"{name} encoded", "save the spec as UTF-8")


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 500, 100_000])
def test_deep_nesting_is_refused_with_its_line(tmp_path: Path, depth: int) -> None:
    text = GOOD + "description: " + "[" * depth + "]" * depth + "\n"
    _refused(tmp_path, text, "line 17", "nest")  # libyaml itself stops at 1,000 levels


def test_nesting_within_the_limit_is_read(tmp_path: Path) -> None:
    text = GOOD + "description: " + "[" * 10 + "]" * 10 + "\n"
    _refused(tmp_path, text, "description (line 17): Input should be a valid string")


def test_an_anchor_bomb_is_refused_before_it_is_built(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    started = time.thread_time()
    _refused(tmp_path, GOOD + "\n".join(lines) + "\n", f"more than {MAX_VALUES:,} values")
    assert time.thread_time() - started < QUICK


def test_aliases_that_nest_deep_once_expanded_are_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [[[[[[[[[[x]]]]]]]]]]"]
    lines += [f"a{i}: &a{i} [[[[[[[[[[*a{i - 1}]]]]]]]]]]" for i in range(1, 10)]
    _refused(tmp_path, GOOD + "\n".join(lines) + "\n", f"nest more than {MAX_NESTING} levels")


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, GOOD + "description: &a [*a]\n", "refers to a collection that contains")


def test_an_impossible_date_is_a_located_spec_error(tmp_path: Path) -> None:
    _refused(tmp_path, GOOD + "description: 2001-02-30\n", "line 17", "2001-02-30")


def test_a_lone_surrogate_in_spec_text_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="surrogate"):
        parse_spec(GOOD.replace("name: ok", "name: o\ud800k"))


# --- 3: every number finite --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (GOOD.replace("device: cpu", "device: cpu\n  guidance_scale: .inf"), "guidance_scale"),
        (GOOD + "gates: [{metric: max_abs_lean, max: .nan}]\n", "gates[0].max"),
        (GOOD + "gates: [{metric: max_abs_lean, min: -.inf}]\n", "gates[0].min"),
        (GOOD + "statistics: {min_effect: .nan}\n", "statistics.min_effect"),
        (GOOD + "probe: {unit_budget_mb: .inf}\n", "probe.unit_budget_mb"),
    ],
)
def test_nan_and_infinity_are_refused_where_given(tmp_path: Path, text: str, where: str) -> None:
    _refused(tmp_path, text, f"{where} (line", "finite number")


# --- 5: no key twice ---------------------------------------------------------------------------


def test_a_gate_bound_given_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    text = GOOD + "gates:\n  - metric: max_abs_lean\n    max: 0.1\n    max: 5\n"
    _refused(tmp_path, text, "key 'max' is given twice (line 19 and line 20)")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD + "seeds: 3\n", "key 'seeds' is given twice (line 6 and line 17)"),
        (GOOD.replace("  device: cpu", "  device: cpu\n  id: x/y"), "(line 4 and line 6)"),
        (GOOD.replace("      woman: [woman]", "      woman: [woman]\n      man: [x]"), "'man'"),
        (GOOD + "report: {title: a, title: b}\n", "key 'title' is given twice"),
    ],
)
def test_a_key_given_twice_at_any_level_is_refused(
    tmp_path: Path, text: str, expected: str
) -> None:
    _refused(tmp_path, text, expected)


def test_a_merge_key_may_be_overridden(tmp_path: Path) -> None:
    text = GOOD.replace("seeds: 2", "base: &b {id: example/model, device: cpu}\nseeds: 2")
    assert "unknown key 'base'" in _refused(tmp_path, text)  # the merge itself reads
    merged = GOOD.replace("model:\n  id: example/model\n  device: cpu\n", "")
    merged = "defaults: &m {id: example/model, device: cpu}\n" + merged
    merged += "model:\n  <<: *m\n  device: cpu\n"
    assert "device" not in _refused(tmp_path, merged, "unknown key 'defaults'")


# --- 6: a boolean is not a number --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (GOOD.replace("seeds: 2", "seeds: true"), "seeds (line 6)"),
        (GOOD.replace("seeds: 2", "seeds: [0, true]"), "seeds (line 6)"),
        (GOOD.replace("device: cpu", "device: cpu\n  steps: true"), "model.steps"),
        (GOOD.replace("device: cpu", "device: cpu\n  guidance_scale: false"), "guidance_scale"),
        (GOOD + "batch_size: true\n", "batch_size"),
        (GOOD + "gates: [{metric: max_abs_lean, max: true}]\n", "gates[0].max"),
        (GOOD + "statistics: {bootstrap_resamples: false}\n", "bootstrap_resamples"),
        (GOOD.replace("spec_version: 1", "spec_version: true"), "spec_version"),
    ],
)
def test_a_boolean_is_not_taken_for_a_number(tmp_path: Path, text: str, where: str) -> None:
    _refused(tmp_path, text, where)


def test_a_boolean_field_still_takes_a_boolean(tmp_path: Path) -> None:
    text = GOOD.replace("device: cpu", "device: cpu\n  trust_remote_code: false")
    assert _validate(tmp_path, text)[0] == 0


# --- 7: oversized inputs are refused early; accepted ones validate quickly ----------------------


@pytest.mark.parametrize("size", [MAX_SPEC_BYTES, 8 * 2**20, 28 * 2**20])
def test_a_spec_over_the_size_cap_is_refused_before_it_is_read(tmp_path: Path, size: int) -> None:
    data = GOOD + "description: " + "x" * size + "\n"
    started = time.thread_time()
    _refused(tmp_path, data, f"more than the limit of {MAX_SPEC_BYTES:,}")
    assert time.thread_time() - started < QUICK


def test_spec_text_over_the_size_cap_is_refused() -> None:
    with pytest.raises(SpecError, match="more than the limit"):
        parse_spec(GOOD + "description: " + "é" * MAX_SPEC_BYTES + "\n")


@pytest.mark.parametrize(
    "body",
    [
        # one long list of distinct terms: once quadratic in the duplicate check
        "".join(f"      - t{i}\n" for i in range(60_000)),
        # values galore: refused at the value cap, as the parser meets them
        "      - [" + ", ".join(["t"] * 300_000) + "]\n",
    ],
)
def test_a_large_input_under_the_cap_validates_within_two_seconds(
    tmp_path: Path, body: str
) -> None:
    text = GOOD.replace("    terms: [doctor, nurse]\n", "    terms:\n" + body)
    assert len(text.encode()) <= MAX_SPEC_BYTES
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    started = time.thread_time()
    with contextlib.suppress(SpecError):
        load_checked_spec(spec)
    assert time.thread_time() - started < QUICK


def test_errors_are_listed_up_to_a_cap(tmp_path: Path) -> None:
    body = "".join(f"      - {{{i}: x}}\n" for i in range(5_000))
    text = GOOD.replace("    terms: [doctor, nurse]\n", "    terms:\n" + body)
    out = _refused(tmp_path, text, "more problems")
    assert out.count("\n  - ") <= 51


# --- 2 and 8: the folders a spec names ---------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        ('"./a\\0b"', "model.id (line 4): contains the control character '\\x00'"),
        ('"a\\0b"', "model.id (line 4): contains the control character"),
        ('"a\\tb"', "model.id (line 4): contains the control character '\\t'"),
        ("~nosuchuser-auditkit/x", "model.id (line 4): cannot expand '~nosuchuser-auditkit'"),
    ],
)
def test_a_model_id_that_names_no_folder_is_a_located_spec_error(
    tmp_path: Path, model_id: str, expected: str
) -> None:
    _refused(tmp_path, GOOD.replace("example/model", model_id), expected)


def test_a_captioner_id_with_a_nul_is_a_located_spec_error(tmp_path: Path) -> None:
    text = GOOD + 'captions:\n  captioner: {kind: image-to-text, id: "m\\0"}\n'
    _refused(tmp_path, text, "captions.captioner.id (line 18): contains the control character")


@pytest.mark.parametrize("model_id", ["..", "../m", "./a/../../m", "org/../../m", "a/../.."])
def test_a_relative_model_folder_cannot_leave_the_spec_folder(
    tmp_path: Path, model_id: str
) -> None:
    _refused(
        tmp_path,
        GOOD.replace("example/model", model_id),
        "model.id (line 4)",
        "leads outside the spec's folder",
        "absolute path",
    )


def test_a_relative_captioner_folder_cannot_leave_the_spec_folder(tmp_path: Path) -> None:
    text = GOOD + "captions:\n  captioner: {kind: image-to-text, id: ../../cap}\n"
    _refused(tmp_path, text, "captions.captioner.id (line 18)", "leads outside the spec's folder")


def test_folders_within_the_spec_folder_or_absolute_are_taken(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    spec = tmp_path / "audit" / "spec.yaml"
    spec.parent.mkdir()
    for model_id, resolved in [
        ("./m", spec.parent / "m"),
        ("./sub/../m", spec.parent / "m"),
        (".", spec.parent),
        (str(outside), outside),
    ]:
        spec.write_text(GOOD.replace("example/model", model_id))
        assert load_checked_spec(spec).model.id == str(resolved.resolve())
    spec.write_text(GOOD)
    assert load_checked_spec(spec).model.id == "example/model"  # a hub id is no folder


def test_a_path_problem_is_listed_with_the_others(tmp_path: Path) -> None:
    text = GOOD.replace("example/model", "../m").replace("seeds: 2", "seeds: 0")
    _refused(tmp_path, text, "2 problems found", "model.id (line 4)", "seeds (line 6)")


# --- 4: an expansion past the plan's limit is refused before it is built ------------------------


def _crossing_spec(terms: int, seeds: int) -> str:
    axes = []
    for name in ("x", "y", "z"):
        first = ", ".join(f"{name}p{i}" for i in range(terms))
        second = ", ".join(f"{name}q{i}" for i in range(terms))
        axes.append(
            f"  - name: {name}\n    templates: ['a photo of a {{term}}', 'a {{term}}']\n"
            f"    groups:\n      p: [{first}]\n      q: [{second}]\n"
        )
    return (
        f"spec_version: 1\nname: big\nmodel: {{id: example/model, device: cpu}}\nseeds: {seeds}\n"
        "axes:\n" + "".join(axes) + "crossings:\n  - name: xyz\n    axes: [x, y, z]\n"
        "concepts:\n  - name: jobs\n    templates: ['a photo of a {term}']\n    terms: [doctor]\n"
    )


def test_a_crossing_that_expands_past_the_limit_is_refused_at_once(tmp_path: Path) -> None:
    from auditkit.plan import MAX_UNITS

    started = time.thread_time()
    code, out = _validate(tmp_path, _crossing_spec(30, 32), "plan")
    assert time.thread_time() - started < QUICK
    assert code == 2, out
    assert "(top level) (line 1): the audit expands to up to 432," in out
    assert f"more than the limit of {MAX_UNITS:,}" in out


def test_plan_audit_refuses_an_expansion_past_the_limit() -> None:
    from auditkit.plan import plan_audit

    spec = parse_spec(_crossing_spec(30, 32))  # the spec alone is valid
    with pytest.raises(SpecError, match="work units, more than the limit"):
        plan_audit(spec)


def test_seeds_count_towards_the_limit(tmp_path: Path) -> None:
    _refused(tmp_path, GOOD.replace("seeds: 2", "seeds: 100000"), "x 100,000 seeds")


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "audits").glob("*.yaml")))
def test_the_counted_bound_holds_and_is_exact_for_the_shipped_audits(path: Path) -> None:
    from auditkit.plan import expand_prompts, prompt_bound

    spec = load_checked_spec(path)
    assert prompt_bound(spec) == len(expand_prompts(spec))


def test_the_counted_bound_holds_for_crossings_with_qualifiers() -> None:
    from auditkit.plan import expand_prompts, prompt_bound

    text = _crossing_spec(2, 1).replace(
        "      q: [xq0, xq1]\n", "      q: [xq0, xq1]\n    qualifiers: {p: P, q: Q}\n"
    )
    spec = parse_spec(text)
    assert prompt_bound(spec) >= len(expand_prompts(spec))
    assert prompt_bound(spec) == len(expand_prompts(spec))


def test_an_unknown_builtin_model_is_a_located_spec_error(tmp_path: Path) -> None:
    text = GOOD.replace("example/model", "builtin:toyworld-bi")
    out = _refused(tmp_path, text, "model.id (line 4): unknown builtin model 'builtin:toyworld-bi'")
    assert "builtin:toyworld-biased" in out
    assert _validate(tmp_path, GOOD.replace("example/model", "builtin:tiny-sd"))[0] == 0
