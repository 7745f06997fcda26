"""Open-vocabulary discovery: mining terms from captions, planning their prompts with the
audit's unit ids, ranking them against concepts and axes (synthetic latents with planted
alignments), and an end-to-end run on the shipped toyworld-biased model with its captioner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from auditkit.analyze.discovery import DISCOVERY_COLUMNS, rank_terms, ranking_layout
from auditkit.analyze.measures import AuditLayout, cosine
from auditkit.errors import SchemaVersionError, SpecError
from auditkit.passes.discovery import (
    DISCOVERED_ROLE,
    STOPWORDS,
    TERM_COLUMNS,
    caption_terms,
    discovery_plan,
    dropped_words,
    mine_terms,
    read_discovery,
)
from auditkit.plan import plan_audit, prompt_id
from auditkit.spec import dump_spec, parse_spec, spec_hash

SPEC = """\
spec_version: 1
name: discovery
model: {{id: builtin:toyworld-biased, device: cpu, steps: 4, guidance_scale: 4.0, resolution: 32}}
seeds: 4
batch_size: 64
centring: {{reference: {centring}}}
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
concepts:
  - name: occupations
    templates: ["a photo of a {{term}}"]
    terms: [nurse, firefighter]
analyses: [lean]
statistics: {{bootstrap_resamples: 200}}
captions:
  captioner: {{kind: toyworld}}
{discovery}"""
DISCOVERY = "  discovery: {max_terms: 30, min_count: 3, ngrams: 2, top_k: 5}\n"


def _spec_text(discovery: str = DISCOVERY, centring: str = "set_mean") -> str:
    return SPEC.format(discovery=discovery, centring=centring)


# --- mining ------------------------------------------------------------------------------------

CAPTIONS = [
    ("chef", "a photo of a chef in a white hat"),
    ("chef", "a chef wearing a white hat."),
    ("chef", "a smiling chef, white hat"),
    ("chef", "a chef in the kitchen"),
    ("pilot", "a pilot in a blue uniform"),
    ("pilot", "A smiling pilot in a Blue Uniform"),
    ("pilot", "a pilot, blue uniform and cap"),
    ("pilot", "a smiling woman"),
]


def _captions() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"unit_id": f"u{i}", "set_name": "jobs", "term": concept, "caption": text}
            for i, (concept, text) in enumerate(CAPTIONS)
        ]
    )


def _mine(
    frame: pd.DataFrame,
    *,
    ngrams: int = 2,
    min_count: int = 2,
    max_terms: int = 30,
    drop_terms: frozenset[str] = frozenset(),
) -> tuple[list[tuple[str, int]], pd.DataFrame]:
    return mine_terms(
        frame,
        ngrams=ngrams,
        min_count=min_count,
        max_terms=max_terms,
        drop_words=STOPWORDS | {"chef", "pilot"},
        drop_terms=drop_terms,
    )


def test_mining_drops_stopwords_and_concepts_keeps_frequent_phrases() -> None:
    vocabulary, counts = _mine(_captions())
    assert vocabulary == [
        ("blue", 3),
        ("blue uniform", 3),
        ("hat", 3),
        ("smiling", 3),
        ("uniform", 3),
        ("white", 3),
        ("white hat", 3),
    ]  # equal counts: alphabetical; "kitchen", "cap", "woman" are seen once only
    by = counts.set_index(["concept", "term"])["count"]
    assert by[("chef", "hat")] == 3 and by[("pilot", "hat")] == 0
    assert by[("pilot", "smiling")] == 2 and by[("chef", "smiling")] == 1
    assert set(counts["n_captions"]) == {4}
    assert len(counts) == 2 * len(vocabulary)  # every (concept, kept term), zeros included
    # phrases never cross punctuation nor include a dropped word ("smiling chef", "uniform and")
    assert caption_terms("a smiling chef, white hat", 3, STOPWORDS | {"chef"}, frozenset()) == {
        "smiling",
        "white",
        "hat",
        "white hat",
    }


def test_mining_options_and_determinism() -> None:
    frame = _captions()
    first = _mine(frame)
    shuffled = _mine(frame.sample(frac=1.0, random_state=3).reset_index(drop=True))
    assert first[0] == shuffled[0]
    pd.testing.assert_frame_equal(
        first[1].sort_values(["concept", "term"]).reset_index(drop=True),
        shuffled[1].sort_values(["concept", "term"]).reset_index(drop=True),
    )
    words = _mine(frame, ngrams=1)[0]
    assert [t for t, _ in words] == ["blue", "hat", "smiling", "uniform", "white"]
    assert [t for t, _ in _mine(frame, max_terms=2)[0]] == ["blue", "blue uniform"]
    assert [t for t, _ in _mine(frame, min_count=4)[0]] == []
    kept = [t for t, _ in _mine(frame, drop_terms=frozenset({"white hat"}))[0]]
    assert "white hat" not in kept and "white" in kept and "hat" in kept


def test_dropped_words_come_from_templates_concepts_and_extra_stopwords() -> None:
    spec = parse_spec(
        _spec_text("  discovery: {stopwords: [Dark, old person], template: 'an image of {term}'}\n")
    )
    words, phrases = dropped_words(spec)
    assert {"photo", "nurse", "firefighter", "person", "image", "dark"} <= words
    assert words >= STOPWORDS
    assert "man" not in words and "woman" not in words  # axis terms are what we look for
    assert phrases == {"old person"}


# --- the spec and the plan ------------------------------------------------------------------


def test_spec_section_defaults_and_leaves_other_specs_unchanged() -> None:
    plain = parse_spec(_spec_text(discovery=""))
    assert plain.captions is not None and plain.captions.discovery is None
    assert "discovery: null" in dump_spec(plain)  # recorded as off; the hash leaves it out
    spec = parse_spec(_spec_text())
    section = spec.captions.discovery if spec.captions else None
    assert section is not None
    assert (section.max_terms, section.min_count, section.ngrams, section.top_k) == (30, 3, 2, 5)
    assert section.template is None and section.stopwords == []
    assert parse_spec(dump_spec(spec)) == spec
    assert spec_hash(spec) != spec_hash(plain)
    # the audit's own plan (and its hash) does not see discovery
    assert plan_audit(spec).plan_hash == plan_audit(plain).plan_hash


@pytest.mark.parametrize(
    ("discovery", "located", "message"),
    [
        ("  discovery: {ngrams: 9}\n", "captions.discovery.ngrams", "less than or equal to 4"),
        ("  discovery: {template: 'a photo'}\n", "captions.discovery.template", "{term}"),
        ("  discovery: {top_k: 0}\n", "captions.discovery.top_k", "greater than or equal"),
        ("  discovery: {colour: red}\n", "captions.discovery.colour", "unknown key"),
        ("  roles: [marked]\n  discovery: {}\n", "captions.discovery", "add 'concept'"),
    ],
)
def test_bad_discovery_section_is_located(discovery: str, located: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(_spec_text(discovery))
    assert any(p.startswith(located) and message in p for p in err.value.problems), err.value


def test_term_units_share_the_audit_unit_ids() -> None:
    spec = parse_spec(_spec_text())
    audit = plan_audit(spec)
    sub = discovery_plan(spec, ["woman", "old dark"])
    assert [p.prompt for p in sub.prompts] == ["a photo of a woman", "a photo of a old dark"]
    assert {p.role for p in sub.prompts} == {DISCOVERED_ROLE}
    assert len(sub.units) == 2 * len(spec.seed_list)
    woman = prompt_id("a photo of a woman")
    assert {u.unit_id for u in sub.units if u.prompt_id == woman} == {
        u.unit_id for u in audit.units if u.prompt_id == woman
    }


# --- ranking on planted latents ----------------------------------------------------------------


def _planted(centring: str) -> tuple[AuditLayout, np.ndarray, dict[str, int], pd.DataFrame]:
    """Latents with known answers: term 'x_nurse' sits on nurse's direction, 'x_fire' on
    firefighter's, 'x_man' on the man end of the gender axis, 'x_woman' on the woman end,
    'noise' on none; the concepts themselves lean nowhere."""
    spec = parse_spec(
        _spec_text(centring=centring).replace("[nurse, firefighter]", "[nurse, firefighter, chef]")
    )
    rng = np.random.default_rng(0)
    dim, seeds = 48, 12
    e = np.eye(dim)
    base = rng.normal(size=dim) * 5
    means = {
        "a photo of a person": base,
        "a photo of a man": base + 2 * e[0],
        "a photo of a woman": base - 2 * e[0],
        "a photo of a nurse": base + 3 * e[1],
        "a photo of a firefighter": base + 3 * e[2],
        "a photo of a chef": base + 3 * e[3],
    }
    terms = {
        "x_nurse": base + 3 * e[1] + 1.5 * e[4],
        "x_fire": base + 3 * e[2] + 1.5 * e[5],
        "x_man": base + 2 * e[0] + 1.0 * e[8],
        "x_woman": base - 2 * e[0] + 1.0 * e[6],
        "noise": base + 3 * e[7],
    }
    texts = list(means) + [f"term {t}" for t in terms]
    vectors = list(means.values()) + list(terms.values())
    per_seed = np.stack([v + 0.1 * rng.normal(size=(seeds, dim)) for v in vectors])
    rows = {prompt_id(t): i for i, t in enumerate(texts)}
    term_rows = {t: len(means) + i for i, t in enumerate(terms)}
    counts = pd.DataFrame(
        [
            {"concept_set": "occupations", "concept": c, "term": t, "count": n}
            for c, t, n in [("nurse", "x_nurse", 7), ("firefighter", "x_fire", 2)]
        ]
    )
    return ranking_layout(spec, rows), per_seed, term_rows, counts


@pytest.mark.parametrize("centring", ["base", "set_mean"])
def test_planted_terms_rank_first_with_intervals(centring: str) -> None:
    layout, per_seed, term_rows, counts = _planted(centring)
    table = rank_terms(layout, per_seed, term_rows, counts, resamples=300, seed=1, top_k=2)
    assert list(table.columns) == DISCOVERY_COLUMNS
    concepts = table[table["axis"] == ""]
    assert len(concepts) == 3 * 5
    first = concepts[concepts["rank"] == 1].set_index("concept")["term"]
    assert first["nurse"] == "x_nurse" and first["firefighter"] == "x_fire"
    assert (concepts.groupby("concept")["top"].sum() == 2).all()
    assert (concepts.groupby("concept")["rank"].apply(sorted) == [[1, 2, 3, 4, 5]] * 3).all()
    axis = table[table["axis"] == "gender"].sort_values("rank")
    assert set(axis["positive_group"]) == {"man"} and set(axis["concept"]) == {""}
    assert axis["term"].iloc[0] == "x_man" and axis["term"].iloc[-1] == "x_woman"
    assert axis["top"].sum() == 4  # two at each end
    ci = table[["cosine_ci_low", "cosine", "cosine_ci_high"]].to_numpy()
    assert np.isfinite(ci).all()
    assert (ci[:, 0] <= ci[:, 1] + 1e-12).all() and (ci[:, 1] <= ci[:, 2] + 1e-12).all()
    nurse = concepts.set_index(["concept", "term"])
    assert nurse.loc[("nurse", "x_nurse"), "count"] == 7
    assert nurse.loc[("nurse", "noise"), "count"] == 0
    assert axis.set_index("term").loc["x_fire", "count"] == 2  # summed over the set's concepts
    # point estimates are the plain centred cosines of the seed-mean latents
    H = per_seed.mean(axis=1)
    R = H[0] if centring == "base" else H[3:6].mean(axis=0)
    expected = cosine(H[3] - R, H[term_rows["x_fire"]] - R)
    assert nurse.loc[("nurse", "x_fire"), "cosine"] == pytest.approx(expected, abs=1e-9)
    g = H[1] - H[2]
    lean = axis.set_index("term").loc["noise", "cosine"]
    assert lean == pytest.approx(cosine(H[term_rows["noise"]] - R, g), abs=1e-9)


def test_ranking_is_reproducible_and_intervals_optional() -> None:
    layout, per_seed, term_rows, counts = _planted("base")
    args = (layout, per_seed, term_rows, counts)
    one = rank_terms(*args, resamples=100, seed=5, top_k=1)
    two = rank_terms(*args, resamples=100, seed=5, top_k=1)
    pd.testing.assert_frame_equal(one, two)
    bare = rank_terms(*args, resamples=0, seed=5, top_k=1)
    assert bare["cosine_ci_low"].isna().all() and bare["cosine_ci_high"].isna().all()
    pd.testing.assert_series_equal(bare["cosine"], one["cosine"])


# --- end to end on toyworld ------------------------------------------------------------------


def test_toyworld_discovery_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from auditkit.models import loading
    from auditkit.run import run_audit
    from auditkit.spec import load_run_spec

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(_spec_text())
    run_dir = tmp_path / "run"
    first = run_audit(spec_path, run_dir, show_progress=False, render=False)
    stage = first.manifest["stages"]["discovery"]
    assert stage["model_loaded"] is True and stage["terms"] > 0
    assert stage["units_run"] + stage["units_skipped"] == stage["units_total"]
    assert stage["units_skipped"] >= 8  # "man" and "woman" reuse the axis prompts' units
    terms, ranking = read_discovery(run_dir / "results")
    assert list(terms.columns) == TERM_COLUMNS and list(ranking.columns) == DISCOVERY_COLUMNS
    assert not terms["term"].str.contains("nurse|firefighter|photo").any()
    top = ranking[(ranking["axis"] == "") & ranking["top"]]
    tops = {c: list(g.sort_values("rank")["term"]) for c, g in top.groupby("concept")}
    assert "woman" in tops["nurse"], tops
    assert "man" in tops["firefighter"], tops
    assert "woman" not in tops["firefighter"] and "man" not in tops["nurse"]
    ci = ranking[["cosine_ci_low", "cosine", "cosine_ci_high"]].to_numpy()
    assert (ci[:, 0] <= ci[:, 1] + 1e-9).all() and (ci[:, 1] <= ci[:, 2] + 1e-9).all()
    plain = parse_spec(_spec_text(discovery=""))
    assert first.manifest["plan_hash"] == plan_audit(plain).plan_hash
    ran = parse_spec(_spec_text())  # as recorded: 'auto' storage resolved for toyworld's small h
    stored = {"store_dtype": "float32", "per_step_h": "all"}
    ran = ran.model_copy(update={"probe": ran.probe.model_copy(update=stored)})
    assert load_run_spec(run_dir) == ran

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished run must not load the model")

    monkeypatch.setattr(loading, "load_pipeline", refuse)
    again = run_audit(spec_path, run_dir, show_progress=False, render=False)
    stage = again.manifest["stages"]["discovery"]
    assert stage["units_run"] == 0 and stage["model_loaded"] is False
    pd.testing.assert_frame_equal(read_discovery(run_dir / "results")[1], ranking)

    # a vocabulary left empty by the options gives empty, typed tables and no extraction
    spec_path.write_text(_spec_text("  discovery: {min_count: 100}\n"))
    empty = run_audit(spec_path, run_dir, show_progress=False, render=False)
    assert empty.manifest["stages"]["discovery"]["terms"] == 0
    terms, ranking = read_discovery(run_dir / "results")
    assert terms.empty and ranking.empty and list(ranking.columns) == DISCOVERY_COLUMNS


def test_one_pipeline_load_serves_the_causal_check_and_discovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Extraction and captions already done, the causal check and discovery both need the
    pipeline: the first of them loads it and the second reuses it."""
    from auditkit.models import loading
    from auditkit.run import run_audit

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(_spec_text(discovery=""))
    run_dir = tmp_path / "run"
    run_audit(spec_path, run_dir, show_progress=False, render=False)
    calls: list[str] = []
    real = loading.load_pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append("load")
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "load_pipeline", counted)
    causal = "  causal: {alphas: [-1.0, 1.0], seeds: 2, axes: [gender]}\n"
    spec_path.write_text(_spec_text(causal + DISCOVERY))
    stages = run_audit(spec_path, run_dir, show_progress=False, render=False).manifest["stages"]
    assert stages["extract"]["model_loaded"] is False
    assert stages["causal"]["units_run"] > 0 and stages["discovery"]["units_run"] > 0
    assert calls == ["load"]


