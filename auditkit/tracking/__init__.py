"""Experiment-tracker integrations: one finished audit run logged to MLflow or Weights & Biases.

:func:`tracking_record` reads what is sent from the run directory alone (the summary's gates and
headline numbers, the sealed manifest's provenance, the report); :func:`log_to_mlflow` and
:func:`log_to_wandb` send it. Both trackers are optional extras (``auditkit[mlflow]``,
``auditkit[wandb]``), imported only when a run is logged.
"""

from auditkit.tracking._mlflow import MlflowLanding, log_to_mlflow
from auditkit.tracking._record import TrackingRecord, key_part, seed_ranges, tracking_record
from auditkit.tracking._wandb import WandbLanding, log_to_wandb

__all__ = [
    "MlflowLanding",
    "TrackingRecord",
    "WandbLanding",
    "key_part",
    "log_to_mlflow",
    "log_to_wandb",
    "seed_ranges",
    "tracking_record",
]
