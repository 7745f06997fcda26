"""``auditkit analyses``: every analysis an audit can list, with its tables and gate metrics."""

from __future__ import annotations

import click

from auditkit.cli.common import handle_errors


@click.command()
@handle_errors
def analyses() -> None:
    """List the analyses a spec may name under 'analyses:', and the gate metrics they add."""
    from auditkit.analyses import slices
    from auditkit.analyses.checks import known_metrics

    for name, analysis in slices().items():
        tables = ", ".join(f"{t.path}" for t in analysis.tables) or "no table of its own"
        switch = "" if analysis.listed else " (switched on under captions:, not analyses:)"
        click.echo(f"{name}  {analysis.title}: {analysis.statistic}; writes {tables}{switch}")
        for metric in analysis.gate_metrics:
            click.echo(f"    gate metric {metric.name} ({metric.bound}): {metric.meaning}")
    click.echo(f"gate metrics: {', '.join(known_metrics())}")
