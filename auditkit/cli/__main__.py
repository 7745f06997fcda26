"""``python -m auditkit.cli`` runs the CLI (as ``python -m auditkit`` does)."""

from auditkit.cli import main

main()
