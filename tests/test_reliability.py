"""Nothing lost (issue 16): crashes, corruption, concurrency, resources and provenance.

One small toyworld audit (every stage: extraction, captions, the guidance sweep, the causal
check, the analysis, the report; about 8 s) is run once uninterrupted in this process, the
reference. Then, for each kill point, a fresh ``auditkit run`` subprocess is killed with SIGKILL
halfway through one file write (``AUDITKIT_CRASH_AT``), and the same command, run again here,
must complete with every table equal to the reference's, every planned unit stored once, no
temporary file left and ``auditkit verify`` clean. The long run of the same loop (every point,
each twice) is ``python benchmarks/crash_loop.py`` (RELIABILITY.md).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from forked_cli import Finished, ForkedCli

from auditkit.cli import main

ROOT = Path(__file__).resolve().parents[1]

MINI_SPEC = """\
spec_version: 1
name: crash-mini
model:
  id: builtin:toyworld-biased
  device: cpu
  steps: 2
  guidance_scale: 4.0
  resolution: 32
probe:
  hook: unet.mid_block
  aggregation: mean
seeds: 4
batch_size: 8
axes:
  - name: gender
    templates: ["a photo of a {term}"]
    groups:
      man: [man]
      woman: [woman]
concepts:
  - name: occupations
    templates: ["a photo of a {term}"]
    terms: [nurse, doctor, pilot]
analyses: [lean, defaults, lean_by_step]
captions:
  captioner: {kind: toyworld}
  guidance: [1.0]
  causal: {alphas: [-1.0, 1.0], seeds: 2, axes: [gender]}
report:
  title: crash test
  formats: [html]
gates:
  - name: lean
    metric: max_abs_lean
    axis: gender
    max: 0.3
"""

KILL_POINTS = [
    "plan.json",  # start-up: the plan half written, no unit stored
    "activations/shard-*@2",  # extraction: a shard half written
    "activations/index-parts/*@3",  # extraction: a batch's commit marker half written
    "activations/index.parquet",  # the store's compaction
    "captions/units/*/chunk-*",  # captioning
    "captions/guidance/units/*/chunk-*",  # the guidance sweep
    "captions/causal/units/*/chunk-*",  # the causal check
    "results/lean.parquet",  # the analysis
    "results/summary.json",  # the analysis' last tables
    "report/report.html",  # the report
]
"""Where the crash tests kill a run: a glob of the run-relative path of a file being written,
``@N`` for the N-th such write (RELIABILITY.md lists what each point exercises)."""


def write_spec(folder: Path) -> Path:
    path = folder / "mini.yaml"
    path.write_text(MINI_SPEC)
    return path


def table_bytes(run: Path) -> dict[str, bytes]:
    """The bytes of every table and gate file a run's analysis and passes wrote."""
    out = {}
    for folder in ("results", "captions"):
        for path in sorted((run / folder).glob("*.parquet")):
            out[f"{folder}/{path.name}"] = path.read_bytes()
    out["results/gates.json"] = (run / "results" / "gates.json").read_bytes()
    return out


def run_killed(cli: ForkedCli, spec: Path, out: Path, point: str) -> Finished:
    """``auditkit run`` in a process of its own (forked: tests/forked_cli.py) with a kill point
    set."""
    args = ["run", str(spec), "--out", str(out), "--no-progress"]
    return cli.run(args, env={"AUDITKIT_CRASH_AT": point})


