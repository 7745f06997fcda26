"""The ``auditkit`` command: thin click commands over the library, one module per command group.

Heavy imports (torch, diffusers, pandas) happen inside commands so ``auditkit --help`` is
instant. Exit codes: 0 ok, 1 gates failed, 2 spec or usage error, 3 runtime or prerequisite.

Modules: ``common`` (error handling, shared output), ``options`` (arguments and options that
several commands share), and one per command group: ``spec`` (validate, schema, plan, hooks),
``analyses``, ``run``, ``check``, ``verify``, ``report``, ``diff``, ``export``, ``history``,
``toyworld``, ``calibrate``, ``prompts``.
"""

from __future__ import annotations

import click

from auditkit import __version__
from auditkit.cli import (
    analyses,
    calibrate,
    check,
    diff,
    export,
    history,
    models,
    prompts,
    report,
    run,
    spec,
    sweep,
    toyworld,
    verify,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditkit")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def main(debug: bool) -> None:
    """auditkit: audit what a text-to-image diffusion model has learned about people.

    Write an audit spec (YAML), then `auditkit run SPEC --out RUN_DIR`.
    """


for _command in (
    spec.validate,
    spec.schema,
    spec.plan,
    spec.hooks,
    analyses.analyses,
    models.models,
    run.run,
    sweep.sweep_hooks,
    check.check,
    verify.verify,
    report.report,
    diff.diff,
    export.export,
    history.history,
    toyworld.toyworld,
    calibrate.calibrate,
    prompts.prompts,
):
    main.add_command(_command)

__all__ = ["main"]
