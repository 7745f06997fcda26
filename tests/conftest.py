"""Shared pytest fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from forked_cli import ForkedCli
from run_checks import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_pipeline_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random-weight pipelines, one per kind, built once per test session.

    Maps each kind ("sd", "lcm", "sdxl") to a diffusers folder loadable with
    ``DiffusionPipeline.from_pretrained``. Built with
    :func:`auditkit.models.tiny.tiny_pipeline_path` (seed 0, default words) into a session
    temp dir; treat the folders as read-only.
    """
    from auditkit.models.tiny import TINY_KINDS, tiny_pipeline_path

    cache_dir = tmp_path_factory.mktemp("tiny-models")
    return {kind: tiny_pipeline_path(kind, cache_dir) for kind in TINY_KINDS}


@pytest.fixture(scope="session", autouse=True)
def analysis_slices() -> None:
    """The analysis slices loaded, as every command that plans or runs an audit loads them
    first (``check_spec``): the plan can ask them for their prompts, and their tables are
    registered with the run directory, so a stage called on its own can write one a slice
    declares (the captioning stage the exemplars')."""
    from auditkit.analyses import slices

    slices()


@pytest.fixture(scope="session")
def runs(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Path]:
    """The default audit of toyworld-biased and the same spec on toyworld-balanced, run once
    per test session in this process with the local executor (about two minutes each on two
    CPU cores); read-only for the tests. The modules the two runs imported are kept in
    ``request.config.auditkit_runs_imported`` (the optional extras must not be among them)."""
    from auditkit.run import run_audit

    root = tmp_path_factory.mktemp("toyworld-audits")
    old = os.umask(0o022)  # as on a usual shared machine; restored for the other tests
    before = set(sys.modules)
    request.config.auditkit_runs_preloaded = before  # type: ignore[attr-defined]
    try:
        return {
            variant: run_audit(
                ROOT / "audits" / spec, root / variant, show_progress=False, render=False
            ).run_dir
            for variant, spec in (
                ("biased", "toyworld.yaml"),
                ("balanced", "toyworld-balanced.yaml"),
            )
        }
    finally:
        os.umask(old)
        imported = set(sys.modules) - before
        request.config.auditkit_runs_imported = imported  # type: ignore[attr-defined]


SMALL_AUDIT = {"seeds": 8}
"""How the small default audit differs from audits/toyworld.yaml: every stage, analysis, pass and
gate of the default audit, on 8 seeds (a quarter of its cost; its batches of 64 keep every batch
of the discovery pass's probes the same wherever it runs, so the tables match byte for byte)."""


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The default audit on 8 seeds (:data:`SMALL_AUDIT`), run once per test session in this
    process: ``spec`` (its YAML file) and ``run`` (its run directory, read-only). The tests that
    run the default audit again elsewhere (on a Ray cluster, with its run directory on S3)
    compare against it, byte for byte."""
    import yaml

    from auditkit.run import run_audit

    root = tmp_path_factory.mktemp("small-audit")
    data = yaml.safe_load((ROOT / "audits" / "toyworld.yaml").read_text())
    data.update(SMALL_AUDIT)
    spec = root / "toyworld-small.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    run = run_audit(spec, root / "run", show_progress=False, render=False).run_dir
    return {"spec": spec, "run": run}


@pytest.fixture(scope="session")
def forked_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkedCli]:
    """``auditkit`` commands in processes of their own, forked from one process that imported
    auditkit once per test session (tests/forked_cli.py): killed runs, runs in another
    environment."""
    cli = ForkedCli(tmp_path_factory.mktemp("forked-cli"))
    yield cli
    cli.close()


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One real Ray cluster per test session: a head on loopback (every listener on 127.0.0.1)
    with 2 CPUs, room for two single-CPU workers. Yields the environment and address a driver
    process joins it with; stopped at the end of the session."""
    ray = Path(sys.executable).with_name("ray")
    if not ray.is_file():
        pytest.fail("Ray is not installed: pip install -e '.[dev]' (it includes auditkit[ray])")
    port = free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    start = [str(ray), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--num-cpus=4", "--num-gpus=0", "--include-dashboard=false",
             "--disable-usage-stats"]  # fmt: skip
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    try:
        yield {"address": f"127.0.0.1:{port}", **{k: env[k] for k in env if k.startswith("RAY_")}}
    finally:
        subprocess.run([str(ray), "stop", "--force"], env=env, capture_output=True, timeout=120)
