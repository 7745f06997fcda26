"""Stage 1: the declarative audit spec (YAML -> validated, frozen :class:`AuditSpec`)."""

from auditkit.spec.loader import dump_spec, load_spec, parse_spec, spec_hash
from auditkit.spec.models import (
    SPEC_VERSION,
    AuditSpec,
    AxisSpec,
    CentringSpec,
    ConceptSetSpec,
    ModelSpec,
    ProbeSpec,
    ReportSpec,
    StatisticsSpec,
    fill,
)

__all__ = [
    "SPEC_VERSION",
    "AuditSpec",
    "AxisSpec",
    "CentringSpec",
    "ConceptSetSpec",
    "ModelSpec",
    "ProbeSpec",
    "ReportSpec",
    "StatisticsSpec",
    "dump_spec",
    "fill",
    "load_spec",
    "parse_spec",
    "spec_hash",
]
