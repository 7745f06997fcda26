"""Every spec model under one name, for code written before the spec was split into modules.

New code imports from the module that owns a name: :mod:`auditkit.spec.audit` (the audit),
:mod:`~auditkit.spec.sampling` (model, probe), :mod:`~auditkit.spec.vocabulary` (axes,
concepts, crossings, centring, templates), :mod:`~auditkit.spec.statistics`,
:mod:`~auditkit.spec.captions` and :mod:`~auditkit.spec.gates`.
"""

from auditkit.spec.audit import SPEC_VERSION, AuditSpec, ReportFormat, ReportSpec
from auditkit.spec.base import FrozenModel, Name, NonEmptyStr
from auditkit.spec.captions import (
    MAX_CAUSAL_ALPHA,
    MAX_DISCOVERY_NGRAM,
    CaptionerKind,
    CaptionerSpec,
    CaptionRole,
    CaptionsSpec,
    CausalSpec,
    DiscoverySpec,
    ExemplarSpec,
    ThumbnailFormat,
)
from auditkit.spec.gates import GateSpec
from auditkit.spec.sampling import ModelSpec, ProbeSpec
from auditkit.spec.statistics import DEFAULT_MIN_EFFECT, SignificanceRule, StatisticsSpec
from auditkit.spec.vocabulary import (
    MAX_CROSSING_GROUPS,
    AxisSpec,
    CentringSpec,
    ConceptSetSpec,
    CrossingSpec,
    cross_axes,
    fill,
)

__all__ = [
    "DEFAULT_MIN_EFFECT",
    "MAX_CAUSAL_ALPHA",
    "MAX_CROSSING_GROUPS",
    "MAX_DISCOVERY_NGRAM",
    "SPEC_VERSION",
    "AuditSpec",
    "AxisSpec",
    "CaptionRole",
    "CaptionerKind",
    "CaptionerSpec",
    "CaptionsSpec",
    "CausalSpec",
    "CentringSpec",
    "ConceptSetSpec",
    "CrossingSpec",
    "DiscoverySpec",
    "ExemplarSpec",
    "FrozenModel",
    "GateSpec",
    "ModelSpec",
    "Name",
    "NonEmptyStr",
    "ProbeSpec",
    "ReportFormat",
    "ReportSpec",
    "SignificanceRule",
    "StatisticsSpec",
    "ThumbnailFormat",
    "cross_axes",
    "fill",
]
