"""Tracking integrations: the default audit logged to a real local MLflow store and to a W&B
offline run, and read back from each (sockets stay blocked: MLflow's local stores are files and
SQLite, W&B's service listens on a unix socket)."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from auditkit.cli import main
from auditkit.tracking import key_part, seed_ranges


@pytest.fixture(scope="module")
def biased(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the default audit's run, without its activation store (an export reads none),
    with its HTML report rendered (the session's run has none) and sealed again as 'auditkit
    report' leaves it."""
    run = tmp_path_factory.mktemp("tracking") / "biased"
    shutil.copytree(runs["biased"], run, ignore=shutil.ignore_patterns("activations"))
    result = CliRunner().invoke(main, ["report", str(run), "--format", "html"])
    assert result.exit_code == 0, result.output
    return run


def _summary(run: Path) -> dict[str, Any]:
    return json.loads((run / "results" / "summary.json").read_text())


def _manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text())


def _export(*args: str) -> str:
    result = CliRunner().invoke(main, ["export", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _expected_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers a tracker must hold, as summary.json states them."""
    expected = {f"gate/{key_part(g['name'])}": g["value"] for g in summary["gates"]["gates"]}
    for axis in summary["axes"]:
        if "max_abs_score" in axis:
            expected[f"lean/{axis['axis']}/max_abs_score"] = axis["max_abs_score"]
            expected[f"lean/{axis['axis']}/significant"] = axis["significance"]["significant"]
    for row in summary["outputs"]["largest_gap"]:
        key = f"output_gap/{row['attribute']}"
        expected[key] = max(expected.get(key, 0.0), row["gap"])
    return expected


# --- MLflow ---------------------------------------------------------------------------------


def _mlflow_run(uri: str, output: str) -> Any:
    from mlflow.tracking import MlflowClient

    run_id = re.search(r"mlflow: run ([0-9a-f]{32})", output)
    assert run_id is not None, output
    return MlflowClient(tracking_uri=uri).get_run(run_id.group(1))


def _artifact_files(client: Any, run_id: str, path: str | None = None) -> Iterator[str]:
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            yield from _artifact_files(client, run_id, item.path)
        else:
            yield item.path


def test_mlflow_file_store_holds_the_runs_numbers_params_tags_and_files(
    biased: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    output = _export("mlflow", str(biased), "--tracking-uri", uri, "--experiment", "ckpts")
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # opted in for the export only
    assert f"tracking URI: {uri}" in output and "gates: fail" in output

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run = _mlflow_run(uri, output)
    summary, manifest = _summary(biased), _manifest(biased)
    assert run.info.status == "FINISHED"
    client = MlflowClient(tracking_uri=uri)
    assert client.get_experiment(run.info.experiment_id).name == "ckpts"

    metrics = run.data.metrics
    for key, value in _expected_metrics(summary).items():
        assert metrics[key] == value, key
    lean = pd.read_parquet(biased / "results" / "lean.parquet")
    for axis, rows in lean.groupby("axis"):  # the summary's numbers are the tables'
        assert metrics[f"lean/{axis}/max_abs_score"] == pytest.approx(
            rows["score"].abs().max(), abs=1e-6
        )
        assert metrics[f"lean/{axis}/significant"] == rows["significant"].sum()
    assert metrics["gates/failed"] == summary["gates"]["failed"] == 3

    params = run.data.params
    assert params["audit"] == summary["audit"] == "toyworld"
    assert params["spec_hash"] == summary["spec_hash"]
    assert params["plan_hash"] == summary["plan_hash"]
    assert params["model_id"] == "builtin:toyworld-biased"
    assert params["seeds"] == seed_ranges(manifest["seeds"]) == "0-31"
    assert params["auditkit_version"] == manifest["auditkit_version"]
    assert params["rule"] == summary["settings"]["rule"]

    tags = run.data.tags
    assert tags["auditkit.status"] == "fail"
    for gate in summary["gates"]["gates"]:
        assert tags[f"auditkit.gate.{key_part(gate['name'])}"] == "fail"
    assert tags["mlflow.runName"] == f"toyworld-{summary['run_id']}"
    assert summary["findings"][0].split("'")[1] in tags["mlflow.note.content"]

    files = set(_artifact_files(client, run.info.run_id))
    assert files == {"manifest.json", "spec.yaml", "results/summary.json", "report/report.html"}
    copy = client.download_artifacts(run.info.run_id, "report/report.html", str(tmp_path))
    assert Path(copy).read_bytes() == (biased / "report" / "report.html").read_bytes()
    started = pd.Timestamp(manifest["started_utc"]).value // 10**6
    assert run.info.start_time == started  # the tracker's run spans the audit's own run


def test_mlflow_tracking_uri_option_wins_over_the_environment(
    biased: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    env_uri, option_uri = (tmp_path / "env").as_uri(), (tmp_path / "option").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env_uri)
    output = _export("mlflow", str(biased), "--tracking-uri", option_uri, "--run-name", "ckpt-1")
    assert _mlflow_run(option_uri, output).info.run_name == "ckpt-1"
    assert not (tmp_path / "env").exists()

    output = _export("mlflow", str(biased))
    assert f"tracking URI: {env_uri}" in output
    assert _mlflow_run(env_uri, output).data.tags["auditkit.audit"] == "toyworld"
    assert MlflowClient(tracking_uri=env_uri).get_experiment_by_name("toyworld") is not None


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
def test_mlflow_default_store_is_mlflows_own_and_a_passing_run_is_tagged_pass(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No option, no MLFLOW_TRACKING_URI: MLflow's default local store (SQLite in the working
    directory, which the extra's SQLAlchemy opens). The balanced run, its report not rendered,
    passes every gate; its files without a report are logged all the same."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    output = _export("mlflow", str(runs["balanced"]))
    uri = (tmp_path / "mlflow.db").as_posix()
    assert f"tracking URI: sqlite:///{uri}" in output
    run = _mlflow_run(f"sqlite:///{uri}", output)
    summary = _summary(runs["balanced"])
    assert run.data.tags["auditkit.status"] == "pass" and summary["gates"]["passed"]
    assert {v for k, v in run.data.tags.items() if k.startswith("auditkit.gate.")} == {"pass"}
    for key, value in _expected_metrics(summary).items():
        assert run.data.metrics[key] == value, key
    client = MlflowClient(tracking_uri=f"sqlite:///{uri}")
    files = set(_artifact_files(client, run.info.run_id))
    assert files == {"manifest.json", "spec.yaml", "results/summary.json"}


# --- W&B --------------------------------------------------------------------------------------


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a W&B transaction log (``run-<id>.wandb``): a 7-byte header (``:W&B``,
    magic, version), then LevelDB log blocks of 32 KiB whose chunks (CRC32C, length, type:
    1 whole, 2 first, 3 middle, 4 last) carry one serialized ``Record`` protobuf each."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:  # zero padding up to the next block
            position += left
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _wandb_run(folder: Path) -> dict[str, Any]:
    """Config, summary, tags, saved files and artifact contents of the one offline run."""
    (log,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    out: dict[str, Any] = {"config": {}, "summary": {}, "files": [], "artifacts": {}}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["tags"] = list(record.run.tags)
            out["project"] = record.run.project
            out["notes"] = record.run.notes
            out["config"].update(
                {i.key: json.loads(i.value_json) for i in record.run.config.update}
            )
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                out["summary"][key] = json.loads(item.value_json)
        elif kind == "files":
            out["files"] += [f.path for f in record.files.files]
        elif kind == "artifact":
            contents = [c.path for c in record.artifact.manifest.contents]
            out["artifacts"][record.artifact.name] = (record.artifact.type, contents)
    out["folder"] = log.parent
    return out


def test_wandb_offline_run_folder_holds_the_numbers_config_and_report(
    biased: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))  # nothing under the home folder
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    output = _export("wandb", str(biased), "--dir", str(tmp_path / "wb"))
    logged = _wandb_run(tmp_path / "wb")
    assert f"upload it with: wandb sync {logged['folder']}" in output

    summary, manifest = _summary(biased), _manifest(biased)
    assert logged["project"] == "toyworld"
    for key, value in _expected_metrics(summary).items():
        assert logged["summary"][key] == value, key
    assert logged["summary"]["status"] == "fail"
    gates = {key_part(g["name"]): g for g in summary["gates"]["gates"]}
    assert {k: logged["summary"][f"gate_outcome/{k}"] for k in gates} == dict.fromkeys(
        gates, "fail"
    )
    assert logged["tags"] == ["auditkit", "gates-fail"]
    assert logged["config"]["spec_hash"] == summary["spec_hash"]
    assert logged["config"]["seeds"] == seed_ranges(manifest["seeds"])
    assert logged["config"]["auditkit_version"] == manifest["auditkit_version"]
    assert "nurse" in logged["notes"]

    assert logged["files"] == ["report/report.html"]
    saved = logged["folder"] / "files" / "report" / "report.html"
    assert not saved.is_symlink()  # a copy: the folder holds the report itself
    assert saved.read_bytes() == (biased / "report" / "report.html").read_bytes()
    kind, contents = logged["artifacts"]["toyworld"]
    assert kind == "auditkit-audit"
    assert sorted(contents) == [
        "manifest.json",
        "report/report.html",
        "results/summary.json",
        "spec.yaml",
    ]


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tracker", "package"), [("mlflow", "mlflow"), ("wandb", "wandb")])
def test_a_missing_extra_is_a_prerequisite_error_with_the_install_command(
    biased: Path, monkeypatch: pytest.MonkeyPatch, tracker: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    result = CliRunner().invoke(main, ["export", tracker, str(biased)])
    assert result.exit_code == 3, result.output
    assert f"pip install 'auditkit[{tracker}]'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_folder_that_is_not_a_finished_run_is_refused_before_any_tracker_is_touched(
    tmp_path: Path, tracker: str
) -> None:
    from report_fixtures import build_run_dir

    result = CliRunner().invoke(main, ["export", tracker, str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "not a finished auditkit run" in result.output

    failed = build_run_dir(tmp_path / "failed", status="failed")
    result = CliRunner().invoke(main, ["export", tracker, str(failed)])
    assert result.exit_code == 2, result.output
    assert "is not a complete run (status 'failed'" in result.output
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "wandb").exists()


def test_an_altered_file_of_the_run_is_refused_by_name(biased: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(biased, run, ignore=shutil.ignore_patterns("activations"))
    (run / "spec.yaml").write_text((run / "spec.yaml").read_text() + "# edited\n")
    result = CliRunner().invoke(main, ["export", "mlflow", str(run), "--tracking-uri", "x:/"])
    assert result.exit_code == 3, result.output
    assert "spec.yaml" in result.output and "checksum" in result.output


# --- keys -----------------------------------------------------------------------------------


def test_keys_hold_only_characters_every_tracker_takes() -> None:
    assert key_part("gender lean within 0.5 of the midpoint") == (
        "gender_lean_within_0_5_of_the_midpoint"
    )
    assert key_part("max_abs_lean[gender] <= 0.5") == "max_abs_lean_gender_0_5"
    assert key_part("../..") == "unnamed" and key_part("a/b.c") == "a_b_c"
    assert seed_ranges([0, 1, 2, 3, 7, 9, 10]) == "0-3,7,9-10"


def test_hostile_gate_names_and_model_id_become_distinct_keys_mlflow_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gate names made of markup, template syntax, control characters, emoji and 10,000
    characters: each gate keeps a key of its own (two that differ only in punctuation are
    numbered), and MLflow takes every key and value."""
    from report_fixtures import HOSTILE_MODEL_ID, build_run_dir

    from auditkit.tracking import tracking_record

    run = build_run_dir(tmp_path, hostile="all")
    record = tracking_record(run)
    names = [g["name"] for g in _summary(run)["gates"]["gates"]]
    assert len(set(record.gate_keys.values())) == len(names) == len(record.gate_outcomes)
    assert record.gate_keys["{{ 7*7 }}"] == "7_7" and record.gate_keys["${7*7}"] == "7_7_2"
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,110}", key) for key in record.gate_keys.values())

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    logged = _mlflow_run(uri, _export("mlflow", str(run), "--tracking-uri", uri))
    clipped = HOSTILE_MODEL_ID[:499] + "…"  # values are cut at 500 characters
    assert logged.data.tags["auditkit.model"] == logged.data.params["model_id"] == clipped
    gate_tags = [k for k in logged.data.tags if k.startswith("auditkit.gate.")]
    assert len(gate_tags) == len(names)