def check_resumed(run: Path, reference: Path) -> None:
    """A resumed run equals the reference: tables, units (each once), no temporaries, and
    ``auditkit verify`` is clean."""
    from auditkit.extract.store import ActivationStore
    from auditkit.rundir import storage
    from auditkit.verify import verify_run

    assert table_bytes(run) == table_bytes(reference)
    index = ActivationStore(run / "activations").index()
    planned = {u["unit_id"] for u in json.loads((run / "plan.json").read_text())["units"]}
    assert set(index["unit_id"]) == planned
    assert not index["unit_id"].duplicated().any()
    assert not (run / "activations" / "index-parts").exists()  # merged
    assert storage.temporaries(run) == []
    assert not (run / ".lock").exists()
    found = verify_run(run)
    assert found.ok, [p.line() for p in found.problems]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert (run / "report" / "report.html").stat().st_size > 10_000


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The mini audit run once, uninterrupted, in this process: (spec, run directory)."""
    from auditkit.run import run_audit

    folder = tmp_path_factory.mktemp("reliability")
    spec = write_spec(folder)
    out = folder / "reference"
    run_audit(spec, out, show_progress=False)
    yield spec, out


def test_a_run_killed_at_any_of_ten_points_resumes_to_the_uninterrupted_result(
    reference: tuple[Path, Path], forked_cli: ForkedCli, tmp_path: Path
) -> None:
    from auditkit.run import run_audit
    from auditkit.rundir.storage import temporaries

    spec, ref = reference
    assert len(KILL_POINTS) >= 10
    for n, point in enumerate(KILL_POINTS):
        out = tmp_path / f"kill-{n}"
        killed = run_killed(forked_cli, spec, out, point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "running", point  # killed: never sealed
        assert "seal" not in manifest
        left = temporaries(out)
        assert left, point  # the kill left the half-written file behind, as a crash does
        run_audit(spec, out, show_progress=False)
        check_resumed(out, ref)


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_lives(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    spec, ref = reference
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from auditkit.rundir.lock import RunLock; "
            "RunLock(sys.argv[1], 'run').acquire(); print('held', flush=True); time.sleep(120)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
        result = CliRunner().invoke(main, ["run", str(spec), "--out", str(out), "--no-progress"])
        assert result.exit_code == 2, result.output
        assert f"in use by pid {holder.pid}" in result.output
        assert "nothing was written" in result.output
        after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
        assert after == before
        for command in (["report", str(out)], ["export", "model-card", str(out)]):
            assert CliRunner().invoke(main, command).exit_code == 2
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock is stale and the next run takes it over
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(out), "--no-progress"])
    assert result.exit_code == 1, result.output  # the mini audit's gate fails by design
    assert not (out / ".lock").exists()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path: Path) -> None:
    from auditkit.rundir.lock import RunLock, RunLocked

    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "run"}))
    with pytest.raises(RunLocked, match="elsewhere") as caught:
        RunLock(tmp_path, "run").acquire()
    assert "delete" in str(caught.value)


def test_out_never_touches_a_folder_auditkit_did_not_create(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    spec, _ = reference
    foreign = tmp_path / "foreign"
    (foreign / "results").mkdir(parents=True)
    (foreign / "captions").mkdir()
    files = {
        foreign / "results" / "lean.parquet": b"theirs",
        foreign / "results" / "junit.xml": b"<theirs/>",
        foreign / "captions" / "causal.parquet": b"theirs too",
    }
    for path, data in files.items():
        path.write_bytes(data)
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(foreign)])
    assert result.exit_code == 2
    assert "did not create" in result.output
    assert all(path.read_bytes() == data for path, data in files.items())
    assert sorted(p.name for p in foreign.iterdir()) == ["captions", "results"]
    empty = CliRunner().invoke(main, ["run", str(spec), "--out", ""])
    assert empty.exit_code == 2 and "is empty" in empty.output


def test_an_altered_shard_is_named_by_verify_and_extracted_again(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    spec, ref = reference
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    shard = sorted((out / "activations").glob("shard-*.safetensors"))[1]
    data = bytearray(shard.read_bytes())
    for i in range(64):  # 64 data bytes flipped, far from the header
        data[-4096 + i] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code == 3
    assert f"BAD  {shard.as_posix()}" in result.output
    # reading it is refused, naming it
    from auditkit.extract.store import ActivationStore
    from auditkit.rundir.integrity import CorruptFile

    store = ActivationStore(out / "activations")
    with pytest.raises(CorruptFile, match=shard.name):
        list(store.iter_units(store.completed()))
    # the next run sets it aside and extracts its units again
    rerun = CliRunner().invoke(main, ["run", str(spec), "--out", str(out), "--no-progress"])
    assert rerun.exit_code == 1, rerun.output
    assert "extracted 8 units, reused 40" in rerun.output
    assert shard.with_name(shard.name + ".corrupt").is_file()
    check_resumed(out, ref)


def test_a_truncated_shard_a_deleted_shard_and_a_broken_index_heal(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    spec, ref = reference
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    shards = sorted((out / "activations").glob("shard-*.safetensors"))
    shards[0].write_bytes(shards[0].read_bytes()[:1000])
    shards[2].unlink()
    verify = CliRunner().invoke(main, ["verify", str(out)])
    assert verify.exit_code == 3
    assert shards[0].name in verify.output and shards[2].name in verify.output
    rerun = CliRunner().invoke(main, ["run", str(spec), "--out", str(out), "--no-progress"])
    assert rerun.exit_code == 1, rerun.output
    assert "extracted 16 units" in rerun.output
    check_resumed(out, ref)
    # a corrupt index: named, set aside, and every unit extracted again (same tables)
    (out / "activations" / "index.parquet").write_bytes(b"PAR1 not a parquet file")
    verify = CliRunner().invoke(main, ["verify", str(out)])
    assert verify.exit_code == 3 and "index.parquet" in verify.output
    rerun = CliRunner().invoke(main, ["run", str(spec), "--out", str(out), "--no-progress"])
    assert rerun.exit_code == 1, rerun.output
    assert "index.parquet" in rerun.output and "extracted 48 units" in rerun.output
    check_resumed(out, ref)


def test_an_edited_manifest_or_spec_is_refused_by_every_reader(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    _, ref = reference
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["model"]["id"] = "<b>someone-else/model</b>"
    (out / "manifest.json").write_text(json.dumps(manifest))
    for command in (["report", str(out)], ["check", str(out)], ["export", "model-card", str(out)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 3, (command, result.output)
        assert "manifest.json is corrupt" in result.output
        assert "someone-else" not in (out / "report" / "report.html").read_text()
    shutil.rmtree(out)
    shutil.copytree(ref, out)
    spec = out / "spec.yaml"
    spec.write_text(spec.read_text().replace("max: 0.3", "max: 5.0"))
    result = CliRunner().invoke(main, ["check", str(out)])
    assert result.exit_code == 3 and "spec.yaml is corrupt" in result.output


def test_check_refuses_the_stale_results_of_a_failed_run(
    reference: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _spec, ref = reference
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    # a rerun whose analysis fails (a full disk) leaves the earlier results in place
    from auditkit.rundir import storage

    real = storage.write_bytes_atomic

    def full_disk(path: Path, data: bytes, **kwargs: object) -> None:
        if path.parent.name == "results":
            raise storage.write_error(path, OSError(errno.ENOSPC, "No space left on device"))
        real(path, data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(storage, "write_bytes_atomic", full_disk)
    monkeypatch.setattr("auditkit.rundir.folder.storage.write_bytes_atomic", full_disk)
    changed = write_spec(tmp_path)
    changed.write_text(MINI_SPEC.replace("max: 0.3", "max: 5.0").replace("seeds: 4", "seeds: 3"))
    result = CliRunner().invoke(main, ["run", str(changed), "--out", str(out), "--no-progress"])
    monkeypatch.undo()
    assert result.exit_code == 3, result.output
    assert "No space left on device" in result.output and "could not write" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["failed_stage"] == "analyze"
    check = CliRunner().invoke(main, ["check", str(out)])
    assert check.exit_code == 2 and "not a complete run" in check.output


def test_check_evaluates_a_read_only_archived_run(
    reference: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ref = reference
    out = tmp_path / "archived"
    shutil.copytree(ref, out)
    from auditkit.rundir import storage

    def refuse(path: Path, *args: object, **kwargs: object) -> None:
        raise AssertionError(f"check wrote {path} in a read-only archive")

    for target in ("auditkit.rundir.storage", "auditkit.rundir.folder.storage"):
        monkeypatch.setattr(f"{target}.write_bytes_atomic", refuse)
    for path in [out, *out.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        result = CliRunner().invoke(main, ["check", str(out)])
    finally:
        for path in [out, *out.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert result.exit_code == 1, result.output  # the mini audit's gate fails by design
    assert "FAIL  lean" in result.output
    assert storage.temporaries(out) == []


def test_changed_weights_are_never_mixed_with_stored_units(
    forked_cli: ForkedCli, tmp_path: Path
) -> None:
    from auditkit.models.builtin import shipped_folder

    model = tmp_path / "model"
    shutil.copytree(shipped_folder("toyworld-biased"), model)
    spec = tmp_path / "local.yaml"
    spec.write_text(
        MINI_SPEC.replace("builtin:toyworld-biased", "./model").split("captions:")[0]
        + "report: {formats: [html]}\n"
    )
    out = tmp_path / "run"
    killed = run_killed(forked_cli, spec, out, "activations/index-parts/*@3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    weights = sorted(model.rglob("*.safetensors"))[0]
    data = bytearray(weights.read_bytes())
    data[-8] ^= 0x01
    weights.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(out), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "another model" in result.output and weights.name in result.output
    assert "nothing was extracted" in result.output
    # the original weights back: the units are reused and the run completes
    data[-8] ^= 0x01
    weights.write_bytes(bytes(data))
    again = CliRunner().invoke(main, ["run", str(spec), "--out", str(out), "--no-progress"])
    assert again.exit_code in (0, 1), again.output
    assert "reused 16" in again.output
    # units stored by a run whose 'dtype: auto' meant float16 (a GPU) are not reused on a CPU
    record = out / "activations" / "model.json"
    stored = json.loads(record.read_text())
    record.write_text(json.dumps({**stored, "device": "cuda", "dtype": "float16"}))
    mixed = CliRunner().invoke(main, ["run", str(spec), "--out", str(out), "--no-progress"])
    assert mixed.exit_code == 2, mixed.output
    assert "the effective dtype was float16, now float32" in mixed.output
    assert "the device type was cuda, now cpu" in mixed.output


def test_a_write_error_names_the_file_and_seals_nothing(
    reference: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _ = reference
    out = tmp_path / "run"
    import auditkit.rundir.storage as storage

    real_replace = os.replace

    def read_only(src: str, dst: str) -> None:
        if str(dst).endswith("report.html"):
            raise OSError(errno.EROFS, "Read-only file system")
        real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", read_only)
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(out), "--no-progress"])
    monkeypatch.undo()
    assert result.exit_code == 3, result.output
    assert "report.html" in result.output and "Read-only file system" in result.output
    assert "unexpected" not in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["failed_stage"] == "report"
    assert storage.temporaries(out) == []
    # 'auditkit report' finishes the run that failed only in rendering
    again = CliRunner().invoke(main, ["report", str(out)])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert CliRunner().invoke(main, ["verify", str(out)]).exit_code == 0


def test_weights_load_only_from_safetensors_unless_pickle_is_allowed(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path
) -> None:
    import diffusers

    from auditkit.errors import ModelLoadError
    from auditkit.models.loading import load_pipeline
    from auditkit.spec.sampling import ModelSpec

    pickled = tmp_path / "pickled"
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(tiny_pipeline_dirs["sd"]))
    pipe.save_pretrained(str(pickled), safe_serialization=False)
    unet = pickled / "unet"  # (transformers saves its text encoder as safetensors regardless)
    assert not list(unet.glob("*.safetensors")) and list(unet.glob("*.bin"))
    model = ModelSpec(id=str(pickled), device="cpu", resolution=32)
    with pytest.raises(ModelLoadError, match="safetensors") as refused:
        load_pipeline(model, cache_dir=tmp_path)
    assert "allow_pickle" in str(refused.value)
    opted = ModelSpec(id=str(pickled), device="cpu", resolution=32, allow_pickle=True)
    with pytest.warns(UserWarning, match="unpickling a file can run any code"):
        loaded = load_pipeline(opted, cache_dir=tmp_path)
    assert loaded.pipeline_class == type(pipe).__name__
    assert ModelSpec(id="x").trust_remote_code is False


def test_the_audit_runs_with_sockets_blocked_and_the_hub_offline(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    """The mini audit in a subprocess where every internet socket raises and the hub is
    offline (HF_HUB_OFFLINE=1): the same tables as the reference."""
    spec, ref = reference
    out = tmp_path / "offline"
    guard = (
        "import socket, runpy, sys\n"
        "real = socket.socket\n"
        "class Blocked(real):\n"
        "    def __init__(self, family=socket.AF_INET, *args, **kwargs):\n"
        "        if family != socket.AF_UNIX:\n"
        "            raise OSError('network blocked by the test')\n"
        "        super().__init__(family, *args, **kwargs)\n"
        "socket.socket = Blocked\n"
        "socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError('blocked'))\n"
        "sys.argv = ['auditkit', 'run', sys.argv[1], '--out', sys.argv[2], '--no-progress']\n"
        "runpy.run_module('auditkit', run_name='__main__')\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", guard, str(spec), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]  # the mini audit's gate fails by design
    assert "network blocked" not in done.stderr
    check_resumed(out, ref)


def test_a_plan_over_a_storage_or_time_limit_is_refused_unless_forced(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    _, ref = reference
    for setting, words in (
        ("max_storage_gb: 0.0001", "activation store would grow by"),
        ("max_hours: 0.000001", "extraction is estimated at"),
    ):
        spec = tmp_path / "limited.yaml"
        spec.write_text(
            MINI_SPEC.replace("batch_size: 8", f"batch_size: 8\nexecution: {{{setting}}}")
        )
        out = tmp_path / f"run-{setting.split(':')[0]}"
        refused = CliRunner().invoke(main, ["run", str(spec), "--out", str(out)])
        assert refused.exit_code == 2, refused.output
        assert words in refused.output and "--force" in refused.output
        assert not (out / "activations" / "index.parquet").exists()
    forced = CliRunner().invoke(
        main, ["run", str(spec), "--out", str(out), "--force", "--no-progress"]
    )
    assert forced.exit_code == 1, forced.output
    check_resumed(out, ref)


HOSTILE_TERMS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</script><svg onload=alert(1)>",
    "{{ 7*7 }} {% raw %}",
    "javascript:alert(1)",
    "nurse\u202e\u0301\u0301 👩🏽‍⚕️",
]


@pytest.mark.browser
def test_a_real_run_with_hostile_prompts_runs_no_script_in_its_report(tmp_path: Path) -> None:
    """The mini audit with hostile concept terms and title, through every stage (the toyworld
    model reads them as prompts, the captioner's exemplars carry them): the report shows them as
    text and runs none of them in Chromium; the tables keep them exactly."""
    import pandas as pd
    import yaml
    from browser import open_report

    from auditkit.run import run_audit

    spec = yaml.safe_load(MINI_SPEC)
    spec["concepts"][0]["terms"] = HOSTILE_TERMS
    spec["report"]["title"] = "<script>alert('title')</script> {{ 7*7 }}"
    spec["report"]["owner"] = '"><img src=x onerror=alert(2)>'
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    out = tmp_path / "run"
    run_audit(path, out, show_progress=False)
    lean = pd.read_parquet(out / "results" / "lean.parquet")
    assert set(HOSTILE_TERMS) <= set(lean["concept"])
    with open_report(out / "report" / "report.html") as visit:
        assert visit.calls() == [] and visit.dialogs == []
        elements = visit.page.evaluate(
            "() => document.querySelectorAll("
            '\'img[src="x"], iframe, svg[onload], [onerror], a[href^="javascript"]\').length'
        )
        text = visit.page.evaluate("() => document.body.innerText")
        title = visit.page.title()
    assert elements == 0
    assert "{{ 7*7 }}" in title and "<script>alert('title')</script>" in title
    for term in HOSTILE_TERMS[:5]:
        assert term in text, term
    assert visit.problems == []
