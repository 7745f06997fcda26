"""What the stages of one run share (:class:`Stages`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from auditkit.executors import Executor
from auditkit.plan import AuditPlan
from auditkit.rundir import Manifest, RunDir
from auditkit.spec import AuditSpec

if TYPE_CHECKING:
    from auditkit.caption import Captioner
    from auditkit.models.loading import LoadedPipeline
    from auditkit.passes.grounding import GroundingSelection

T = TypeVar("T")


@dataclass
class Stages:
    """What the stages of one run share: spec and plan, the run folder and its manifest, and
    the pipeline once a stage has loaded it (so that it is loaded at most once per run)."""

    spec: AuditSpec
    plan: AuditPlan
    run: RunDir
    manifest: Manifest
    cache_dir: Path
    show_progress: bool
    given: LoadedPipeline | None = None
    """A pipeline the caller loaded for this model, used instead of loading it again."""
    hook_left: bool = False
    """Whether the spec left the hook point to the model's family (resolved before loading)."""
    executor: Executor = field(init=False)
    """Where every stage's sampling runs (one executor per run: the pipeline loads once)."""
    current: str = "start"
    """The stage running now (recorded as ``failed_stage`` when one raises)."""
    force: bool = False
    """Run even when the plan exceeds the spec's storage or time limit."""
    grounding: GroundingSelection | None = None
    """The image-grounded axes' labelled images, loaded and checked before extraction."""
    captioner: tuple[Captioner, dict[str, Any]] | None = None
    """The spec's captioner and its record, once a stage has made them."""

    @property
    def run_dir(self) -> Path:
        return self.run.root

    def save(self) -> None:
        self.run.write_manifest(self.manifest)

    def update(self, **fields: Any) -> None:
        """Replace manifest fields and write the manifest."""
        self.manifest = self.manifest.evolve(**fields)
        self.save()

    def load(self) -> LoadedPipeline:
        """Load the pipeline in this process (the local executor's, at its first batch)."""
        from auditkit.models.loading import check_resolved_hook, compile_denoiser, load_pipeline

        loaded = self.given or load_pipeline(self.spec.model, cache_dir=self.cache_dir)
        if self.hook_left:
            check_resolved_hook(self.spec, loaded, self.cache_dir)
        if self.spec.execution.compile and self.given is None:
            compile_denoiser(loaded)
        return loaded

    def sample_and_read(
        self,
        stage: Callable[..., T],
        captioner: Captioner,
        record: dict[str, Any],
        *extra: Any,
    ) -> tuple[T, int]:
        """Run a stage that samples images and reads them into the run's captions folder:
        ``stage(CaptionedPass(...), *extra)``. Returns its stats and the executor's batch count
        before it (for :meth:`record`)."""
        from auditkit.caption.stage import CaptionedPass

        mark = self.executor.batches
        inputs = CaptionedPass(
            self.spec, self.plan, self.run.captions, captioner, record, self.executor,
            self.show_progress,
        )  # fmt: skip
        return stage(inputs, *extra), mark

    def record(self, name: str, stats: dict[str, Any], mark: int, **extra: Any) -> None:
        """Record a finished stage (its stats, where it ran if it sampled anything since the
        executor ran ``mark`` batches, and ``extra``) in the manifest."""
        where = self.executor.where() if self.executor.batches > mark else {}
        self.manifest = self.manifest.with_stage(name, {**stats, **where, **extra})
        self.save()


def cuda_version() -> str | None:
    import torch

    return torch.version.cuda if torch.cuda.is_available() else None
