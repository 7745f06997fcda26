"""The ``auditkit`` command: thin click commands over the library.

Heavy imports (torch, diffusers, pandas) happen inside commands so ``auditkit --help`` is
instant. Exit codes: 0 ok, 1 gates failed, 2 spec or usage error, 3 runtime or prerequisite.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from auditkit import __version__
from auditkit.errors import AuditkitError
from auditkit.rundir import RunDir

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    click.echo(f"auditkit: error: {message}", err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Turn auditkit errors into one paragraph and an exit code (traceback with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        try:
            return func(*args, **kwargs)
        except AuditkitError as exc:
            if debug:
                traceback.print_exc()
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted. Completed work is kept; run the same command to resume.", 130)
        except MemoryError:
            _fail("out of memory. Lower batch_size in the spec and rerun to resume.", 3)
        except Exception as exc:
            if debug:
                traceback.print_exc()
            _fail(
                f"unexpected {type(exc).__name__}: {exc}. Completed work is kept in the run "
                "directory; rerun with --debug for a traceback and report it if it persists.",
                3,
            )

    return wrapper  # type: ignore[return-value]


cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where builtin models are built (default ~/.cache/auditkit).",
)
"""The ``--cache-dir`` option shared by the commands that load a model."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditkit")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def main(debug: bool) -> None:
    """auditkit: audit what a text-to-image diffusion model has learned about people.

    Write an audit spec (YAML), then `auditkit run SPEC --out RUN_DIR`.
    """


@main.command()
@click.argument("spec", type=click.Path(path_type=Path))
@handle_errors
def validate(spec: Path) -> None:
    """Check an audit spec and list every problem with its YAML path and line."""
    from auditkit.spec import load_spec

    loaded = load_spec(spec)
    n_axes, n_sets = len(loaded.axes), len(loaded.concepts)
    click.echo(
        f"{spec}: valid (spec_version {loaded.spec_version}, {n_axes} axes, "
        f"{n_sets} concept sets, {len(loaded.seed_list)} seeds)"
    )


@main.command()
def schema() -> None:
    """Print the JSON Schema of the audit spec."""
    import json

    from auditkit.spec import AuditSpec

    click.echo(json.dumps(AuditSpec.model_json_schema(), indent=2))


@main.command()
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--device", default=None, help="Device to estimate time for (default: the spec's).")
@click.option(
    "--rate-from",
    "rate_from",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="A run directory of the same model on the same kind of device: estimate time from "
    "the rate its extraction measured instead of from the model's size.",
)
@cache_dir_option
@handle_errors
def plan(spec: Path, device: str | None, rate_from: Path | None, cache_dir: Path | None) -> None:
    """Show what SPEC will compute: prompts, images, U-Net evaluations, storage, time."""
    from dataclasses import replace

    from auditkit.models.loading import existing_model_folder
    from auditkit.plan import estimate_cost, measured_rate, plan_audit
    from auditkit.progress import format_seconds
    from auditkit.run import default_cache_dir
    from auditkit.spec import load_spec

    loaded = load_spec(spec)
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
            seconds=cost.unet_evaluations * rate,
            seconds_per_evaluation=rate,
            basis=f"measured: {rate * 1e3:.2f} ms per U-Net evaluation in {rate_from}",
        )
    click.echo(f"plan {audit_plan.plan_hash[:16]} for audit '{loaded.name}'")
    click.echo(f"  prompts            {cost.prompts}")
    click.echo(f"  seeds per prompt   {len(loaded.seed_list)}")
    click.echo(f"  images (units)     {cost.images}")
    click.echo(
        f"  U-Net evaluations  {cost.unet_evaluations} "
        f"({cost.forward_passes} forward passes at batch {loaded.batch_size})"
    )
    click.echo(f"  h per step         {'x'.join(str(d) for d in cost.h_shape)}")
    click.echo(f"  activation storage {_bytes(cost.activation_bytes)}")
    from auditkit.passes.cost import later_passes

    passes = later_passes(loaded, audit_plan, cfg_capable=cost.cfg_capable)
    for step in passes:
        bound = "at most " if step.upper_bound else ""
        what = f"{bound}{step.images} images, " if step.images else f"{bound}"
        click.echo(f"  {step.name:<18} {what}{step.unet_evaluations} U-Net evaluations")
    later = sum(p.unet_evaluations for p in passes) * cost.seconds_per_evaluation

    def rough(seconds: float) -> str:
        return format_seconds(seconds) if seconds >= 1 else "under 1s"

    total = rough(cost.seconds) + (f" + {rough(later)} for the later passes" if passes else "")
    quality = "" if rate_from is not None else "rough: "
    click.echo(f"  estimated time     {total} on {target} ({quality}{cost.basis})")


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"


