"""``auditkit calibrate``: the calibration suite that scores every significance rule against
what the known-answer models draw (docs/method.md, "Calibration")."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.common import handle_errors
from auditkit.cli.options import device_option, path_option

DEFAULT_SEEDS = "16,32,64,128"


@click.group()
def calibrate() -> None:
    """Measure the truth of the calibration models, and score every rule against it."""


@calibrate.command("truth")
@click.argument("scenario")
@click.option("--seeds", default=512, show_default=True, help="Images per concept.")
@device_option()
@handle_errors
def calibrate_truth(scenario: str, seeds: int, device: str) -> None:
    """Sample a stored scenario's model at many seeds, read every image with the model's own
    reader, and store the shares as truth.json beside the model's weights."""
    from auditkit.calibration.suite import SCENARIO_DIR, scenario_model_folder, stored_scenarios
    from auditkit.calibration.truth import toyworld_truth
    from auditkit.errors import UsageError
    from auditkit.spec import load_spec
    from auditkit.toyworld.build import PACKAGE_CHECKPOINTS

    if scenario not in stored_scenarios():
        raise UsageError(
            f"no stored scenario {scenario!r}.",
            hint=f"choose one of: {', '.join(stored_scenarios())}.",
        )
    spec = load_spec(SCENARIO_DIR / f"{scenario}.yaml")
    folder = scenario_model_folder(spec)
    attributes = {
        axis.name: tuple(list(axis.groups)[:2])
        for axis in spec.analysis_axes
        if len(axis.groups) == 2
    }
    from auditkit.toyworld.world import reader_of, words_of

    variant = folder.name.removeprefix("toyworld-")
    path = toyworld_truth(
        folder,
        Path(PACKAGE_CHECKPOINTS) / reader_of(variant),
        words=words_of(variant),
        templates=spec.concepts[0].templates,
        concepts=spec.concepts[0].terms,
        attributes=attributes,  # type: ignore[arg-type]
        seeds=seeds,
        guidance_scale=spec.model.guidance_scale,
        steps=spec.model.steps,
        device=device,
    )
    click.echo(f"truth: {path}")


@calibrate.command("run")
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    help="Scenarios to score (default: every stored one and both synthetic ones).",
)
@click.option("--seeds", "seed_counts", default=DEFAULT_SEEDS, show_default=True)
@click.option(
    "--replicates",
    default=8,
    show_default=True,
    help="Disjoint seed replicates per seed count at most (stored scenarios), simulated audits "
    "per seed count (synthetic ones).",
)
@path_option(
    "--work",
    default=Path("runs/calibration"),
    show_default=True,
    help="Folder for the scenarios' activation stores (resumable) and the results.",
)
@click.option("--quick", is_flag=True, help="Synthetic scenarios only, few replicates.")
@click.option(
    "--method",
    "methods",
    multiple=True,
    help="A rule to score, by its name in the table (repeatable; default: every one).",
)
@handle_errors
def calibrate_run(
    scenarios: tuple[str, ...],
    seed_counts: str,
    replicates: int,
    work: Path,
    quick: bool,
    methods: tuple[str, ...],
) -> None:
    """Judge disjoint seed replicates of every scenario with every rule, and write the rates
    (calibration.md and .parquet) and the lean-to-share mapping under --work."""
    from auditkit.calibration.report import run_suite
    from auditkit.calibration.suite import METHODS
    from auditkit.errors import UsageError

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UsageError(
            f"unknown --method {', '.join(map(repr, unknown))}.",
            hint=f"choose among: {', '.join(map(repr, METHODS))}.",
        )

    counts = [int(s) for s in seed_counts.split(",") if s.strip()]
    paths = run_suite(
        work,
        scenarios=list(scenarios) or None,
        seed_counts=counts,
        replicates=replicates,
        quick=quick,
        methods=methods or tuple(METHODS),
        echo=click.echo,
    )
    for path in paths:
        click.echo(f"wrote {path}")


@calibrate.command("table")
@click.argument("calls", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@path_option(
    "--work",
    default=Path("runs/calibration"),
    show_default=True,
    help="Folder to write the merged results to (calibration.md, .parquet, mapping.json).",
)
@handle_errors
def calibrate_table(calls: tuple[Path, ...], work: Path) -> None:
    """Merge the calls.parquet of several 'calibrate run's (each judging other scenarios) into
    one table and mapping, written under --work as 'calibrate run' writes them."""
    from auditkit.calibration.report import merge_calls

    for path in merge_calls(list(calls), work):
        click.echo(f"wrote {path}")


@calibrate.command("captioner")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@path_option(
    "--out",
    file_okay=False,
    help="Folder to write the confusion and accuracy tables to (CSV, and calibration.json).",
)
@handle_errors
def calibrate_captioner(spec_path: Path, out: Path | None) -> None:
    """Read the spec's calibration set (captions.calibration) with its captioner and print the
    captioner's confusion and accuracy per group. Exits 1 when a confusion matrix is too close
    to singular for the output shares to be corrected."""
    import json
    import sys

    from auditkit.analyses.checks import load_checked_spec
    from auditkit.caption.stage import captioner_record, load_spec_captioner
    from auditkit.errors import UsageError
    from auditkit.passes.calibration import measure_reader

    spec = load_checked_spec(spec_path)
    if spec.captions is None:
        raise UsageError(
            f"{spec_path}: the spec has no captions section, so no captioner to calibrate.",
            hint="add captions: {captioner: ..., calibration: {folder: DIR}}.",
        )
    captioner = load_spec_captioner(spec.captions.captioner)
    record = captioner_record(spec.captions.captioner, captioner)
    found = measure_reader(spec, captioner, record)
    click.echo(
        f"captioner {record['id']} (sha256 {str(record['sha256'])[:12]}…) on "
        f"{found.record['source']}: {found.record['n_images']} images"
    )
    refused = []
    for attribute, part in found.accuracy.groupby("attribute", sort=False):
        click.echo(f"\n{attribute}: separation {float(part['separation'].iloc[0]):.3f}")
        for row in part.to_dict("records"):
            click.echo(
                f"  {row['group']:<16} accuracy {float(row['accuracy']):6.1%} "
                f"[{float(row['accuracy_low']):.1%}, {float(row['accuracy_high']):.1%}] "
                f"of {int(row['n_images'])} images ({int(row['n_unread'])} read as no group)"
            )
        matrix = found.confusion[found.confusion["attribute"] == attribute]
        for true_group, rows in matrix.groupby("true_group", sort=False):
            cells = ", ".join(f"{r['read_as']} {float(r['rate']):.3f}" for _, r in rows.iterrows())
            click.echo(f"    labelled {true_group}: read as {cells}")
        if not bool(part["usable"].iloc[0]):
            refused.append(str(attribute))
            click.echo(f"  NOT USABLE for correction: {part['note'].iloc[0]}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        found.confusion.to_csv(out / "reader_confusion.csv", index=False)
        found.accuracy.to_csv(out / "reader_accuracy.csv", index=False)
        (out / "calibration.json").write_text(json.dumps(found.record, indent=2) + "\n")
        click.echo(f"\nwrote {out / 'reader_confusion.csv'}, {out / 'reader_accuracy.csv'}")
    if refused:
        click.echo(
            f"auditkit: the captioner's confusion on {', '.join(refused)} is too close to "
            "singular: an audit would report those shares raw.",
            err=True,
        )
        sys.exit(1)
