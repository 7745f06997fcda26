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
    for use in loaded.libraries:
        click.echo(
            f"  {use.used_in} {use.name}: {use.library}@{use.version} "
            f"({use.terms} terms, sha256:{use.sha256[:12]})"
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
    # a concept set or an axis may also be a prompt-library entry, expanded before validation
    from auditkit.spec.libraries import AxisLibraryEntry, ConceptLibraryEntry

    for key, entry, plain in (
        ("concepts", ConceptLibraryEntry, "ConceptSetSpec"),
        ("axes", AxisLibraryEntry, "AxisSpec"),
    ):
        schema["$defs"][entry.__name__] = entry.model_json_schema()
        schema["properties"][key]["items"] = {
            "anyOf": [{"$ref": f"#/$defs/{plain}"}, {"$ref": f"#/$defs/{entry.__name__}"}]
        }
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
@click.option(
    "--measure",
    is_flag=True,
    help="Load the model and time real passes on this machine (about two batches), then "
    "estimate every sampling stage from them.",
)
@cache_dir_option
@handle_errors
def plan(
    spec: Path, device: str | None, rate_from: Path | None, measure: bool, cache_dir: Path | None
) -> None:
    """Show what SPEC will compute: prompts, images, denoiser evaluations, storage, time."""
    from dataclasses import replace

    from auditkit.analyses.checks import load_checked_spec
    from auditkit.errors import UsageError
    from auditkit.estimate import estimate_cost, measured_rate
    from auditkit.layout import kept_step_count, resolve_spec
    from auditkit.models.loading import existing_model_folder
    from auditkit.plan import plan_audit
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
    measured = None
    if measure:
        from auditkit.passes.measure import measure_rates

        if rate_from is not None:
            raise UsageError("--measure and --rate-from both set the rate: pass one of them.")
        if device is not None:
            model = loaded.model.model_copy(update={"device": device})
            loaded = loaded.model_copy(update={"model": model})
        measured = measure_rates(loaded, audit_plan, cache_dir or default_cache_dir())
        target = measured.device
        images = (
            f", {measured.per_image * 1e3:.0f} ms per image decoded and read"
            if loaded.captions is not None
            else ""
        )
        cost = replace(
            cost,
            seconds=cost.denoiser_evaluations * measured.per_evaluation,
            seconds_per_evaluation=measured.per_evaluation,
            basis=f"measured here: {measured.per_evaluation * 1e3:.2f} ms per denoiser "
            f"evaluation at batch {measured.batch}{images}; the measurement took "
            f"{measured.seconds:.0f}s",
        )
    elif rate_from is not None:
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
        work = f"{step.denoiser_evaluations} denoiser evaluations"
        if step.images and not step.denoiser_evaluations:
            work = "decoded as extraction samples them, no denoiser evaluations of their own"
        click.echo(f"  {step.name:<21} {what}{work}")
    per_image = measured.per_image if measured is not None else 0.0
    later = sum(
        p.denoiser_evaluations * cost.seconds_per_evaluation + p.images * per_image for p in passes
    )

    def rough(seconds: float) -> str:
        return format_seconds(seconds) if seconds >= 1 else "under 1s"

    total = rough(cost.seconds) + (f" + {rough(later)} for the later passes" if passes else "")
    if measured is not None:
        whole = measured.load_seconds + cost.seconds + later
        total += f" + {rough(measured.load_seconds)} loading = {rough(whole)}"
    quality = "" if rate_from is not None or measured is not None else "rough: "
    click.echo(f"  estimated time        {total} on {target} ({quality}{cost.basis})")
    if measured is None and rate_from is None:
        click.echo(
            "  (the rough estimate scales public figures by the model's size and can be off "
            "by 10x or more; --measure times real passes here)"
        )
    else:
        click.echo("  (sampling stages only: the analysis and the report come on top)")


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
