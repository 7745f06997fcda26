"""The analysis stage, skipped when a finished run in the folder analyzed the same inputs."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from auditkit.analyses.stage import analyze_run
from auditkit.rundir import Manifest
from auditkit.stages.context import Stages


def analysis_inputs(stages: Stages) -> str:
    """A digest of everything the analysis reads: the resolved spec and the plan (their
    hashes), the units in the activation store and in the grounding store (a unit's h is fixed
    by its content id), the bytes of every table the captioning, guidance, causal, discovery
    and grounding passes wrote, and the source of auditkit itself (so a changed analysis is
    never skipped)."""
    import auditkit
    from auditkit.extract.store import ActivationStore

    run = stages.run
    digest = hashlib.sha256()
    digest.update(f"{stages.manifest.spec_hash}:{stages.manifest.plan_hash}".encode())
    for unit in sorted(ActivationStore(run.activations).completed()):
        digest.update(unit.encode())
    digest.update(b"\0grounding\0")
    for unit in sorted(ActivationStore(run.grounding_activations).completed()):
        digest.update(unit.encode())
    passes = [
        *run.files(run.captions, "*.parquet"),
        *run.files(run.results, "discover*.parquet"),
        *run.files(run.grounding, "*.parquet"),
    ]
    for path in passes:
        digest.update(path.name.encode() + hashlib.sha256(path.read_bytes()).digest())
    digest.update(source_digest(Path(auditkit.__file__).parent).encode())
    return digest.hexdigest()


def source_digest(package: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted([*package.rglob("*.py"), *package.rglob("*.yaml")]):
        digest.update(str(path.relative_to(package)).encode() + path.read_bytes())
    return digest.hexdigest()


def analyze(stages: Stages, previous: Manifest | None) -> None:
    """Analyze, unless a finished earlier run in this folder analyzed exactly these inputs and
    its results are all still there (a rerun of a finished audit then takes seconds)."""
    started = time.perf_counter()
    spec, run = stages.spec, stages.run
    inputs = analysis_inputs(stages)
    before = (previous.stages.get("analyze") or {}) if previous is not None else {}
    kept = [run.summary, *([run.gates] if spec.gates else [])]
    if (
        previous is not None
        and previous.status == "complete"
        and before.get("inputs") == inputs
        and all(path.is_file() for path in kept)
    ):
        record = {"inputs": inputs, "reused": True, "seconds": 0.0}
        stages.record("analyze", record, stages.executor.batches)
        return
    analyze_run(spec, stages.plan, run, stages.manifest)
    seconds = round(time.perf_counter() - started, 3)
    record = {"inputs": inputs, "reused": False, "seconds": seconds}
    stages.record("analyze", record, stages.executor.batches)
