"""Where an audit's sampling runs: ``local`` (this process, the default) or ``ray`` (actors on a
Ray cluster, one pipeline each). Stages hand batches to an :class:`Executor` and never ask
which one it is. The Ray executor is imported only when a run asks for it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditkit.executors.base import Executor, ModelInfo, Task, model_info
from auditkit.executors.local import LocalExecutor
from auditkit.models.loading import LoadedPipeline

if TYPE_CHECKING:
    from auditkit.spec.audit import AuditSpec

EXECUTORS = ("local", "ray")


def as_executor(source: Executor | LoadedPipeline | Callable[[], LoadedPipeline]) -> Executor:
    """An executor for ``source``: itself, a pipeline already loaded, or a callable that loads
    one on first use (both run locally)."""
    if isinstance(source, Executor):
        return source
    if isinstance(source, LoadedPipeline):
        return LocalExecutor.of(source)
    return LocalExecutor(source)


def make_executor(
    spec: AuditSpec,
    pipeline: Callable[[], LoadedPipeline],
    *,
    cache_dir: Path,
    hook_left: bool = False,
) -> Executor:
    """The executor ``spec.execution`` names. ``pipeline`` loads the model locally (the local
    executor's pipeline); a Ray executor's workers load it themselves."""
    execution = spec.execution
    if execution.executor == "local":
        return LocalExecutor(pipeline, model_id=spec.model.id, revision=spec.model.revision)
    from auditkit.executors.ray_executor import RayExecutor

    return RayExecutor(spec, cache_dir=cache_dir, hook_left=hook_left)


def describe(executor: Executor) -> dict[str, Any]:
    """The executor's record for the manifest."""
    record = getattr(executor, "record", None)
    return record() if callable(record) else {"executor": executor.name}


__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "ModelInfo",
    "Task",
    "as_executor",
    "describe",
    "make_executor",
    "model_info",
]
