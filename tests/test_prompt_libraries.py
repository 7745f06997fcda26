"""The built-in prompt libraries: every shipped version has a source, a license and a frozen
content hash; their prompts read as English; a spec written from libraries expands to the
plain spec it stands for, records the versions, and reports bad entries where they are; the
``auditkit prompts`` commands work offline (sockets are blocked in this process)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from auditkit.cli import main
from auditkit.errors import SpecError
from auditkit.plan import plan_audit
from auditkit.prompts import content_hash, find_library, search_terms, shipped
from auditkit.prompts.library import parse_library
from auditkit.prompts.rules import fill
from auditkit.spec import dump_spec, load_spec, parse_spec, spec_hash

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ROOT / "auditkit" / "prompts" / "libraries"

FROZEN: dict[str, str] = {
    "activities@1": "4cfbb008944333cbbc240c1964f6b6230f3cea96252e38fb702a5d3151b677d9",
    "adjectives@1": "6bd665dab92fcf66126715a024d7a070eb79e54a4d9e4c196498880167d48419",
    "age@1": "777d7c68024c729e9f9f2c14177ff243b342c06c18dfcbeefb0794bb208c63da",
    "ethnicity@1": "657a462fc98ac524212ebb2cc70f3b66b5196f0643bef8e56f16f5cd1c85ce8d",
    "gender@1": "ffc7d34bfbce3c4a67f2a6e9c572bd06715832cf9b129140aaaed48736a17ba8",
    "objects@1": "a028adf359beece04a0e867e856ad52d7cc0664ee73088f135b1ed4cea86962f",
    "occupations@1": "d752a8aed900c1fe931f0ad09d878de6302216255e8951cbfaf9faf4f50af160",
    "skin-tone@1": "0878dcbbaf9ec6605cae4b9b785b145d5a459518d0ac280c5ad48b4e8068869e",
    "toyworld-age@1": "8580df8ba6e963c0c681dbbb3514e814692890a896701186cf1b48e9c576c1fc",
    "toyworld-gender@1": "9f4bfbe83b80a51ec42c673061915665007b42b7fb98a4ebccf76bcaacc8d9e1",
    "toyworld-occupations@1": "d2c9ecff2689cd71ee9a0807c50e3a5ecf79a1e75a812a40ee5a6506bb0e2ad1",
    "toyworld-skin@1": "37001406dfd1c211e5a2d850d02212e9b58a427c5d3c5cbe805cade7c9d981c7",
}
"""The content hash of every shipped library version. A version, once shipped, never changes:
a changed library is a new file NAME@VERSION+1 (and a new line here)."""

ARTICLE_EXCEPTIONS = {
    "toyworld-age@1": "toyworld's caption grammar keeps 'a' before 'old' (toyworld/world.py)",
}
"""Libraries whose prompts may break the a/an rule, with why."""
VOWEL_SOUND_CONSONANT = ("eu", "uni", "use", "usu", "one", "once", "ur")
"""Word starts written with a vowel that sound with a consonant ('a university')."""
SILENT_H = ("hour", "honest", "honor", "honour", "heir")
"""Word starts written with a consonant that sound with a vowel ('an hour')."""


def test_every_shipped_version_has_a_source_a_license_and_its_frozen_hash() -> None:
    found = {s.library.ref: s for s in shipped()}
    assert set(found) == set(FROZEN), (
        "the shipped libraries and FROZEN differ: a new version needs its hash frozen here, "
        f"a shipped version must never be removed (shipped only: {set(found) - set(FROZEN)}, "
        f"frozen only: {set(FROZEN) - set(found)})"
    )
    for ref, entry in found.items():
        source = entry.library.source
        assert source.citation.strip() and source.url.strip() and source.license.strip(), ref
        assert entry.sha256 == FROZEN[ref], (
            f"{ref} changed (sha256 {entry.sha256}): a changed library is a new version; "
            "restore this file and write NAME@VERSION+1 instead"
        )
        if entry.library.reference is not None:
            ref_source = entry.library.reference.source
            assert ref_source.citation and ref_source.url and ref_source.license, ref
            assert 1900 < entry.library.reference.year <= 2026, ref


def test_the_hash_is_of_the_content_not_the_layout() -> None:
    path = LIBRARIES / "toyworld-skin@1.yaml"
    text = path.read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    relaid = "# a comment\n" + yaml.safe_dump(document, sort_keys=True, width=60)
    same = parse_library(relaid, source="libraries/toyworld-skin@1.yaml")
    assert same.sha256 == FROZEN["toyworld-skin@1"] == content_hash(document)
    document["wordings"]["caption"]["groups"]["dark"] = ["dark-skinned person"]
    changed = parse_library(yaml.safe_dump(document), source="libraries/toyworld-skin@1.yaml")
    assert changed.sha256 != FROZEN["toyworld-skin@1"]


def test_a_library_file_is_checked_and_named_for_its_version() -> None:
    text = (LIBRARIES / "toyworld-gender@1.yaml").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match=r"must be named toyworld-gender@1\.yaml"):
        parse_library(text, source="libraries/toyworld-gender@2.yaml")
    document = yaml.safe_load(text)
    del document["source"]["license"]
    with pytest.raises(ValueError, match=r"source\.license: Field required"):
        parse_library(yaml.safe_dump(document), source="libraries/toyworld-gender@1.yaml")
    document = yaml.safe_load(text)
    document["terms"] = ["man"]
    with pytest.raises(ValueError, match="may not have"):
        parse_library(yaml.safe_dump(document), source="libraries/toyworld-gender@1.yaml")


def _prompts(entry_ref: str) -> list[str]:
    lib = find_library(entry_ref).library
    if lib.terms is not None:
        return [fill(t, term) for t in lib.templates or [] for term in lib.terms]
    out = []
    for wording in (lib.wordings or {}).values():
        for terms in wording.groups.values():
            out.extend(fill(t, term) for t in wording.templates for term in terms)
        for group, qualifier in (wording.qualifiers or {}).items():
            assert qualifier.strip() and "{" not in qualifier, (entry_ref, group)
    return out


def _article_mistakes(prompt: str) -> list[str]:
    mistakes = []
    for article, word in re.findall(r"\b(a|an) ([A-Za-z][\w-]*)", prompt):
        lower = word.lower()
        vowel = lower[0] in "aeiou" and not lower.startswith(VOWEL_SOUND_CONSONANT)
        vowel = vowel or lower.startswith(SILENT_H)
        if (article == "a") == vowel:
            mistakes.append(f"{article} {word}")
    return mistakes


def test_every_prompt_a_library_makes_uses_the_right_article() -> None:
    wrong = {}
    for entry in shipped():
        ref = entry.library.ref
        if ref in ARTICLE_EXCEPTIONS:
            continue
        for prompt in _prompts(ref):
            if _article_mistakes(prompt):
                wrong.setdefault(ref, []).append(prompt)
    assert not wrong, f"prompts with a wrong article: {wrong}"
    assert _article_mistakes("a photo of a accountant") == ["a accountant"]
    assert _article_mistakes("a photo of an university teacher") == ["an university"]
    assert not _article_mistakes("a photo of an hour-long walk by a European")


def test_a_spec_written_from_libraries_plans_the_default_audit() -> None:
    plain = load_spec(ROOT / "audits" / "toyworld.yaml")
    written = load_spec(ROOT / "audits" / "toyworld-libraries.yaml")
    assert written.axes == plain.axes and written.concepts == plain.concepts
    assert plan_audit(written).prompts == plan_audit(plain).prompts
    used = {(u.library, u.version, u.used_in, u.name) for u in written.libraries}
    assert used == {
        ("toyworld-occupations", 1, "concepts[0]", "occupations"),
        ("toyworld-gender", 1, "axes[0]", "gender"),
        ("toyworld-skin", 1, "axes[1]", "skin"),
        ("toyworld-age", 1, "axes[2]", "age"),
    }
    for use in written.libraries:
        assert use.sha256 == FROZEN[f"{use.library}@{use.version}"]
    # the resolved spec holds the expanded terms and the hashes: it reads back to the same
    # spec and hash without naming a library
    resolved = dump_spec(written)
    assert "library:" in resolved and "toyworld-occupations" in resolved
    data = yaml.safe_load(resolved)
    assert data["concepts"][0]["terms"] == list(plain.concepts[0].terms)
    again = parse_spec(resolved)
    assert again == written and spec_hash(again) == spec_hash(written)
    # the plain spec's hash is untouched by the new 'libraries' key
    assert "libraries" not in dump_spec(plain).split("grounding:")[0]


def test_select_exclude_wording_and_overrides() -> None:
    spec = parse_spec(
        """\
