"""The run directory's owner (auditkit.rundir): the table registry against the docs, the
versioned readers (newer refused, older migrated), the manifest model, and file modes."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from auditkit.docgen import DOC, documented, regenerate
from auditkit.errors import SchemaVersionError, UsageError
from auditkit.rundir import REGISTRY, VERSION_KEY, Manifest, RunDir, write_json_atomic
from auditkit.rundir.registry import load_tables

GOLDEN = Path(__file__).resolve().parent / "golden" / "toyworld-0.1.0"


def test_the_docs_show_every_registered_table_as_declared() -> None:
    text = DOC.read_text(encoding="utf-8")
    stale = "docs/run-directory.md is stale: run python -m auditkit.docgen --write"
    assert regenerate(text) == text, stale  # (registers the analysis slices' tables first)
    assert "lean_by_step" in REGISTRY
    assert documented(text) == set(REGISTRY.tables), "a table lacks its block in the docs"
    for table in REGISTRY:
        for column in table.columns:
            assert column.meaning and column.type, (table.name, column.name)


CORE_FILE = """
ci: "interval of `{measure}`"
groups:
  unit:
    - [unit_id, str, "", "the unit"]
tables:
  - {name: t, folder: results, version: results, rows: "one row per unit", columns: [
      {group: unit},
      ["score", float, score, "a score"],
      {ci: score, note: "(a note)"},
      ["a, b", int, "", "two columns", true]]}
"""


def test_table_files_declare_rows_groups_and_intervals() -> None:
    """The YAML table format: rows (several names share one), groups (a file loaded with the
    core file as ``shared`` uses its groups and interval meaning) and interval columns."""
    core = load_tables(CORE_FILE, "core.yaml", {"results": 2})
    [table] = core.tables
    assert table.version == 2 and table.rows == "one row per unit"
    assert [(c.name, c.unit, c.optional) for c in table.columns] == [
        ("unit_id", "", False),
        ("score", "score", False),
        ("score_ci_low", "score", True),
        ("score_ci_high", "score", True),
        ("a", "", True),
        ("b", "", True),
    ]
    assert table.column("score_ci_high").meaning == "interval of `score` (a note)"
    other = load_tables(
        "tables: [{name: u, folder: captions, version: 3, rows: r, more_columns: m, columns: ["
        "{group: unit}, [x, float, cosine, y], {ci: x, optional: false}]}]",
        "slice.yaml",
        {},
        shared=core,
    )
    assert other.tables[0].required == ["unit_id", "x", "x_ci_low", "x_ci_high"]
    assert other.tables[0].more_columns == "m" and other.tables[0].version == 3


@pytest.mark.parametrize(
    ("columns", "error"),
    [
        ("[{group: nope}]", "no column group 'nope'"),
        ("[{ci: score}]", "follows no column 'score'"),
        ("[[x, float, '', yes]]", "must be text"),
        ("[[x, decimal, '', y]]", "is not one of"),
        ("[[x, int, '', y], [x, int, '', z]]", "declared twice"),
    ],
)
def test_table_files_refuse_what_they_cannot_mean(columns: str, error: str) -> None:
    text = f"tables: [{{name: t, folder: results, version: 1, rows: r, columns: {columns}}}]"
    with pytest.raises(ValueError, match=error):
        load_tables(text, "bad.yaml", {})


def test_writers_refuse_columns_the_registry_does_not_declare(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    frame = pd.DataFrame({"concept_set": ["jobs"], "concept_a": ["a"], "concept_b": ["b"]})
    with pytest.raises(ValueError, match=r"required columns missing \['cosine'\]"):
        run.write_table("similarity", frame)
    with pytest.raises(ValueError, match=r"not in the table registry \['extra'\]"):
        run.write_table("similarity", frame.assign(cosine=1.0, extra=2))
    path = run.write_table("similarity", frame.assign(cosine=1.0))
    assert pq.read_schema(path).metadata[VERSION_KEY] == b"2"
    assert run.table("similarity").equals(frame.assign(cosine=1.0))


def test_a_table_from_a_newer_auditkit_is_refused(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    frame = pd.DataFrame({"concept_set": ["jobs"], "concept_a": ["a"], "concept_b": ["b"]})
    path = run.write_table("similarity", frame.assign(cosine=1.0))
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({VERSION_KEY: b"3"}), path)
    with pytest.raises(SchemaVersionError) as caught:
        run.table("similarity")
    message = str(caught.value)
    assert "similarity.parquet has schema_version 3" in message
    assert "reads (up to 2)" in message and "upgrade auditkit" in message


def test_the_golden_run_directory_opens_and_migrates(tmp_path: Path) -> None:
    """A run directory of the format before the registry: unstamped tables read as version 1
    and migrate (its lean table, judged by the labels rule, gains `rule`)."""
    run = RunDir(shutil.copytree(GOLDEN, tmp_path / "run"))
    raw = pd.read_parquet(run.table_path("lean"))
    assert (
        "rule" not in raw.columns
        and VERSION_KEY not in pq.read_schema(run.table_path("lean")).metadata
    )
    lean = run.table("lean")
    assert (lean["rule"] == raw["null_model"]).all()
    assert set(run.tables()) >= {"lean", "axes", "prompts", "outputs", "discovery"}
    manifest = run.read_manifest()
    assert manifest.status == "complete" and manifest.stages["extract"]
    assert manifest.to_json() == json.loads(run.manifest.read_text())  # nothing lost


def test_the_manifest_is_frozen_and_writes_non_finite_numbers_as_null(tmp_path: Path) -> None:
    manifest = Manifest(
        run_id="r", status="running", auditkit_version="0", spec_hash="s", plan_hash="p"
    )
    with pytest.raises(ValueError, match="frozen"):
        manifest.status = "complete"  # type: ignore[misc]
    done = manifest.with_stage("causal", {"axes": [{"rho": float("nan"), "slope": float("inf")}]})
    assert manifest.stages == {} and done.stages["causal"]["axes"] == [{"rho": None, "slope": None}]
    run = RunDir(tmp_path)
    run.write_manifest(done.evolve(status="complete"))
    assert run.read_manifest().status == "complete"
    newer = {**done.to_json(), "schema_version": 2}
    write_json_atomic(run.manifest, newer)
    with pytest.raises(SchemaVersionError, match=r"manifest\.json has schema_version 2"):
        run.read_manifest()
    run.manifest.write_text("[1, 2]")
    with pytest.raises(UsageError, match="must hold a JSON object"):
        run.read_manifest()


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path: Path, mask: int, mode: int) -> None:
    old = os.umask(mask)
    try:
        run = RunDir(tmp_path)
        run.write_json("summary", {"schema_version": 1, "kind": "auditkit.summary"})
        frame = pd.DataFrame({"concept_set": ["s"], "concept_a": ["a"], "concept_b": ["b"]})
        path = run.write_table("similarity", frame.assign(cosine=1.0))
    finally:
        os.umask(old)
    for written in (run.summary, path):
        assert stat.S_IMODE(written.stat().st_mode) == mode, written
