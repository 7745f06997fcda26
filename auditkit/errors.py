"""Error types that the CLI turns into one clear paragraph and an exit code.

Exit codes (DESIGN.md): 0 ok, 1 audit gates failed, 2 spec or usage error,
3 runtime failure or missing prerequisite.
"""

from __future__ import annotations


class AuditkitError(Exception):
    """Base class: ``str(err)`` is a complete, user-facing paragraph."""

    exit_code: int = 3

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\nHow to fix: {self.hint}"
        return self.message


class SpecError(AuditkitError):
    """The audit spec (or a CLI argument) is invalid; lists every problem, each located."""

    exit_code = 2

    def __init__(self, problems: list[str], *, source: str = "spec", hint: str | None = None):
        self.problems = list(problems)
        self.source = source
        count = len(self.problems)
        head = f"{source}: {count} problem{'s' if count != 1 else ''} found"
        body = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{head}:\n{body}", hint=hint)


class UsageError(AuditkitError):
    """A command was called with arguments that cannot work (bad path, wrong run dir)."""

    exit_code = 2


class ModelLoadError(AuditkitError):
    """The model named by the spec is missing or is not a loadable diffusers pipeline."""

    exit_code = 2


class PrerequisiteError(AuditkitError):
    """An optional dependency or a device is missing."""

    exit_code = 3


class RuntimeFailure(AuditkitError):
    """Something failed while running a stage; completed work stays on disk."""

    exit_code = 3


class SchemaVersionError(AuditkitError):
    """A file was written by a newer auditkit than this one."""

    exit_code = 3