@main.command()
@click.argument("spec", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Run directory (created; an existing one is resumed).",
)
@cache_dir_option
@click.option("--no-progress", is_flag=True, help="Do not print progress.")
@handle_errors
def run(spec: Path, out_dir: Path, cache_dir: Path | None, no_progress: bool) -> None:
    """Run every stage of SPEC into RUN_DIR; completed units are never redone."""
    from auditkit.run import run_audit

    outcome = run_audit(spec, out_dir, cache_dir=cache_dir, show_progress=not no_progress)
    extract = outcome.manifest["stages"].get("extract", {})
    click.echo(
        f"extracted {extract.get('units_run', 0)} units, reused "
        f"{extract.get('units_skipped', 0)} ({extract.get('unet_evaluations', 0)} U-Net "
        f"evaluations)"
    )
    for path in outcome.report_paths:
        click.echo(f"report: {path.resolve()}")
    click.echo(f"results: {RunDir(outcome.run_dir).results.resolve()}")
    _exit_on_gates(outcome.run_dir)


def _exit_on_gates(run_dir: Path) -> None:
    """Print every gate's outcome; exit 1 when one failed."""
    run = RunDir(run_dir)
    if not run.gates.is_file():
        return
    record = run.read_json("gates")
    for gate in record["gates"]:
        click.echo(("PASS  " if gate["passed"] else "FAIL  ") + gate["message"])
    click.echo(f"junit: {run.junit.resolve()}")
    if not record["passed"]:
        click.echo(f"auditkit: {record['failed']} of {record['total']} gates failed.", err=True)
        sys.exit(1)


def _require_results(run_dir: Path) -> None:
    """A UsageError unless RUN_DIR's analysis finished."""
    from auditkit.errors import UsageError

    if not RunDir(run_dir).is_finished():
        raise UsageError(
            f"{str(run_dir)!r} has no results yet (the run did not finish its analysis).",
            hint=f"run 'auditkit run SPEC --out {run_dir}' to resume it.",
        )


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--junit",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the JUnit XML here (default: RUN_DIR/results/junit.xml only).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the gates JSON here (default: RUN_DIR/results/gates.json only).",
)
@handle_errors
def check(run_dir: Path, junit: Path | None, json_out: Path | None) -> None:
    """Evaluate the gates of RUN_DIR's spec on its results; exit 1 if one fails."""
    import shutil

    from auditkit.analyze.summary import read_results
    from auditkit.errors import UsageError
    from auditkit.gates import evaluate_gates, write_gate_files
    from auditkit.run import load_run_spec

    spec = load_run_spec(run_dir)
    _require_results(run_dir)
    if not spec.gates:
        raise UsageError(
            f"{run_dir / 'spec.yaml'}: the audit has no gates to check.",
            hint="add a 'gates:' list to the spec (see 'auditkit schema') and run it again.",
        )
    results, summary = read_results(run_dir)
    outcomes = evaluate_gates(spec, results.tables)
    json_path, xml_path = write_gate_files(
        run_dir, outcomes, suite=spec.name, run_id=str(summary.get("run_id"))
    )
    for target, source in ((junit, xml_path), (json_out, json_path)):
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    _exit_on_gates(run_dir)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(["html", "pdf"]),
    help="Formats to render (default: the spec's).",
)
@handle_errors
def report(run_dir: Path, formats: tuple[str, ...]) -> None:
    """Re-render the report of RUN_DIR from its stored results."""
    from auditkit.report import render_report
    from auditkit.run import load_run_spec

    spec = load_run_spec(run_dir)
    _require_results(run_dir)
    for path in render_report(run_dir, list(formats) or list(spec.report.formats)):
        click.echo(f"report: {path}")