spec_version: 1
name: picked
model: {id: builtin:toyworld-biased}
seeds: 2
axes:
  - {library: toyworld-gender@1, name: gender, templates: ["a drawing of a {term}"]}
  - {library: toyworld-age, wording: caption, select: [old, young], defaults: false}
concepts:
  - {library: toyworld-occupations@1, select: [pilot, nurse, chef], exclude: [chef]}
"""
    )
    assert spec.concepts[0].name == "toyworld_occupations"
    assert spec.concepts[0].terms == ["pilot", "nurse"]
    assert spec.axes[0].templates == ["a drawing of a {term}"]
    assert list(spec.axes[1].groups) == ["old", "young"]  # the first group is the + end
    assert spec.axes[1].name == "toyworld_age" and spec.axes[1].defaults is False
    uses = {u.used_in: u for u in spec.libraries}
    assert uses["concepts[0]"].terms == 2 and uses["axes[1]"].wording == "caption"
    assert uses["axes[1]"].version == 1  # a name without a version takes the newest


def test_bad_library_entries_are_each_reported_at_their_line() -> None:
    text = """\
spec_version: 1
name: bad
model: {id: builtin:toyworld-biased}
seeds: 4
axes:
  - {library: toyworld-gender@2}
  - {library: toyworld-skin, wording: captoin}
  - {library: toyworld-occupations@1}
  - {library: toyworld-age, select: [young, olde]}
