"""Shared pytest fixtures."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from forked_cli import ForkedCli
from run_checks import free_port

ROOT = Path(__file__).resolve().parents[1]

SHARED = {"runs": "toyworld-runs", "small_run": "cluster", "ray_cluster": "cluster"}
"""The session fixtures too costly to build twice, and the group of test files that share each."""

GROUPS = {
    "toyworld-runs": {"test_grounding_toyworld.py", "test_toyworld_audits.py", "test_history.py",
                      "test_tracking.py", "test_streamed.py", "test_reader_calibration.py"},
    "cluster": {"test_ray.py", "test_s3.py"},
}  # fmt: skip
"""Under ``pytest -n 2`` (``.ci/test``: pytest-xdist) each group of files runs whole on one
worker, so each fixture of :data:`SHARED` is built once per session; every other file is a group
of its own (its module fixtures are built once)."""

FIRST = ["toyworld-runs", "cluster", "test_reliability.py", "test_hostile.py",
         "test_toyworld_dit.py", "test_report_budget.py"]  # fmt: skip
"""Groups handed out first, longest first (their measured times), so the two workers finish
together instead of one starting a long group at the end."""


def group_of(nodeid: str) -> str:
    """The group of a test: its file's in :data:`GROUPS`, else its file's name."""
    name = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return next((group for group, files in GROUPS.items() if name in files), name)


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None):
        # Two workers on two cores each run torch with two threads: OpenMP threads that spin
        # while they wait would take the cores from the other worker's (measured: a U-Net
        # pass 5.7x slower). Passive waiting costs one worker alone about 5%.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Hands out whole groups (:func:`group_of`) in collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    config.option.loadscopereorder = False
    return GroupScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuses a test that uses a fixture of :data:`SHARED` from a file outside its group, and
    puts the groups of :data:`FIRST` first, in that order (the same order in every worker)."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        for fixture in set(getattr(item, "fixturenames", ())) & SHARED.keys():
            defs = info.name2fixturedefs.get(fixture, ()) if info else ()
            if defs and defs[-1].baseid.endswith(".py"):
                continue  # a module's own fixture of that name
            if group_of(item.nodeid) != SHARED[fixture]:
                raise pytest.UsageError(
                    f"{item.nodeid} uses the fixture {fixture!r}: put its file in the group "
                    f"{SHARED[fixture]!r} of tests/conftest.py's GROUPS, or it is built twice"
                )

    def rank(pair: tuple[int, pytest.Item]) -> tuple[int, int]:
        group = group_of(pair[1].nodeid)
        return (FIRST.index(group) if group in FIRST else len(FIRST), pair[0])

    items[:] = [item for _, item in sorted(enumerate(items), key=rank)]


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


BALANCED_UNREAD = {"analyses": ["defaults"], "captions": ["guidance", "causal", "discovery"]}
"""What the ``runs`` fixture leaves out of toyworld-balanced's spec: no test reads them from the
control. Without them its other tables and gate verdicts equal the whole spec's (every
difference under 1e-14, gates.json equal but for the run id; measured 2026-12-02), in 45% of
its time. Without the defaults analysis's marked prompts its leans are judged by their score
(``statistics.effect: auto``), not by their position between marked variants as the whole
spec's are; both find nothing on the control at seeds 0-31 (0 of 24 each; the calibration
suite's calls on toyworld-balanced's 512-seed store, 2026-12-04), so the gate verdicts stay
equal."""


def balanced_spec(folder: Path) -> Path:
    """audits/toyworld-balanced.yaml without :data:`BALANCED_UNREAD`, written into ``folder``."""
    import yaml

    data = yaml.safe_load((ROOT / "audits" / "toyworld-balanced.yaml").read_text())
    data["analyses"] = [a for a in data["analyses"] if a not in BALANCED_UNREAD["analyses"]]
    for key in BALANCED_UNREAD["captions"]:
        data["captions"].pop(key)
    path = folder / "toyworld-balanced.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def runs(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Path]:
    """The default audit of toyworld-biased (about three and a half minutes on two CPU cores)
    and toyworld-balanced's (:func:`balanced_spec`), run once per test session in this process
    with the local executor; read-only for the tests. The modules the two runs imported are
    kept in ``request.config.auditkit_runs_imported`` (the optional extras must not be among
    them)."""
    from auditkit.run import run_audit

    root = tmp_path_factory.mktemp("toyworld-audits")
    old = os.umask(0o022)  # as on a usual shared machine; restored for the other tests
    before = set(sys.modules)
    request.config.auditkit_runs_preloaded = before  # type: ignore[attr-defined]
    try:
        specs = {"biased": ROOT / "audits" / "toyworld.yaml", "balanced": balanced_spec(root)}
        return {
            variant: run_audit(spec, root / variant, show_progress=False, render=False).run_dir
            for variant, spec in specs.items()
        }
    finally:
        os.umask(old)
        imported = set(sys.modules) - before
        request.config.auditkit_runs_imported = imported  # type: ignore[attr-defined]


SMALL_OCCUPATIONS = ["nurse", "doctor", "farmer", "pilot"]


def small_audit(default: dict[str, Any]) -> dict[str, Any]:
    """The small default audit: every stage, analysis, crossing, pass and gate of
    audits/toyworld.yaml (``default``, its parsed YAML), on four of its occupations, 6 seeds and
    2 causal seeds (about a sixth of its sampling). Its 9 extraction batches of 32 leave time to
    kill a Ray worker mid-run, and the discovery pass's probes batch the same wherever it runs,
    so other executors' tables match its own byte for byte."""
    data = copy.deepcopy(default)
    data.update({"name": "toyworld-small", "seeds": 6, "batch_size": 32})
    data["concepts"][0]["terms"] = SMALL_OCCUPATIONS
    data["captions"]["causal"]["seeds"] = 2
    return data


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small default audit (:func:`small_audit`), run once per test session in this process:
    ``spec`` (its YAML file) and ``run`` (its run directory, read-only). The tests that run it
    again elsewhere (on a Ray cluster, with its run directory on S3) compare against it, byte for
    byte."""
    import yaml

    from auditkit.run import run_audit

    root = tmp_path_factory.mktemp("small-audit")
    data = small_audit(yaml.safe_load((ROOT / "audits" / "toyworld.yaml").read_text()))
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
