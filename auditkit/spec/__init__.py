"""Stage 1: the declarative audit spec (YAML -> validated, frozen :class:`AuditSpec`)."""

from auditkit.spec.audit import SPEC_VERSION, AuditSpec, ReportSpec
from auditkit.spec.loader import dump_spec, load_run_spec, load_spec, parse_spec, spec_hash
from auditkit.spec.sampling import ModelSpec, ProbeSpec
from auditkit.spec.statistics import StatisticsSpec
from auditkit.spec.vocabulary import AxisSpec, CentringSpec, ConceptSetSpec, fill

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
    "load_run_spec",
    "load_spec",
    "parse_spec",
    "spec_hash",
]