concepts:
  - {library: toyworld-occupations@1, select: [nurse, docter]}
  - {library: toyworld-gender@1}
  - {library: occupatons@1}
  - {library: toyworld-occupations@1, terms: [nurse]}
  - {library: toyworld-occupations@1, exclude: [nurse, teacher, chef, doctor, farmer, builder, pilot, firefighter]}
"""  # noqa: E501
    with pytest.raises(SpecError) as caught:
        parse_spec(text, source="bad.yaml")
    problems = caught.value.problems
    expected = [
        "axes[0].library (line 6): Prompt library 'toyworld-gender' has no version 2",
        "axes[1].wording (line 7): toyworld-skin@1 has no wording 'captoin'",
        "axes[2].library (line 8): toyworld-occupations@1 is a concepts library: list it "
        "under 'concepts'",
        "axes[3].select[1] (line 9): 'olde' is not a group of this library; did you mean 'old'?",
        "concepts[0].select[1] (line 11): 'docter' is not a term of this library; did you "
        "mean 'doctor'?",
        "concepts[1].library (line 12): toyworld-gender@1 is an axis library: list it under 'axes'",
        "concepts[2].library (line 13): There is no prompt library named 'occupatons'",
        "concepts[3].terms (line 14): unknown key 'terms' in a library entry",
        "concepts[4].exclude (line 15): excludes every term",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) == len(expected), problems  # each once, nothing about missing keys


def test_prompts_commands_list_show_and_search_offline() -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["prompts", "list"])
    assert listed.exit_code == 0, listed.output
    for ref, sha in FROZEN.items():
        assert re.search(rf"^{re.escape(ref)}\s.*sha256:{sha[:12]}$", listed.output, re.M), ref
    shown = runner.invoke(main, ["prompts", "show", "toyworld-occupations"])
    assert shown.exit_code == 0, shown.output
    assert f"sha256: {FROZEN['toyworld-occupations@1']}" in shown.output
    assert "license: Apache-2.0 (this project)" in shown.output
    assert "nurse, teacher, chef, doctor, farmer, builder, pilot, firefighter" in shown.output
    wording = runner.invoke(main, ["prompts", "show", "toyworld-skin@1"])
    assert "wording caption (default)" in wording.output and "dark: dark person" in wording.output
    found = runner.invoke(main, ["prompts", "search", "NURS"])
    assert found.exit_code == 0 and "toyworld-occupations@1" in found.output
    dark = {(e.library.ref, t) for e, _, t in search_terms("dark")}
    assert ("toyworld-skin@1", "dark person") in dark
    assert ("skin-tone@1", "dark-skinned person") in dark
    assert all("dark" in t.lower() or "dark" in w for e, w, t in search_terms("dark"))
    for bad, message in (
        (["prompts", "show", "occupation"], "Did you mean occupations, toyworld-occupations?"),
        (["prompts", "show", "toyworld-skin@9"], "has no version 9"),
        (["prompts", "show", "Not A Name"], "does not name a prompt library"),
        (["prompts", "search", " "], "Give a word to search for"),
    ):
        result = runner.invoke(main, bad)
        assert result.exit_code == 2, (bad, result.output)
        assert message in result.output, (bad, result.output)
    nothing = runner.invoke(main, ["prompts", "search", "zeppelin"])
    assert nothing.exit_code == 0 and "no library has a term matching" in nothing.output


def test_validate_lists_the_libraries_and_schema_accepts_library_entries() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["validate", str(ROOT / "audits" / "toyworld-libraries.yaml")])
    assert result.exit_code == 0, result.output
    assert "concepts[0] occupations: toyworld-occupations@1 (8 terms" in result.output
    import json

    schema = json.loads(runner.invoke(main, ["schema"]).output)
    refs = [x["$ref"] for x in schema["properties"]["concepts"]["items"]["anyOf"]]
    assert refs == ["#/$defs/ConceptSetSpec", "#/$defs/ConceptLibraryEntry"]
    assert "wording" in schema["$defs"]["AxisLibraryEntry"]["properties"]
