"""What every executor offers the stages: run batches of work against the loaded pipeline.

A stage never asks where it runs. It hands the executor a :class:`Task` per batch (a
module-level function and its arguments, so a remote worker can run it by name) and gets the
results back **in the order given**, whichever worker computed them. The function is called as
``fn(loaded, *args)`` with the pipeline the worker loaded once. Writing results stays with the
caller (the driver), so a batch retried after a worker died is still stored once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditkit.models.loading import LoadedPipeline


@dataclass(frozen=True)
class Task:
    """One batch of work: ``fn(loaded, *args)``; ``units`` counts it for the progress line."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    units: int


def model_files(
    loaded: LoadedPipeline, model_id: str, revision: str | None
) -> list[dict[str, Any]]:
    """The weight and config files of the loaded model, hashed (the hub cache's snapshot when
    it came from the hub; empty when none is on disk)."""
    from auditkit.provenance import hash_model_files

    folder = loaded.model_dir
    if folder is None:
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model_id, revision=revision, local_files_only=True))
        except Exception:  # the hub cache layout is not ours to validate
            return []
    return hash_model_files(folder)


@dataclass(frozen=True)
class ModelInfo:
    """What the manifest records of the pipeline the work ran on."""

    device: str
    dtype: str
    pipeline_class: str
    kind: str
    uses_cfg: bool
    files: list[dict[str, Any]] = field(default_factory=list)
    """sha256 and size of every weight and config file (:func:`hash_model_files`)."""


def model_info(loaded: LoadedPipeline, model_id: str, revision: str | None) -> ModelInfo:
    """:class:`ModelInfo` of a loaded pipeline."""
    return ModelInfo(
        device=loaded.device,
        dtype=loaded.dtype,
        pipeline_class=loaded.pipeline_class,
        kind=loaded.kind,
        uses_cfg=loaded.uses_cfg,
        files=model_files(loaded, model_id, revision),
    )


class Executor(ABC):
    """Where the passes' batches run. One executor serves every stage of a run, so each worker
    loads the pipeline at most once per run."""

    name: str = "executor"
    batches: int = 0
    """Batches this executor has run (a stage compares it before and after: did it sample?)."""

    @abstractmethod
    def map(
        self, tasks: Sequence[Task], label: str, *, show_progress: bool = True
    ) -> Iterator[Any]:
        """Run every task; yield their results in the order of ``tasks``. Loads the pipeline
        (or starts the workers) only if there is a task."""

    @property
    @abstractmethod
    def model_loaded(self) -> bool:
        """Whether any stage has needed the pipeline yet."""

    @abstractmethod
    def info(self) -> ModelInfo:
        """The pipeline's :class:`ModelInfo` (loads it, or starts the workers, if needed)."""

    def where(self) -> dict[str, Any]:
        """Device and dtype for the manifest once the pipeline was used, else nothing."""
        if not self.model_loaded:
            return {}
        info = self.info()
        return {"device": info.device, "dtype": info.dtype}

    def local_pipeline(self) -> LoadedPipeline | None:
        """The pipeline loaded in this process, if there is one (a local executor's)."""
        return None

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release workers (the local executor keeps its pipeline for the caller)."""


__all__ = ["Executor", "ModelInfo", "Task", "model_files", "model_info"]