def test_discovery_tables_keep_their_template_and_refuse_a_newer_schema(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from auditkit.passes.discovery import DISCOVERY_SCHEMA_VERSION, write_discovery
    from auditkit.rundir import parquet_bytes

    prompt = "a photo of a white hat"
    terms = pd.DataFrame(
        [["white hat", 1, 2, prompt, prompt_id(prompt), 3, "jobs", "nurse", 4, 3]],
        columns=TERM_COLUMNS,
    )
    ranking = pd.DataFrame(
        [["jobs", "nurse", "", "", "white hat", 3, 0.5, 0.4, 0.6, 1, True]],
        columns=DISCOVERY_COLUMNS,
    )
    results = tmp_path / "results"
    write_discovery(results, terms, ranking, "a photo of a {term}")
    meta = pq.read_schema(results / "discovery.parquet").metadata
    assert meta[b"auditkit_discovery_template"] == b"a photo of a {term}"
    assert meta[b"auditkit_schema_version"] == str(DISCOVERY_SCHEMA_VERSION).encode()
    read_terms, read_ranking = read_discovery(results)
    pd.testing.assert_frame_equal(read_terms, terms)
    pd.testing.assert_frame_equal(read_ranking, ranking)
    newer = parquet_bytes(ranking, DISCOVERY_SCHEMA_VERSION + 1)
    (results / "discovery.parquet").write_bytes(newer)
    with pytest.raises(
        SchemaVersionError, match=f"schema_version {DISCOVERY_SCHEMA_VERSION + 1}, newer"
    ):
        read_discovery(results)
