"""The Ray executor: one actor per worker (a GPU, or some CPUs), each loading the pipeline once
and running many batches. Ray schedules the actors; auditkit only hands out batches.

* **Sharding is deterministic.** The stages cut the same batches as a local run, in plan order;
  a batch's result does not depend on which worker ran it (every unit's noise comes from its
  own seeded generator), so the tables equal a local run's on CPU.
* **Results come back in order** and are written by the driver, as they arrive. A batch whose
  worker died is sent again (to any worker; the dead one is restarted by Ray), and since only
  the driver writes, it is stored once. A driver that dies takes its actors with it; the same
  command resumes from the activation store.
* **One truth of provenance.** Every worker reports its packages and the sha256 of the model
  files it loaded. A worker whose torch, diffusers, transformers or auditkit version differs
  from the driver's, or whose weights differ from the reference (the driver's copy of the
  model when it has one, else the first worker's), is refused: it gets no batch.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from auditkit.errors import PrerequisiteError, RuntimeFailure, UsageError
from auditkit.executors.base import Executor, ModelInfo, Task
from auditkit.executors.checks import CHECKED_PACKAGES, refusal, versions, weights_digest
from auditkit.progress import Progress
from auditkit.spec.audit import AuditSpec

IN_FLIGHT = 2
"""Batches queued per worker (one running, one waiting), so no worker idles between batches."""


class PipelineWorker:
    """A Ray actor's body: loads the pipeline once, then runs :class:`Task` functions on it."""

    def __init__(self, spec: AuditSpec, cache_dir: str, threads: int, hook_left: bool) -> None:
        import torch

        from auditkit.executors.base import model_info
        from auditkit.models.loading import check_resolved_hook, compile_denoiser, load_pipeline

        torch.set_num_threads(max(1, threads))
        self.loaded = load_pipeline(spec.model, cache_dir=Path(cache_dir))
        if hook_left:
            check_resolved_hook(spec, self.loaded, Path(cache_dir))
        if spec.execution.compile:
            compile_denoiser(self.loaded)
        model = model_info(self.loaded, spec.model.id, spec.model.revision)
        self._info = {
            "pid": os.getpid(),
            "host": os.uname().nodename,
            "versions": versions(),
            "model": model.__dict__,
        }

    def info(self) -> dict[str, Any]:
        """Where this worker runs, its packages and its model (pid, host, versions, model)."""
        import ray

        return {**self._info, "node": ray.util.get_node_ip_address()}

    def run(self, fn: Any, args: tuple[Any, ...]) -> Any:
        """``fn(loaded, *args)``."""
        return fn(self.loaded, *args)


