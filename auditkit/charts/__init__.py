"""Charts: pure functions from a tidy result table to an Altair chart (Vega-Lite spec).

Each function takes the rows of one table (already filtered to one axis or one concept set) and
returns a chart; it reads nothing else and changes no global Altair state. The report and the
analysis slices both draw with them, so they depend on neither.
"""

from auditkit.charts.axes import band_of, defaults_chart, lean_chart, steps_chart
from auditkit.charts.causal import dose_response_chart
from auditkit.charts.matrices import (
    descriptor_heatmap,
    matrix_labelled,
    similarity_heatmap,
    step_agreement_heatmap,
)
from auditkit.charts.outputs import (
    agreement_chart,
    concept_map_chart,
    corrected_share_chart,
    guidance_chart,
    share_chart,
)
from auditkit.charts.style import (
    BAND_COLOR,
    FONT,
    chart_spec,
    compact_chart,
    finding_text,
    has_interval,
    interval_text,
    share_text,
    unchecked,
)

__all__ = [
    "BAND_COLOR",
    "FONT",
    "agreement_chart",
    "band_of",
    "chart_spec",
    "compact_chart",
    "concept_map_chart",
    "corrected_share_chart",
    "defaults_chart",
    "descriptor_heatmap",
    "dose_response_chart",
    "finding_text",
    "guidance_chart",
    "has_interval",
    "interval_text",
    "lean_chart",
    "matrix_labelled",
    "share_chart",
    "share_text",
    "similarity_heatmap",
    "step_agreement_heatmap",
    "steps_chart",
    "unchecked",
]
