"""The Ray executor on a real Ray cluster (the session's ``ray_cluster``: a head on loopback and
two single-CPU workers). The driver is the ``auditkit`` command in a child process, as a user
runs it (this test process may not open sockets).

* the small default audit (conftest's ``small_run``) through the cluster, its driver killed
  mid-run and started again with the same command, then one of its workers killed
  mid-extraction, equals the local run table for table: nothing stored is extracted again and
  every unit is stored once (one run of the audit on the cluster for both crashes);
* the checks a driver makes of its workers (versions, weights) and of the cluster's size.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from run_checks import assert_same_results

from auditkit.executors.ray_executor import CHECKED_PACKAGES, refusal, weights_digest

ROOT = Path(__file__).resolve().parents[1]
AUDITKIT = str(Path(sys.executable).with_name("auditkit"))


class Driver:
    """``auditkit run`` in a child process, its stderr collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [AUDITKIT, "run", *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, test: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not test():  # type: ignore[operator]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"never saw {what}; the driver said:\n" + "\n".join(self.lines))
            time.sleep(0.2)

    def finish(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail("the driver did not finish:\n" + "\n".join(self.lines[-40:]))
        self._reader.join(timeout=10)
        return code

    def worker_pids(self) -> dict[int, int]:
        found = (re.match(r"ray: worker (\d+) pid (\d+) ", line) for line in self.lines)
        return {int(m[1]): int(m[2]) for m in found if m}


def _stored_parts(run: Path) -> int:
    parts = run / "activations" / "index-parts"
    return len(list(parts.glob("*.parquet"))) if parts.is_dir() else 0


def _index(run: Path) -> pd.DataFrame:
    from auditkit.extract.store import ActivationStore

    store = ActivationStore(run / "activations")
    frames = [pd.read_parquet(p) for p in [store.index_path, *store._parts()] if p.is_file()]
    return pd.concat(frames, ignore_index=True)


def _stored_units(run: Path) -> int:
    """Units stored so far (0 while the store is between files: a part merged away)."""
    try:
        return int(_index(run)["unit_id"].nunique())
    except (OSError, ValueError):
        return 0


def test_the_default_audit_on_a_ray_cluster_equals_the_local_run_though_driver_and_worker_died(
    ray_cluster: dict[str, str], small_run: dict[str, Path], tmp_path: Path
) -> None:
    """The small default audit in 9 extraction batches (every stage, pass and gate; conftest's
    ``small_run``) on two Ray workers. Its driver is killed once two batches are stored; the same
    command started again extracts none of them again, and one of its workers is killed mid-run.
    The run equals the local run byte for byte, every unit stored once."""
    out = tmp_path / "ray-run"
    spec = small_run["spec"]
    args = [str(spec), "--out", str(out), "--ray-address", ray_cluster["address"], "--workers", "2"]
    first = Driver(args, ray_cluster)
    first.wait_for(lambda: _stored_parts(out) >= 2, 300, "two stored batches")
    first.proc.kill()  # SIGKILL: no handler runs, the manifest still says "running"
    first.finish(timeout=60)
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    stored = _index(out)["unit_id"].nunique()
    plan = json.loads((out / "plan.json").read_text())
    total = len(plan["units"])
    assert 0 < stored < total, (stored, total)

    driver = Driver(args, ray_cluster)
    driver.wait_for(lambda: len(driver.worker_pids()) == 2, 300, "two workers")
    driver.wait_for(lambda: _stored_units(out) >= stored + 64, 300, "two more stored batches")
    victim = driver.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    code = driver.finish(timeout=1200)
    log = "\n".join(driver.lines)
    assert code == 1, log  # toyworld-biased fails the default gates, as locally
    assert "ray: worker 0 died" in log, log

    local = small_run["run"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    execution = manifest["execution"]
    assert execution["executor"] == "ray" and len(execution["workers"]) == 2
    assert execution["batches_retried"] >= 1 and execution["refused"] == []
    # Ray restarted the killed worker; it served again once it passed the provenance check
    assert "ray: worker 0 is back" in log, log
    assert [w["restarts"] for w in execution["workers"]] == [1, 0]
    assert all(w["in_service"] for w in execution["workers"])
    assert victim not in {w["pid"] for w in execution["workers"]}
    # nothing lost, nothing stored twice: one index row and one tensor per unit the local run
    # stored (the plan's units, and the discovery pass's probes of mined terms)
    index = _index(out)
    local_index = _index(local)
    assert len(index) == index["unit_id"].nunique() == len(local_index)
    assert set(index["unit_id"]) == set(local_index["unit_id"])
    assert set(index["unit_id"]) >= {u["unit_id"] for u in plan["units"]}
    shards = {p.name for p in (out / "activations").glob("*.safetensors")}
    assert shards == set(index["shard"])
    # the second driver extracted only what the first had not stored
    extract = manifest["stages"]["extract"]
    assert extract["units_skipped"] == stored and extract["units_run"] == total - stored
    local_extract = json.loads((local / "manifest.json").read_text())["stages"]["extract"]
    assert local_extract["units_run"] == total
    assert extract["denoiser_evaluations"] * total == (
        local_extract["denoiser_evaluations"] * (total - stored)
    )
    # the same answer: every table, summary and gate verdict byte for byte
    assert assert_same_results(out, local) >= 18
    assert (out / "report" / "report.html").is_file()


def test_a_cluster_that_does_not_answer_is_a_located_error(tmp_path: Path) -> None:
    out = tmp_path / "nowhere"
    args = [str(ROOT / "audits" / "tiny-demo.yaml"), "--out", str(out)]
    driver = Driver([*args, "--ray-address", "127.0.0.1:9"], {})
    assert driver.finish(timeout=120) == 2
    log = "\n".join(driver.lines)
    assert "execution.address: no Ray cluster answers at '127.0.0.1:9'" in log, log
    assert "ray start --head" in log


def _worker(files: list[dict[str, str]], **versions: str) -> dict[str, object]:
    theirs = {name: "1.0" for name in CHECKED_PACKAGES} | versions
    return {"host": "node-2", "pid": 7, "versions": theirs, "model": {"files": files}}


def test_a_worker_with_other_packages_or_other_weights_is_refused() -> None:
    files = [{"path": "unet/model.safetensors", "sha256": "a" * 64}]
    driver = {name: "1.0" for name in CHECKED_PACKAGES}
    reference = weights_digest(files)
    assert refusal(_worker(files), driver, reference) is None
    assert refusal(_worker(files, torch="2.12.0"), driver, reference) == (
        "torch 2.12.0 there, 1.0 on the driver"
    )
    assert refusal(_worker(files, diffusers="0.41.0"), driver, reference) is not None
    other = [{"path": "unet/model.safetensors", "sha256": "b" * 64}]
    why = refusal(_worker(other), driver, reference)
    assert why is not None and why.startswith("its model files hash to ")
    # the digest is of the files' names and hashes, in any order
    two = [*files, {"path": "vae/model.safetensors", "sha256": "c" * 64}]
    assert weights_digest(two) == weights_digest(two[::-1]) != weights_digest(files)


def test_a_cluster_too_small_for_the_workers_asked_is_a_located_error() -> None:
    from auditkit.errors import UsageError
    from auditkit.executors.ray_executor import RayExecutor
    from auditkit.spec import load_spec

    spec = load_spec(ROOT / "audits" / "tiny-demo.yaml")
    spec = spec.model_copy(
        update={"execution": spec.execution.model_copy(update={"executor": "ray", "workers": 3})}
    )
    executor = RayExecutor(spec, cache_dir=Path("/nonexistent"))
    assert executor._shape({"CPU": 4.0}) == (3, 0.0, 1.0)
    with pytest.raises(UsageError, match=r"3 workers of 1 CPU and 0 GPU need more than"):
        executor._shape({"CPU": 2.0})
    auto = spec.model_copy(
        update={"execution": spec.execution.model_copy(update={"workers": None})}
    )
    on_cpu = RayExecutor(auto, cache_dir=Path("."))  # tiny-demo asks for device cpu
    assert on_cpu._shape({"CPU": 16.0, "GPU": 4.0}) == (16, 0.0, 1.0)
    gpu = auto.model_copy(update={"model": auto.model.model_copy(update={"device": "auto"})})
    assert RayExecutor(gpu, cache_dir=Path("."))._shape({"CPU": 16.0, "GPU": 4.0}) == (4, 1.0, 1.0)
