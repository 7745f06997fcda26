"""The local executor: every batch in this process, one after another, on one pipeline."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from auditkit.executors.base import Executor, ModelInfo, Task, model_info
from auditkit.models.loading import LoadedPipeline
from auditkit.progress import Progress


class LocalExecutor(Executor):
    """Runs tasks in this process. ``pipeline`` is called once, at the first task (or the first
    :meth:`info`); ``model_id`` and ``revision`` locate the weights to hash for the manifest."""

    name = "local"

    def __init__(
        self,
        pipeline: Callable[[], LoadedPipeline],
        *,
        model_id: str = "",
        revision: str | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._loaded: LoadedPipeline | None = None
        self._info: ModelInfo | None = None
        self.model_id, self.revision = model_id, revision

    @classmethod
    def of(cls, loaded: LoadedPipeline) -> LocalExecutor:
        """An executor around a pipeline already loaded."""
        executor = cls(lambda: loaded)
        executor._loaded = loaded
        return executor

    def loaded(self) -> LoadedPipeline:
        """The pipeline, loaded at the first call."""
        if self._loaded is None:
            self._loaded = self._pipeline()
        return self._loaded

    @property
    def model_loaded(self) -> bool:
        return self._loaded is not None

    def local_pipeline(self) -> LoadedPipeline | None:
        return self._loaded

    def info(self) -> ModelInfo:
        if self._info is None:
            self._info = model_info(self.loaded(), self.model_id, self.revision)
        return self._info

    def where(self) -> dict[str, Any]:
        if self._loaded is None:
            return {}
        return {"device": self._loaded.device, "dtype": self._loaded.dtype}

    def map(
        self, tasks: Sequence[Task], label: str, *, show_progress: bool = True
    ) -> Iterator[Any]:
        if not tasks:
            return
        loaded = self.loaded()
        progress = Progress(label, sum(t.units for t in tasks), enabled=show_progress)
        for task in tasks:
            result = task.fn(loaded, *task.args)
            self.batches += 1
            progress.advance(task.units)
            yield result


__all__ = ["LocalExecutor"]
