"""The stages of one run, in the order :func:`auditkit.run.run_audit` calls them: extraction,
captioning, the guidance sweep, the causal check, discovery, grounding and the analysis. Each
takes the run's :class:`Stages` (spec, plan, run folder, manifest and executor) and records
itself in the manifest; ``run.py`` keeps the order, the lock and the seal."""

from auditkit.stages.analysis import analysis_inputs, analyze
from auditkit.stages.context import Stages
from auditkit.stages.extraction import extract
from auditkit.stages.grounding import ground, grounding_images
from auditkit.stages.images import caption, causal, discover, guidance

__all__ = [
    "Stages",
    "analysis_inputs",
    "analyze",
    "caption",
    "causal",
    "discover",
    "extract",
    "ground",
    "grounding_images",
    "guidance",
]
