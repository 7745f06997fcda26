"""Run directories on object storage: the small default audit (conftest's ``small_run``)
with ``--out s3://…`` on a real S3-compatible server (moto's, on loopback), started by the test,
and the working copy's rules on fsspec's in-memory filesystem.

The test process may not open sockets (pytest-socket), so everything that talks to the server
runs in a child process: the ``auditkit`` CLI, and small boto3 snippets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from forked_cli import Finished, ForkedCli
from run_checks import assert_same_results, free_port

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "audits"


def _boto(env: dict[str, str], code: str) -> object:
    """Run ``code`` (with ``s3``, a boto3 client, in scope; it sets ``out``) in a child process
    and return ``out``."""
    head = "import boto3, json\ns3 = boto3.client('s3')\nout = None\n"
    script = f"{head}{code}\nprint(json.dumps(out))"
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 with one bucket; yields the environment that reaches it
    (credentials and endpoint from the usual AWS variables, as a user's would)."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "auditkit-test",
        "AWS_SECRET_ACCESS_KEY": "auditkit-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    try:
        deadline = time.monotonic() + 60
        while True:
            probe = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"import boto3; boto3.client('s3').create_bucket(Bucket={BUCKET!r})",
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            if probe.returncode == 0:
                break
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("moto's S3 server did not start:\n" + log.read_text() + probe.stderr)
            time.sleep(0.5)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def _auditkit(cli: ForkedCli, env: dict[str, str], cache: Path, *args: str) -> Finished:
    """``auditkit ARGS`` in a process of its own (forked: tests/forked_cli.py) whose environment
    reaches the S3 server."""
    return cli.run(list(args), env={**env, "AUDITKIT_RUN_CACHE": str(cache)}, timeout=1500)


def test_the_default_audit_with_its_run_directory_on_s3_equals_the_local_run(
    s3: dict[str, str], small_run: dict[str, Path], forked_cli: ForkedCli, tmp_path: Path
) -> None:
    """The small default audit (every stage, pass and gate; conftest's ``small_run``) with
    its run directory on S3 equals the same audit run locally, byte for byte."""
    url = f"s3://{BUCKET}/runs/toyworld"
    spec = str(small_run["spec"])
    first = _auditkit(
        forked_cli, s3, tmp_path / "machine-a", "run", spec, "--out", url, "--no-progress"
    )
    said = first.stdout + first.stderr
    assert first.returncode == 1, said  # toyworld-biased fails the default gates, as locally
    assert f"report: {url}/report/report.html" in said, said
    assert f"junit: {url}/results/junit.xml" in said, said

    keys = _boto(
        s3,
        f"pages = s3.get_paginator('list_objects_v2').paginate(Bucket='{BUCKET}', "
        "Prefix='runs/toyworld/')\n"
        "out = sorted(o['Key'][len('runs/toyworld/'):] for p in pages "
        "for o in p.get('Contents', []))",
    )
    assert isinstance(keys, list)
    assert {"spec.yaml", "plan.json", "manifest.json", "activations/index.parquet"} <= set(keys)
    assert {"results/lean.parquet", "results/summary.json", "report/report.html"} <= set(keys)
    # write-then-publish: no temporary object, and the index parts were merged and removed
    assert not [k for k in keys if k.endswith(".tmp") or "/." in k or "index-parts/" in k], keys
    plan = json.loads((small_run["run"] / "plan.json").read_text())
    shards = [k for k in keys if k.endswith(".safetensors")]
    assert shards and len(shards) <= len(plan["units"])

    # a second machine (an empty working copy) reads the run from S3 alone
    other = tmp_path / "machine-b"
    report = _auditkit(forked_cli, s3, other, "report", url, "--format", "html")
    assert report.returncode == 0, report.stderr
    assert f"report: {url}/report/report.html" in report.stdout
    copy = next(other.iterdir())
    assert not list(copy.glob("activations/*.safetensors"))  # shards are fetched only when read
    local = small_run["run"]
    assert assert_same_results(copy, local) >= 18

    check = _auditkit(forked_cli, s3, other, "check", url)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "FAIL" in check.stdout and f"junit: {url}/results/junit.xml" in check.stdout

    diff = _auditkit(forked_cli, s3, other, "diff", url, str(local), "--out", f"s3://{BUCKET}/diffs/d1",
                     "--format", "html")  # fmt: skip
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert "0 regressions" in diff.stdout, diff.stdout
    assert f"wrote: s3://{BUCKET}/diffs/d1/diff.html" in diff.stdout
    written = _boto(
        s3, f"out = s3.head_object(Bucket='{BUCKET}', Key='diffs/d1/diff.json')['ContentLength']"
    )
    assert isinstance(written, int) and written > 0

    # a driver restarted on the second machine resumes from S3: nothing is extracted again
    again = _auditkit(forked_cli, s3, other, "run", spec, "--out", url, "--no-progress")
    assert again.returncode == 1, again.stdout + again.stderr
    assert f"extracted 0 units, reused {len(plan['units'])}" in again.stdout, again.stdout


def test_a_commit_marker_on_s3_is_created_once(s3: dict[str, str], tmp_path: Path) -> None:
    # S3 itself refuses the second create-if-absent PUT of one key (moto enforces IfNoneMatch)
    refused = _boto(
        s3,
        f"s3.put_object(Bucket='{BUCKET}', Key='marker', Body=b'1', IfNoneMatch='*')\n"
        "try:\n"
        f"    s3.put_object(Bucket='{BUCKET}', Key='marker', Body=b'2', IfNoneMatch='*')\n"
        "    out = 'written twice'\n"
        "except s3.exceptions.ClientError as exc:\n"
        "    out = exc.response['Error']['Code']",
    )
    assert refused == "PreconditionFailed"
    # and auditkit's commit of an index part goes through it: a second writer is refused
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from auditkit.errors import UsageError\n"
        "from auditkit.rundir import storage\n"
        "from auditkit.rundir.remote import attach\n"
        f"root = attach('s3://{BUCKET}/runs/commit')\n"
        "part = root / 'activations' / 'index-parts' / 'shard-a.parquet'\n"
        "storage.write_bytes_atomic(part, b'first', create_only=True)\n"
        "storage.write_bytes_atomic(root / 'manifest.json', b'{}')\n"
        "storage.write_bytes_atomic(root / 'manifest.json', b'{ }')  # overwrites are fine\n"
        "try:\n"
        "    storage.write_bytes_atomic(part, b'second', create_only=True)\n"
        "except UsageError as exc:\n"
        "    print('REFUSED', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**s3, "AUDITKIT_RUN_CACHE": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "REFUSED" in done.stdout and "already committed by another writer" in done.stdout
    body = _boto(
        s3,
        f"out = s3.get_object(Bucket='{BUCKET}', "
        "Key='runs/commit/activations/index-parts/shard-a.parquet')['Body'].read().decode()",
    )
    assert body == "first"


def test_a_bad_store_is_a_located_error(
    s3: dict[str, str], forked_cli: ForkedCli, tmp_path: Path
) -> None:
    spec = str(ROOT / "audits" / "tiny-demo.yaml")
    missing = _auditkit(forked_cli, s3, tmp_path, "run", spec, "--out", "s3://no-such-bucket/a")
    assert missing.returncode == 2
    # the manifest is a run's first file (so a folder killed at start-up is known as a run)
    assert "s3://no-such-bucket/a: could not write manifest.json" in missing.stderr, missing.stderr
    assert "AWS_ENDPOINT_URL" in missing.stderr  # the hint names where credentials come from
    away = {**s3, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    gone = _auditkit(forked_cli, away, tmp_path, "report", f"s3://{BUCKET}/runs/toyworld")
    assert gone.returncode == 2 and "could not list" in gone.stderr, gone.stderr
    unknown = _auditkit(forked_cli, s3, tmp_path, "report", "nosuchfs://bucket/run")
    assert unknown.returncode == 2 and "no filesystem for nosuchfs://" in unknown.stderr


# --- the working copy's rules, on fsspec's in-memory filesystem (no server) ------------------


@pytest.fixture()
def memory_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    fsspec = pytest.importorskip("fsspec")
    from auditkit.rundir import remote

    monkeypatch.setenv("AUDITKIT_RUN_CACHE", str(tmp_path / "cache"))
    url = f"memory://auditkit-tests/{tmp_path.name}/run"
    yield url, tmp_path
    remote.detach_all()
    fsspec.filesystem("memory").rm(url.split("://", 1)[1], recursive=True)


def test_a_working_copy_follows_its_url(memory_run: tuple[str, Path]) -> None:
    import fsspec

    from auditkit.extract.store import ActivationStore
    from auditkit.rundir import RunDir, storage
    from auditkit.rundir.remote import attach, display, mirror_of, with_urls

    url, _ = memory_run
    fs = fsspec.filesystem("memory")
    root = attach(url)
    run = RunDir(root)
    assert mirror_of(run.results / "lean.parquet") is not None
    assert mirror_of(Path("/elsewhere/x")) is None
    storage.write_json_atomic(run.summary, {"a": 1})
    assert json.loads(fs.cat(f"{url}/results/summary.json")) == {"a": 1}
    assert display(run.summary) == f"{url}/results/summary.json"
    assert with_urls(f"{run.spec} is broken") == f"{url}/spec.yaml is broken"

    import torch

    store = ActivationStore(run.activations)
    row = {"unit_id": "u1", "prompt_id": "p", "seed": 0, "shape": "[2, 3]"}
    row |= {"steps": "[0, 1]", "timesteps": "[999, 1]", "dtype": "float32"}
    store.write_batch({"u1": torch.ones(2, 3)}, [row])
    store.compact()
    assert fs.exists(f"{url}/activations/index.parquet")
    assert not fs.exists(f"{url}/activations/index-parts")  # parts removed at the URL too
    assert not [p for p in fs.find(url) if p.endswith(".tmp")]

    # changed at the URL (by another machine): the working copy follows when it is opened again
    fs.pipe_file(f"{url}/results/summary.json", b'{"a": 2}')
    fs.rm_file(f"{url}/spec.yaml") if fs.exists(f"{url}/spec.yaml") else None
    (root / "spec.yaml").write_text("left over")
    assert attach(url) == root
    assert json.loads(run.summary.read_text()) == {"a": 2}
    assert not (root / "spec.yaml").exists()  # not at the URL: not here

    # shards are fetched only when read
    shard = next(run.activations.glob("*.safetensors"))
    shard.unlink()
    attach(url)
    assert not shard.exists()
    tensors = dict(ActivationStore(run.activations).iter_units(["u1"]))
    assert shard.exists() and tensors["u1"].shape == (2, 3)
    storage.remove(run.summary)
    assert not fs.exists(f"{url}/results/summary.json") and not run.summary.exists()


def test_urls_on_the_command_line_keep_their_double_slash() -> None:
    from auditkit.cli.options import RunLocation

    location = RunLocation()
    assert location.convert("s3://bucket/runs/a", None, None) == "s3://bucket/runs/a"
    assert location.convert("runs/a", None, None) == Path("runs/a")
    assert location.convert("file:///tmp/a", None, None) == Path("/tmp/a")