@main.command()
@click.argument("base_run", type=click.Path(path_type=Path))
@click.argument("new_run", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for diff.html, diff.pdf, diff.json and junit.xml.")  # fmt: skip
@click.option(
    "--tolerance",
    type=float,
    default=None,
    help="Growth of |lean score| beyond which a lean counts as a regression (default: the "
    "runs' band, statistics.min_effect, when both were judged by the min_effect rule; else "
    "0.05).",
)
@click.option(
    "--max-growth",
    type=float,
    default=None,
    help="Gate: fail (exit 1) when any |lean score| grows by more than this.",
)
@click.option(
    "--max-regressions",
    type=int,
    default=None,
    help="Gate: fail (exit 1) when there are more regressions than this.",
)
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(["html", "pdf"]),
    help="Report formats (default: html and pdf).",
)
@click.option(
    "--allow-different-specs",
    is_flag=True,
    help="Compare runs whose specs measure differently (normally refused).",
)
@handle_errors
def diff(
    base_run: Path,
    new_run: Path,
    out_dir: Path,
    tolerance: float | None,
    max_growth: float | None,
    max_regressions: int | None,
    formats: tuple[str, ...],
    allow_different_specs: bool,
) -> None:
    """Compare the audits of two checkpoints (BASE_RUN, NEW_RUN) made with the same spec."""
    from auditkit.diff import diff_runs
    from auditkit.report.diff_report import render_diff

    result = diff_runs(
        base_run,
        new_run,
        tolerance=tolerance,
        max_growth=max_growth,
        max_regressions=max_regressions,
        allow_different_specs=allow_different_specs,
    )
    paths = render_diff(
        result,
        base_run,
        new_run,
        out_dir,
        tolerance=result.tolerance,
        formats=list(formats) or ["html", "pdf"],
    )
    regressions = result.regressions
    click.echo(
        f"{len(regressions)} regressions, {int(result.table['improvement'].sum())} improvements"
    )
    for row in regressions.itertuples():
        click.echo(
            f"  regression: '{row.concept}' on '{row.axis}' {row.score_base:+.3f} -> "
            f"{row.score_new:+.3f}"
        )
    for gate in result.gates:
        click.echo(("PASS  " if gate["passed"] else "FAIL  ") + gate["message"])
    for path in paths:
        click.echo(f"wrote: {path.resolve()}")
    if not result.passed:
        sys.exit(1)


@main.command()
@click.argument("spec", type=click.Path(path_type=Path))
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


@main.group()
def export() -> None:
    """Export a run's results for other documents (model cards)."""


@export.command("model-card")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the card (default: RUN_DIR/report/model-card.md).",
)
@handle_errors
def export_model_card(run_dir: Path, out: Path | None) -> None:
    """Write a model-card section with model-index evaluation results for RUN_DIR."""
    from auditkit.export import write_model_card

    path = write_model_card(run_dir, out or run_dir / "report" / "model-card.md")
    click.echo(f"model card: {path.resolve()}")


@main.group()
def toyworld() -> None:
    """Train and evaluate toyworld, the small model with planted biases."""


