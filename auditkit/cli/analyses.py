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
    from auditkit.spec.audit import BUILTIN_ANALYSES
    from auditkit.spec.gates import BUILTIN_METRICS

    for name in BUILTIN_ANALYSES:
        click.echo(f"{name}  (built in)")
    for name, analysis in slices().items():
        tables = ", ".join(f"{t.path}" for t in analysis.tables) or "no table of its own"
        switch = "" if analysis.listed else f" (on with captions.{name}, not under analyses:)"
        click.echo(f"{name}  {analysis.title}: {analysis.statistic}; writes {tables}{switch}")
        for metric in analysis.gate_metrics:
            click.echo(f"    gate metric {metric.name} ({metric.bound}): {metric.meaning}")
    extra = [m for m in known_metrics() if m not in BUILTIN_METRICS]
    click.echo(f"gate metrics: {', '.join([*BUILTIN_METRICS, *extra])}")
