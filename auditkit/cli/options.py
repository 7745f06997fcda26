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


def _path_type(*, exists: bool = False, file_okay: bool = True) -> click.Path:
    """A file or folder given on the command line, passed to the command as a :class:`Path`."""
    return click.Path(path_type=Path, exists=exists, file_okay=file_okay)


class RunLocation(click.ParamType):
    """A run directory: a local folder (a :class:`Path`) or an fsspec URL such as
    ``s3://bucket/runs/a`` (kept as text; the command opens it with
    :func:`auditkit.rundir.remote.local_path`)."""

    name = "path|url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from auditkit.rundir.remote import location

        if isinstance(value, str) and not value.strip():
            self.fail("is empty: name a folder (or a URL) of its own, e.g. runs/my-audit.", param)
        return location(value)


def path_argument(name: str) -> Callable[[F], F]:
    """An argument that names a file or folder (a :class:`Path`)."""
    return click.argument(name, type=_path_type())


def run_location_argument(name: str) -> Callable[[F], F]:
    """An argument that names a run directory, local or at a URL (:class:`RunLocation`)."""
    return click.argument(name, type=RunLocation())


def run_location_option(*param_decls: str, **attrs: Any) -> Callable[[F], F]:
    """An option that names a run directory (or an output folder), local or at a URL."""
    return click.option(*param_decls, type=RunLocation(), **attrs)


def path_option(
    *param_decls: str, exists: bool = False, file_okay: bool = True, **attrs: Any
) -> Callable[[F], F]:
    """An option that names a file or folder (a :class:`Path`; None when it is not given and
    ``attrs`` set no default); ``attrs`` are click's (``help``, ``default``, ``required``...)."""
    return click.option(*param_decls, type=_path_type(exists=exists, file_okay=file_okay), **attrs)


spec_argument = path_argument("spec")
"""SPEC: the audit spec (YAML) of validate, plan, run and hooks."""

run_dir_argument = run_location_argument("run_dir")
"""RUN_DIR: a run directory that ``auditkit run --out`` made (a folder or a URL)."""

cache_dir_option = path_option(
    "--cache-dir",
    help="Where builtin models are built (default ~/.cache/auditkit).",
)
"""The ``--cache-dir`` option shared by the commands that load a model."""

TOYWORLD_VARIANTS = ("biased", "balanced", "reworded", "dit")
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
