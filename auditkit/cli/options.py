"""The arguments and options that several commands share, each declared once.

Each is a decorator (or a function that returns one, where the commands word the help
differently); the commands apply them like any ``click.option``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

spec_argument = click.argument("spec", type=click.Path(path_type=Path))
"""SPEC: the audit spec (YAML) of validate, plan, run and hooks."""

run_dir_argument = click.argument("run_dir", type=click.Path(path_type=Path))
"""RUN_DIR: a run directory that ``auditkit run --out`` made."""

cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where builtin models are built (default ~/.cache/auditkit).",
)
"""The ``--cache-dir`` option shared by the commands that load a model."""

TOYWORLD_VARIANTS = ("biased", "balanced", "reworded")
"""The toyworld checkpoints a command can name with ``--variant``."""


def formats_option(help: str) -> Callable[[F], F]:
    """``--format``, repeatable: the report formats to render (html, pdf)."""
    return click.option(
        "--format",
        "formats",
        multiple=True,
        type=click.Choice(["html", "pdf"]),
        help=help,
    )


def device_option(default: str | None = "cpu", help: str | None = None) -> Callable[[F], F]:
    """``--device``: where the work runs (cpu, cuda, cuda:1, mps); a set default is shown."""
    shown = True if default is not None else None
    return click.option("--device", default=default, show_default=shown, help=help)


def variants_option(help: str) -> Callable[[F], F]:
    """``--variant``, repeatable: which toyworld checkpoints a command works on."""
    return click.option(
        "--variant",
        "variants",
        multiple=True,
        type=click.Choice(TOYWORLD_VARIANTS),
        help=help,
    )
