"""The documented GitHub Actions recipe is valid YAML and every auditkit command and option it
uses exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import yaml

from auditkit.cli import main

RECIPE = Path(__file__).resolve().parents[1] / "docs" / "ci" / "github-actions.yml"


def _auditkit_calls(workflow: dict[str, Any]) -> list[list[str]]:
    calls = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            script = step.get("run")
            if not script:
                continue
            script = re.sub(r"\$\{\{[^}]*\}\}", "X", script)
            for line in script.replace(">\n", " ").splitlines():
                line = line.strip()
                if line.startswith("auditkit "):
                    calls.append(shlex.split(line.replace('"$', '"X').replace("$", "X")))
    return calls


def _resolve(tokens: list[str]) -> tuple[click.Command, list[str]]:
    command: click.Command = main
    rest = tokens[1:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"unknown auditkit command {rest[0]!r} in {tokens}"
        command, rest = sub, rest[1:]
    return command, rest


def test_recipe_is_valid_workflow_yaml() -> None:
    workflow = yaml.safe_load(RECIPE.read_text())
    assert workflow["name"] == "bias-audit"
    steps = workflow["jobs"]["audit"]["steps"]
    uses = [s["uses"] for s in steps if "uses" in s]
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    assert any(u.startswith("actions/checkout@") for u in uses)


def test_every_auditkit_command_and_option_in_the_recipe_exists() -> None:
    calls = _auditkit_calls(yaml.safe_load(RECIPE.read_text()))
    assert {c[1] for c in calls} >= {"validate", "run", "check", "diff", "export"}
    assert ["auditkit", "export", "model-card"] in [c[:3] for c in calls]
    for tokens in calls:
        command, rest = _resolve(tokens)
        known = {opt for p in command.params for opt in getattr(p, "opts", [])}
        for token in rest:
            if token.startswith("--"):
                assert token.split("=")[0] in known, f"{token} is not an option of {tokens[:3]}"