class RayExecutor(Executor):
    """Batches on Ray actors; started at the first task and kept for every stage of the run."""

    name = "ray"

    def __init__(self, spec: AuditSpec, *, cache_dir: Path, hook_left: bool = False) -> None:
        self.spec, self.cache_dir, self.hook_left = spec, cache_dir, hook_left
        self.execution = spec.execution
        self._actors: dict[int, Any] = {}
        self._infos: dict[int, dict[str, Any]] = {}
        self._refused: list[dict[str, Any]] = []
        self._retried = 0
        # a worker that died is out of service until its restart answers the provenance check,
        # across passes: its ping (info ref -> worker), and workers refused or gone for the run
        self._pings: dict[Any, int] = {}
        self._out_of_service: set[int] = set()
        self._restarts: Counter[int] = Counter()
        self._started = False

    # --- the cluster ---------------------------------------------------------------------------

    def _ray(self) -> Any:
        address = self.execution.address or os.environ.get("RAY_ADDRESS") or ""
        if address.rpartition(":")[0].split("//")[-1] in ("127.0.0.1", "localhost"):
            # a cluster on this machine's loopback: without this Ray rewrites 127.0.0.1 to the
            # machine's network address, where a loopback-only head does not listen
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError as exc:
            raise PrerequisiteError(
                "execution.executor is 'ray' but Ray is not installed.",
                hint="pip install 'auditkit[ray]' (or run with --executor local).",
            ) from exc
        return ray

    def _start(self) -> None:
        if self._started:
            return
        ray = self._ray()
        address = self.execution.address or os.environ.get("RAY_ADDRESS") or None
        if address and address != "auto" and not address.startswith("ray://"):
            _check_reachable(address)
        if not ray.is_initialized():
            try:
                ray.init(
                    address=address,
                    namespace="auditkit",
                    log_to_driver=False,
                    logging_level="ERROR",
                    configure_logging=False,
                    **({} if address else {"include_dashboard": False}),
                )
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UsageError(
                    f"execution.address: cannot join the Ray cluster at {address!r}: {exc}",
                    hint="start one ('ray start --head'), or pass --ray-address auto|host:port.",
                ) from exc
        workers, gpus, cpus = self._shape(ray.cluster_resources())
        remote = ray.remote(PipelineWorker).options(
            num_cpus=cpus,
            num_gpus=gpus,
            max_restarts=self.execution.retries,
            max_task_retries=0,
        )
        threads = max(1, int(cpus))
        actors = {
            i: remote.remote(self.spec, str(self.cache_dir), threads, self.hook_left)
            for i in range(workers)
        }
        print(f"ray: starting {workers} workers ({cpus:g} CPU, {gpus:g} GPU each)",
              file=sys.stderr, flush=True)  # fmt: skip
        infos = self._gather({i: a.info.remote() for i, a in actors.items()})
        reference = self._reference(infos)
        driver = versions()
        for i, info in sorted(infos.items()):
            why = refusal(info, driver, reference)
            if why is not None:
                self._refused.append({**_brief(info), "reason": why})
                print(f"ray: worker {i} on {info['host']} refused: {why}", file=sys.stderr)
                ray.kill(actors[i])
                continue
            self._actors[i], self._infos[i] = actors[i], info
            print(f"ray: worker {i} pid {info['pid']} on {info['host']} ({info['node']}), "
                  f"{info['model']['device']}", file=sys.stderr, flush=True)  # fmt: skip
        if not self._actors:
            raise RuntimeFailure(
                "ray: every worker was refused; nothing ran.",
                hint="install the driver's torch, diffusers, transformers and auditkit versions "
                "and the same model files on the cluster's nodes.",
            )
        self._reference_digest = reference
        self._started = True

    def _shape(self, resources: dict[str, float]) -> tuple[int, float, float]:
        """(workers, GPUs each, CPUs each) from the spec and what the cluster has."""
        execution = self.execution
        cluster_gpus = float(resources.get("GPU", 0.0))
        cluster_cpus = float(resources.get("CPU", 0.0))
        on_cpu = self.spec.model.device == "cpu"
        gpus = execution.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if cluster_gpus >= 1 and not on_cpu else 0.0
        cpus = execution.cpus_per_worker
        workers = execution.workers
        if workers is None:
            workers = int(cluster_gpus // gpus) if gpus else int(cluster_cpus // cpus)
        workers = max(1, workers)
        if workers * gpus > cluster_gpus + 1e-9 or workers * cpus > cluster_cpus + 1e-9:
            raise UsageError(
                f"execution: {workers} workers of {cpus:g} CPU and {gpus:g} GPU need more than "
                f"the cluster has ({cluster_cpus:g} CPU, {cluster_gpus:g} GPU).",
                hint="lower --workers, cpus_per_worker or gpus_per_worker, or add nodes.",
            )
        return workers, gpus, cpus

    def _reference(self, infos: dict[int, dict[str, Any]]) -> str | None:
        """The weights everyone must have: the driver's copy of the model, else the first
        worker's."""
        from auditkit.models.loading import existing_model_folder
        from auditkit.provenance import hash_model_files

        folder = existing_model_folder(self.spec.model, self.cache_dir)
        if folder is not None:
            return weights_digest(hash_model_files(folder))
        first = min(infos)
        return weights_digest(infos[first]["model"]["files"])

    def _gather(self, refs: dict[int, Any]) -> dict[int, dict[str, Any]]:
        """Wait for every worker's info; a worker that fails to start fails the run."""
        ray = self._ray()
        out = {}
        for i, ref in refs.items():
            try:
                out[i] = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                raise exc.as_instanceof_cause() from None
            except ray.exceptions.RayActorError as exc:
                raise RuntimeFailure(f"ray: worker {i} failed to start: {exc}") from exc
        return out

    # --- the executor ----------------------------------------------------------------------------

    @property
    def model_loaded(self) -> bool:
        return self._started

    def info(self) -> ModelInfo:
        self._start()
        first = self._infos[min(self._infos)]["model"]
        return ModelInfo(**first)

    def record(self) -> dict[str, Any]:
        """The manifest's record: the cluster's workers, the refused ones and the retries."""
        return {
            "executor": "ray",
            "address": self.execution.address or os.environ.get("RAY_ADDRESS"),
            "workers": [
                {
                    **_brief(info),
                    "restarts": self._restarts[w],
                    "in_service": w not in self._out_of_service and w not in self._pings.values(),
                }
                for w, info in sorted(self._infos.items())
            ],
            "refused": list(self._refused),
            "batches_retried": self._retried,
        }

    def map(
        self, tasks: Sequence[Task], label: str, *, show_progress: bool = True
    ) -> Iterator[Any]:
        if not tasks:
            return
        self._start()
        ray = self._ray()
        died = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)
        queue: deque[int] = deque(range(len(tasks)))
        attempts: Counter[int] = Counter()
        running: dict[Any, tuple[int, int]] = {}  # result ref -> (task, worker)
        pings = self._pings  # info ref of a worker Ray is restarting -> worker
        busy = Counter({w: 0 for w in self._actors})
        ready = set(self._actors) - set(pings.values()) - self._out_of_service
        results: dict[int, Any] = {}
        rates = _Rates()
        progress = Progress(label, sum(t.units for t in tasks), enabled=show_progress)
        emitted = 0
        while emitted < len(tasks):
            for w in sorted(ready, key=lambda w: busy[w]):
                while queue and busy[w] < IN_FLIGHT:
                    i = queue.popleft()
                    task = tasks[i]
                    running[self._actors[w].run.remote(task.fn, task.args)] = (i, w)
                    busy[w] += 1
                    rates.start(w)
            if not running and not pings:
                raise RuntimeFailure(f"ray: no worker left to run {label!r} ({len(queue)} "
                                     "batches unrun; results so far are stored).")  # fmt: skip
            done, _ = ray.wait([*running, *pings], num_returns=1)
            for ref in done:
                if ref in pings:
                    self._on_ping(ref, pings, ready, busy, died)
                    continue
                i, w = running.pop(ref)
                busy[w] -= 1
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise exc.as_instanceof_cause() from None
                except died:
                    attempts[i] += 1
                    self._retried += 1
                    if attempts[i] > self.execution.retries:
                        raise RuntimeFailure(
                            f"ray: a {label} batch failed on {attempts[i]} workers that died; "
                            "results so far are stored.",
                            hint="see the Ray logs of the dead workers (out of memory?).",
                        ) from None
                    queue.appendleft(i)
                    if w in ready:
                        ready.discard(w)
                        self._restarts[w] += 1
                        print(f"ray: worker {w} died; its batches go to the others",
                              file=sys.stderr, flush=True)  # fmt: skip
                        # retried through the restart: an answer, or ActorDiedError once Ray
                        # has no restart left
                        ping = self._actors[w].info.options(max_task_retries=-1)
                        pings[ping.remote()] = w
                    continue
                rates.finish(w, tasks[i].units)
            while emitted in results:
                self.batches += 1
                yield results.pop(emitted)
                progress.advance(tasks[emitted].units, detail=rates.line())
                emitted += 1

    def _on_ping(
        self, ref: Any, pings: dict[Any, int], ready: set[int], busy: Counter[int], died: Any
    ) -> None:
        """A restarting worker answered (back in service, if it passes the check) or is gone."""
        ray = self._ray()
        w = pings.pop(ref)
        try:
            info = ray.get(ref)
        except died:
            self._out_of_service.add(w)
            print(f"ray: worker {w} is gone for this run", file=sys.stderr, flush=True)
            return
        why = refusal(info, versions(), self._reference_digest)
        if why is not None:
            self._out_of_service.add(w)
            self._refused.append({**_brief(info), "reason": why})
            return
        self._infos[w] = info
        busy[w] = 0
        ready.add(w)
        print(f"ray: worker {w} is back (pid {info['pid']})", file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self._started:
            return
        ray = self._ray()
        for actor in self._actors.values():
            ray.kill(actor)
        self._actors.clear()
        self._started = False


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast, with the address in the message, when nothing listens at ``host:port`` (Ray
    itself would retry for minutes)."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"execution.address: no Ray cluster answers at {address!r} ({exc}).",
            hint="start one with 'ray start --head', or pass --ray-address auto (the cluster "
            "this machine joined) or the head's host:port.",
        ) from None


class _Rates:
    """Units per second per worker, since its first batch of the pass."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.units: Counter[int] = Counter()

    def start(self, worker: int) -> None:
        self.first.setdefault(worker, time.perf_counter())

    def finish(self, worker: int, units: int) -> None:
        self.units[worker] += units

    def line(self) -> str:
        now = time.perf_counter()
        parts = [
            f"w{w} {self.units[w] / max(now - t, 1e-9):.2f}/s"
            for w, t in sorted(self.first.items())
        ]
        return " · ".join(parts)


def _brief(info: dict[str, Any]) -> dict[str, Any]:
    return {
        "host": info["host"],
        "node": info.get("node"),
        "pid": info["pid"],
        "device": info["model"]["device"],
        "versions": info["versions"],
    }


__all__ = ["CHECKED_PACKAGES", "PipelineWorker", "RayExecutor", "refusal", "weights_digest"]
