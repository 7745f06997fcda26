"""The README stays true: its spec tour parses, and every command in its CLI table exists."""

from __future__ import annotations

import re
from pathlib import Path

import click

from auditkit.cli import main
from auditkit.spec import parse_spec

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_spec_tour_is_a_valid_spec() -> None:
    match = re.search(r"```yaml\n(spec_version.*?)```", README, re.S)
    assert match is not None
    spec = parse_spec(match.group(1))
    assert spec.gates and spec.captions is not None and spec.crossings


def test_every_command_in_the_readme_cli_table_exists() -> None:
    commands = re.findall(r"^\| `auditkit ([a-z-]+(?: [a-z-]+)?)", README, re.M)
    assert len(commands) >= 10
    for text in commands:
        words = text.split()
        command: click.Command | None = main.get_command(click.Context(main), words[0])
        assert command is not None, text
        if isinstance(command, click.Group) and len(words) > 1 and words[1].islower():
            sub = command.get_command(click.Context(command), words[1])
            assert sub is not None, text
