"""Where an audit's sampling runs (``execution:``). It never changes a result, so it is not
part of the spec hash: the same spec run locally or on a cluster is the same audit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from auditkit.spec.base import FrozenModel


class ExecutionSpec(FrozenModel):
    """The executor of the sampling passes (extraction, captions, guidance sweep, causal check,
    discovery). ``auditkit run --executor/--ray-address/--workers`` override it."""

    executor: Literal["local", "ray"] = Field(
        "local",
        description=(
            "local: this process (the default). ray: one actor per worker on a Ray cluster, "
            "each loading the pipeline once (install auditkit[ray])."
        ),
    )
    address: str | None = Field(
        None,
        description=(
            "Ray cluster to join: 'auto' (the cluster this machine belongs to), 'host:port' or "
            "'ray://host:port'. Empty: RAY_ADDRESS if set, else a Ray started on this machine."
        ),
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=4096,
        description=(
            "Ray actors to start. Empty: one per GPU of the cluster, or, on a cluster without "
            "GPUs, one per cpus_per_worker CPUs."
        ),
    )
    gpus_per_worker: float | None = Field(
        None,
        ge=0,
        le=64,
        description="GPUs each actor reserves. Empty: 1 on a cluster with GPUs, else 0.",
    )
    cpus_per_worker: float = Field(
        1.0, gt=0, le=1024, description="CPUs each actor reserves (and its torch threads)."
    )
    compile: bool = Field(
        False,
        description=(
            "torch.compile the denoiser after loading it (opt-in). Each process compiles its own "
            "(every Ray worker, and 'plan --measure'), which takes a minute or more; on a GPU "
            "each denoiser step may then run faster. The numbers may differ from an uncompiled "
            "run's in the last digits, as between two GPUs."
        ),
    )
    max_storage_gb: float = Field(
        250.0,
        gt=0,
        le=1e9,
        description=(
            "Refuse a run whose activation store would grow by more than this many gigabytes "
            "(the plan's bytes per unit times the units still to extract), unless 'auditkit "
            "run --force'."
        ),
    )
    max_hours: float = Field(
        48.0,
        gt=0,
        le=1e6,
        description=(
            "Refuse a run whose extraction is estimated to take more than this many hours "
            "(the rough estimate of 'auditkit plan'), unless 'auditkit run --force'."
        ),
    )
    retries: int = Field(
        3,
        ge=0,
        le=100,
        description=(
            "How often a batch is sent again after the worker running it died (each worker is "
            "restarted as often)."
        ),
    )


__all__ = ["ExecutionSpec"]
