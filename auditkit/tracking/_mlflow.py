"""Log one audit run to MLflow: a tracking server, a Databricks workspace or a local store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from auditkit.errors import PrerequisiteError, RuntimeFailure
from auditkit.tracking._record import TrackingRecord

INSTALL_HINT = "pip install 'auditkit[mlflow]' (MLflow's client with its local SQLite store)."

FILE_STORE_SWITCH = "MLFLOW_ALLOW_FILE_STORE"
"""MLflow 3 refuses a ``file:`` store unless this variable is set (the store is in maintenance
mode there, though it still writes and reads runs)."""

NOTE_LIMIT = 8000
"""The longest tag value MLflow keeps (the run's description is a tag)."""

BATCH = 100
"""Metrics, params or tags per request (MLflow takes at most 1000 metrics, 100 params and
100 tags in one batch)."""


@dataclass(frozen=True)
class MlflowLanding:
    """Where a run was logged."""

    tracking_uri: str
    experiment: str
    experiment_id: str
    run_id: str
    run_name: str
    artifact_uri: str

    @property
    def url(self) -> str | None:
        """The run's page, for a tracking server reached over HTTP."""
        if urlparse(self.tracking_uri).scheme not in ("http", "https"):
            return None
        base = self.tracking_uri.rstrip("/")
        return f"{base}/#/experiments/{self.experiment_id}/runs/{self.run_id}"


def _import_mlflow() -> Any:
    try:
        import mlflow
        from mlflow.tracking import MlflowClient  # noqa: F401  (the client this module uses)
    except ImportError:
        raise PrerequisiteError(
            "Logging to MLflow needs the mlflow package, which is not installed.",
            hint=INSTALL_HINT,
        ) from None
    return mlflow


def is_file_store(uri: str) -> bool:
    """Whether MLflow keeps the runs of ``uri`` in a folder (a ``file:`` URI or a plain path)."""
    return urlparse(uri).scheme in ("", "file")


@contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    """Let MLflow 3 open a file store named explicitly (or by MLFLOW_TRACKING_URI) for the
    duration of the export, unless the environment already says either way."""
    if not is_file_store(uri) or FILE_STORE_SWITCH in os.environ:
        yield
        return
    os.environ[FILE_STORE_SWITCH] = "true"
    try:
        yield
    finally:
        os.environ.pop(FILE_STORE_SWITCH, None)


def _clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _experiment_id(client: Any, name: str) -> str:
    """The id of the experiment ``name``, created when missing (another job creating it at the
    same moment is fine)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise RuntimeFailure(
                f"the MLflow experiment {name!r} is deleted (it is in the trash).",
                hint="restore it ('mlflow experiments restore'), or name another with "
                "--experiment.",
            )
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


def log_to_mlflow(
    record: TrackingRecord,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
) -> MlflowLanding:
    """Log ``record`` as one finished MLflow run and return where it landed.

    ``tracking_uri``: when None, MLflow's own choice (``MLFLOW_TRACKING_URI``, else its default
    local store). ``experiment``: default the audit's name, created when missing. The run starts
    and ends at the audit's own start and finish times; a failure part-way marks it FAILED.
    """
    mlflow = _import_mlflow()
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or str(mlflow.get_tracking_uri())
    name = experiment or record.audit
    title = run_name or record.default_name
    try:
        with _file_store_allowed(uri):
            client = MlflowClient(tracking_uri=uri)
            experiment_id = _experiment_id(client, name)
            run = client.create_run(
                experiment_id,
                start_time=record.started_ms,
                tags={"mlflow.note.content": _clipped(record.description, NOTE_LIMIT)},
                run_name=title,
            )
            run_id = run.info.run_id
            try:
                stamp = record.finished_ms or run.info.start_time
                metrics = [Metric(k, v, stamp, 0) for k, v in record.metrics.items()]
                params = [Param(k, v) for k, v in record.params.items()]
                tags = [RunTag(k, v) for k, v in record.tags.items()]
                for chunk in _chunks(metrics):
                    client.log_batch(run_id, metrics=chunk)
                for chunk in _chunks(params):
                    client.log_batch(run_id, params=chunk)
                for chunk in _chunks(tags):
                    client.log_batch(run_id, tags=chunk)
                for folder, path in record.artifacts:
                    client.log_artifact(run_id, str(path), artifact_path=folder or None)
            except BaseException:
                client.set_terminated(run_id, status="FAILED")
                raise
            end = max(record.finished_ms or 0, run.info.start_time or 0) or None
            client.set_terminated(run_id, status="FINISHED", end_time=end)
    except ImportError as exc:  # a store's own dependency (SQLAlchemy for sqlite: URIs)
        raise PrerequisiteError(
            f"MLflow cannot open the tracking store {uri!r}: {exc}.", hint=INSTALL_HINT
        ) from None
    except MlflowException as exc:
        raise RuntimeFailure(
            f"MLflow refused the run at {uri!r}: {exc.message}",
            hint="check --tracking-uri (or MLFLOW_TRACKING_URI) and that the server is up and "
            "accepts this client's credentials.",
        ) from None
    return MlflowLanding(uri, name, experiment_id, run_id, title, str(run.info.artifact_uri))
