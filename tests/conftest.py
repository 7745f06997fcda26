"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


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
