"""``python -m auditkit`` runs the CLI."""

from auditkit.cli import main

main()