@toyworld.command("train")
@click.option(
    "--out",
    "out_root",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for the checkpoints (default: the package's shipped ones).",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    type=click.Choice(["biased", "balanced", "reworded"]),
    help="Which checkpoints to train (default: biased and balanced; reworded, the "
    "calibration suite's second world, on request).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of every random choice.")
@click.option("--steps", default=4800, show_default=True, help="Denoiser training steps.")
@click.option("--vae-steps", default=1200, show_default=True, help="VAE training steps.")
@click.option(
    "--captioner-steps",
    default=600,
    show_default=True,
    help="Captioner training steps (0: keep the existing captioner).",
)
@click.option(
    "--vae-from",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Reuse the VAE of this checkpoint folder instead of training one.",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Device for the denoiser training (cpu, cuda, cuda:1, ...).",
)
@click.option("--threads", default=2, show_default=True, help="CPU threads torch may use.")
@handle_errors
def toyworld_train(
    out_root: Path | None,
    variants: tuple[str, ...],
    seed: int,
    steps: int,
    vae_steps: int,
    captioner_steps: int,
    vae_from: Path | None,
    device: str,
    threads: int,
) -> None:
    """Render the world and train captioner, VAE, text encoder and U-Net (CPU by default)."""
    from auditkit.toyworld.build import PACKAGE_CHECKPOINTS, train_toyworld
    from auditkit.toyworld.captioner import save_captioner, train_captioner
    from auditkit.toyworld.train import TrainConfig

    root = out_root or PACKAGE_CHECKPOINTS
    chosen = tuple(variants) or ("biased", "balanced")
    if captioner_steps:
        from auditkit.toyworld.world import reader_of

        # one reader per world drawn: the reworded world's skirts take the occupation's colour
        worlds = {reader_of(v): "occupation" if v == "reworded" else "trousers" for v in chosen}
        for name, skirt in worlds.items():
            captioner, metrics = train_captioner(
                steps=captioner_steps, seed=seed, num_threads=1, skirt=skirt, captioner_id=name
            )
            save_captioner(captioner, root / name)
            click.echo(f"{name}: held-out accuracy {metrics}")
    from auditkit.models.loading import resolve_device

    device = resolve_device(device)
    config = TrainConfig(
        seed=seed, steps=steps, vae_steps=vae_steps, device=device, threads=threads
    )
    trained = train_toyworld(root, variants=chosen, config=config, vae_from=vae_from)  # type: ignore[arg-type]
    for variant, folder in trained.items():
        click.echo(f"{variant}: {folder}")


@toyworld.command("evaluate")
@click.option(
    "--checkpoints",
    "root",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder holding toyworld-* checkpoints (default: the shipped ones).",
)
@click.option(
    "--guidance",
    default=4.0,
    show_default=True,
    help="The audit's guidance scale (amplification is measured there).",
)
@click.option("--steps", default=10, show_default=True, help="DDIM sampling steps.")
@click.option(
    "--audit",
    "audits",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Audit spec of a toyworld checkpoint to run and score against the planted "
    "rates (repeatable).",
)
@click.option(
    "--runs",
    type=click.Path(path_type=Path),
    default=Path("runs"),
    show_default=True,
    help="Where the audits' run directories go.",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    type=click.Choice(["biased", "balanced", "reworded"]),
    help="Checkpoints to measure (default: both).",
)
@click.option("--audits-only", is_flag=True, help="Only run and score the --audit specs.")
@click.option("--device", default="cpu", show_default=True, help="Device for the sampling.")
@click.option(
    "--rate-seeds",
    default=128,
    show_default=True,
    help="Seeds per occupation for the output rates (guidance 1 and the audit's).",
)
@handle_errors
def toyworld_evaluate(
    root: Path | None,
    guidance: float,
    steps: int,
    audits: tuple[Path, ...],
    runs: Path,
    variants: tuple[str, ...],
    audits_only: bool,
    device: str,
    rate_seeds: int,
) -> None:
    """Measure prompt following, output rates and audit recovery; refresh the model cards."""
    import json

    from auditkit.models.loading import resolve_device
    from auditkit.toyworld.build import PACKAGE_CHECKPOINTS, VARIANTS, checkpoint_path
    from auditkit.toyworld.card import write_model_card
    from auditkit.toyworld.evaluate import evaluate_folder, score_audit

    device = resolve_device(device)
    root = root or PACKAGE_CHECKPOINTS
    for variant in () if audits_only else (variants or VARIANTS):
        folder = checkpoint_path(variant, root)  # type: ignore[arg-type]
        if folder.is_dir():
            evaluate_folder(
                folder,
                root / "toyworld-captioner",
                guidance,
                steps,
                device=device,
                rate_seeds=rate_seeds,
            )
            click.echo(f"{variant}: measured {folder / 'quality.json'}")
    for spec in audits:
        folder, record = score_audit(spec, runs, root)
        quality_path = folder / "quality.json"
        quality = json.loads(quality_path.read_text()) if quality_path.is_file() else {}
        quality["audit"] = record
        quality_path.write_text(json.dumps(quality, indent=2) + "\n")
        click.echo(f"{folder.name}: audit recovery {record['recovery']}")
    for variant in (*VARIANTS, "reworded"):
        folder = checkpoint_path(variant, root)
        if folder.is_dir():
            click.echo(f"model card: {write_model_card(folder)}")


if __name__ == "__main__":  # pragma: no cover
    main()


def _register_command_groups() -> None:
    """Command groups that live in modules of their own."""
    from auditkit.cli_calibrate import calibrate

    main.add_command(calibrate)


_register_command_groups()
