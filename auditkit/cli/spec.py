"""The commands that read an audit spec without running it: ``validate``, ``schema``, ``plan``
and ``hooks``."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.common import handle_errors
from auditkit.cli.options import cache_dir_option, device_option, path_option, spec_argument


@click.command()
@spec_argument
@handle_errors
def validate(spec: Path) -> None:
    """Check an audit spec and list every problem with its YAML path and line."""
    from auditkit.analyses.checks import load_checked_spec

    loaded = load_checked_spec(spec)
    n_axes, n_sets = len(loaded.axes), len(loaded.concepts)
    click.echo(
        f"{spec}: valid (spec_version {loaded.spec_version}, {n_axes} axes, "
        f"{n_sets} concept sets, {len(loaded.seed_list)} seeds)"
    )


@click.command()
def schema() -> None:
    """Print the JSON Schema of the audit spec."""
    import json

    from auditkit.analyses.checks import known_analyses, known_metrics
    from auditkit.spec import AuditSpec

    schema = AuditSpec.model_json_schema()
    # the names the analysis slices add are known here, above the spec
    schema["properties"]["analyses"]["items"]["enum"] = list(known_analyses())
    schema["$defs"]["GateSpec"]["properties"]["metric"]["enum"] = list(known_metrics())
    from auditkit.models.adapters import families

    schema["$defs"]["ModelSpec"]["properties"]["pipeline"]["enum"] = ["auto", *families()]
    click.echo(json.dumps(schema, indent=2))


@click.command()
@spec_argument
@device_option(None, help="Device to estimate time for (default: the spec's).")
@path_option(
    "--rate-from",
    "rate_from",
    file_okay=False,
    help="A run directory of the same model on the same kind of device: estimate time from "
    "the rate its extraction measured instead of from the model's size.",
)
@cache_dir_option
@handle_errors
def plan(spec: Path, device: str | None, rate_from: Path | None, cache_dir: Path | None) -> None:
    """Show what SPEC will compute: prompts, images, denoiser evaluations, storage, time."""
    from dataclasses import replace

    from auditkit.analyses.checks import load_checked_spec
    from auditkit.models.loading import existing_model_folder
    from auditkit.plan import (
        estimate_cost,
        kept_step_count,
        measured_rate,
        plan_audit,
        resolve_spec,
    )
    from auditkit.progress import format_seconds
    from auditkit.run import default_cache_dir

    loaded = resolve_spec(load_checked_spec(spec), cache_dir or default_cache_dir())
    audit_plan = plan_audit(loaded)
    model_dir = existing_model_folder(loaded.model, cache_dir or default_cache_dir())
    target = device or loaded.model.device
    if target == "auto":
        from auditkit.models.loading import resolve_device

        target = f"{resolve_device('auto')} (auto: this machine)"
    cost = estimate_cost(loaded, audit_plan, device=target.split(" ")[0], model_dir=model_dir)
    if rate_from is not None:
        rate = measured_rate(rate_from, loaded, cost.device)
        cost = replace(
            cost,
            seconds=cost.denoiser_evaluations * rate,
            seconds_per_evaluation=rate,
            basis=f"measured: {rate * 1e3:.2f} ms per denoiser evaluation in {rate_from}",
        )
    click.echo(f"plan {audit_plan.plan_hash[:16]} for audit '{loaded.name}'")
    click.echo(f"  prompts               {cost.prompts}")
    click.echo(f"  seeds per prompt      {len(loaded.seed_list)}")
    click.echo(f"  images (units)        {cost.images}")
    click.echo(
        f"  denoiser evaluations  {cost.denoiser_evaluations} "
        f"({cost.forward_passes} forward passes at batch {loaded.batch_size})"
    )
    click.echo(f"  h per step            {'x'.join(str(d) for d in cost.h_shape)}")
    layout = cost.layout
    if layout is not None:
        stored = f"{len(layout.snapshots)} of {kept_step_count(loaded)} kept steps"
        stored += " + their mean" if layout.with_mean else ""
        click.echo(
            f"  stored per unit       {_bytes(layout.bytes_per_unit)} ({stored}, {layout.dtype})"
        )
    click.echo(f"  activation storage    {_bytes(cost.activation_bytes)}")
    from auditkit.passes.cost import later_passes

    passes = later_passes(loaded, audit_plan, cfg_capable=cost.cfg_capable)
    for step in passes:
        bound = "at most " if step.upper_bound else ""
        what = f"{bound}{step.images} images, " if step.images else f"{bound}"
        click.echo(f"  {step.name:<21} {what}{step.denoiser_evaluations} denoiser evaluations")
    later = sum(p.denoiser_evaluations for p in passes) * cost.seconds_per_evaluation

    def rough(seconds: float) -> str:
        return format_seconds(seconds) if seconds >= 1 else "under 1s"

    total = rough(cost.seconds) + (f" + {rough(later)} for the later passes" if passes else "")
    quality = "" if rate_from is not None else "rough: "
    click.echo(f"  estimated time        {total} on {target} ({quality}{cost.basis})")


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"


@click.command()
@spec_argument
@click.option("--filter", "pattern", default="", help="Only paths containing this text.")
@cache_dir_option
@handle_errors
def hooks(spec: Path, pattern: str, cache_dir: Path | None) -> None:
    """List the module paths of SPEC's pipeline that probe.hook can name."""
    from auditkit.extract.hooks import hook_candidates
    from auditkit.models.loading import load_pipeline
    from auditkit.run import default_cache_dir
    from auditkit.spec import load_spec

    loaded = load_pipeline(load_spec(spec).model, cache_dir=cache_dir or default_cache_dir())
    for name in hook_candidates(loaded.pipe.components):
        if pattern in name:
            click.echo(name)
