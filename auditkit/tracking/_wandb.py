"""Log one audit run to Weights & Biases, offline by default (no network, no login: W&B writes
an offline run folder that ``wandb sync`` uploads later)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditkit.errors import PrerequisiteError, RuntimeFailure
from auditkit.tracking._record import TrackingRecord

INSTALL_HINT = "pip install 'auditkit[wandb]'."

ARTIFACT_TYPE = "auditkit-audit"


@dataclass(frozen=True)
class WandbLanding:
    """Where a run was logged."""

    mode: str
    project: str
    run_id: str
    run_name: str
    folder: Path
    """The run's local folder (offline: the folder ``wandb sync`` uploads)."""
    url: str | None
    """The run's page (online only)."""


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise PrerequisiteError(
            "Logging to Weights & Biases needs the wandb package, which is not installed.",
            hint=INSTALL_HINT,
        ) from None
    return wandb


def log_to_wandb(
    record: TrackingRecord,
    *,
    project: str | None = None,
    folder: Path | None = None,
    mode: str = "offline",
    run_name: str | None = None,
) -> WandbLanding:
    """Log ``record`` as one W&B run and return where it landed.

    The params (and the audit's git commit) become the run's config; the metrics, the overall
    ``status`` and each gate's ``gate_outcome/<gate>`` its summary (no history: one value
    each); the run's tags are ``auditkit`` and ``gates-<status>``, its notes the findings.
    The files of ``record.artifacts`` go into one artifact (type ``auditkit-audit``, named after
    the audit, aliased ``run-<run id>``), and the report files are also copied into the run's
    own files, so that the offline folder holds the report itself. ``folder``: where W&B puts
    its ``wandb/`` folder (default W&B's: ``WANDB_DIR``, else the working directory).
    ``project``: default the audit's name. System metrics, console capture, code and
    requirements of the exporting process are not recorded: the audit's provenance is in the
    config.
    """
    wandb = _import_wandb()
    if folder is not None:
        folder = folder.resolve()
        folder.mkdir(parents=True, exist_ok=True)
    config = dict(record.params)
    if "auditkit.git_commit" in record.tags:
        config["git_commit"] = record.tags["auditkit.git_commit"]
    settings = wandb.Settings(
        silent=True,
        console="off",
        save_code=False,
        disable_git=True,
        x_disable_stats=True,
        x_disable_meta=True,
        x_save_requirements=False,
    )
    status_tag = {"pass": "gates-pass", "fail": "gates-fail"}.get(record.status, "gates-none")
    try:
        run = wandb.init(
            project=project or record.audit,
            name=run_name or record.default_name,
            dir=str(folder) if folder is not None else None,
            mode=mode,
            config=config,
            tags=["auditkit", status_tag],
            notes=record.description,
            job_type="auditkit-audit",
            settings=settings,
        )
    except wandb.Error as exc:
        raise RuntimeFailure(
            f"W&B could not start a run ({mode}): {exc}",
            hint="offline mode needs no login; online mode needs 'wandb login' or "
            "WANDB_API_KEY and a reachable server.",
        ) from None
    with run:
        outcomes = {f"gate_outcome/{k}": v for k, v in record.gate_outcomes.items()}
        run.summary.update({**record.metrics, "status": record.status, **outcomes})
        artifact = wandb.Artifact(record.audit, type=ARTIFACT_TYPE, metadata=record.params)
        for part, path in record.artifacts:
            artifact.add_file(str(path), name=f"{part}/{path.name}" if part else path.name)
        run.log_artifact(artifact, aliases=["latest", f"run-{record.run_id}"])
        files = Path(run.dir)
        for part, path in record.artifacts:
            if part == "report":
                copy = files / part / path.name
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, copy)
                run.save(str(copy), base_path=str(files), policy="now")
        landing = WandbLanding(
            mode=mode,
            project=str(run.project),
            run_id=str(run.id),
            run_name=str(run.name),
            folder=files.parent,
            url=None if mode == "offline" else run.url,
        )
    if wandb.run is None:
        # W&B's service writes the run's transaction log when its stream closes, after finish
        # returns; tearing it down waits for that, so the folder is whole on return (left to
        # W&B's own exit hook while the caller has a run of its own open)
        wandb.teardown()
    return landing
