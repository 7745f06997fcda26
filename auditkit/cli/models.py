"""``auditkit models``: the model families auditkit can audit, with each one's default hook."""

from __future__ import annotations

import click

from auditkit.cli.common import handle_errors


@click.command()
@handle_errors
def models() -> None:
    """List the model families (model.pipeline), their pipelines and default hook points."""
    from auditkit.models.adapters import adapters

    for family, adapter in adapters().items():
        tiny = f"; tiny test model builtin:tiny-{adapter.tiny}" if adapter.tiny else ""
        click.echo(f"{family}  {adapter.title}: {', '.join(adapter.pipeline_classes)}{tiny}")
        click.echo(f"    default hook {adapter.hook_for(None)}: {adapter.hook.reason}")
        click.echo(f"    guidance: {adapter.guidance}")
