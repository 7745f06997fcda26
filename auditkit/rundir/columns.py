"""Declared data: every table of a run directory and its columns (the table registry).

One entry per table: folder, schema version, what a row is, and its columns as compact rows
``(names, type, unit, meaning[, optional])``; the analysis slices (:mod:`auditkit.analyses`)
declare theirs in their own modules and add them to the registry when imported (the captioned
outputs' ``outputs``, ``agreement``, ``guidance`` and ``amplification`` too, and the exemplar
thumbnails' ``exemplars``, which the captioning stage writes).
``docs/run-directory.md`` shows these tables (:mod:`auditkit.docgen`), writers refuse
undeclared columns (:meth:`auditkit.rundir.RunDir.write_table`) and readers require the
non-optional ones. A table written before tables were stamped reads as version 1; the
migrations at the end bring older versions up to date.

Version history of the ``results/`` tables: 1, unstamped (auditkit 0.1.0 before the registry);
2, stamped with ``auditkit_schema_version`` (``lean`` gains ``rule`` from ``null_model``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from auditkit.rundir.registry import Registry, Table, columns

if TYPE_CHECKING:
    import pandas as pd


RESULTS_VERSION = 2
"""Schema version of the ``results/`` tables."""
CAPTIONS_VERSION = 1
"""Schema version of the ``captions/`` tables (stamped since they were introduced)."""

CI = "95% interval of `{}`: 2.5% and 97.5% bootstrap quantiles (see Confidence intervals)"
UNIT = (
    ("unit_id", "str", "", "the work unit (as in `activations/index.parquet`)"),
    ("prompt_id", "str", "", "as in prompts.parquet"),
)  # fmt: skip
PROMPT = (
    ("prompt", "str", "", "as in prompts.parquet"),
    ("role, set_name, group, term, template", "str", "", "as in prompts.parquet; a prompt text planned under two selected roles or sets appears once for each, with the same unit_id"),
    ("seed", "int", "", "the unit's seed"),
    ("caption", "str", "", "the captioner's free-text caption (toyworld: \"a photo of a young light man doctor\"; clip: the values read, joined by \", \")"),
)  # fmt: skip
READINGS = (
    ("unit_id, prompt_id, role", "str", "", "as in captions.parquet"),
    ("concept_set", "str", "", "set_name of the prompt (concept set; axis name for axis prompts; `axis/set` for marked prompts)"),
    ("concept", "str", "", "the prompt's term"),
    ("group", "str", "", "axis group (`\"\"` for concept prompts)"),
    ("template", "str", "", "the template the prompt came from"),
    ("seed", "int", "", "the unit's seed"),
    ("attribute", "str", "", "attribute read (toyworld: gender, skin, age, occupation; otherwise the spec's attributes)"),
    ("value", "str", "", "the value read; `unknown` when an image-to-text caption names no value, or several"),
)  # fmt: skip

TABLES = [
    Table("prompts", "results", RESULTS_VERSION, "one row per prompt", columns(
        ("prompt_id", "str", "", "content id of the prompt text (first 16 hex of sha256)"),
        ("prompt", "str", "", "the prompt as sent to the model"),
        ("role", "str", "", "`axis`, `concept`, `marked` (defaults analysis) or `base`"),
        ("set_name", "str", "", "axis or concept-set name (`\"\"` for base)"),
        ("group", "str", "", "axis group (`\"\"` where none)"),
        ("term", "str", "", "the term in the template slot"),
        ("template", "str", "", "the template the prompt came from"),
        ("n_seeds", "int", "seeds", "seeds averaged"),
        ("latent_norm", "float", "h-space", "L2 norm of H(p)"),
    )),
    Table("axes", "results", RESULTS_VERSION, "one row per axis", columns(
        ("axis", "str", "", "axis name"),
        ("groups", "str", "", "group names joined by `,` in spec order"),
        ("n_groups", "int", "", "number of groups"),
        ("positive_group, negative_group", "str", "", "for two-group axes: lean > 0 means towards positive_group; `\"\"` for k-way"),
        ("norm", "float", "h-space", "L2 norm of the axis vector g (0 for k-way)"),
        ("n_prompts", "int", "prompts", "axis prompts used"),
        ("step_consistency", "float", "cosine", "mean pairwise cosine of per-step axes (NaN with one step or k-way)"),
    )),
    Table("lean", "results", RESULTS_VERSION, "one row per (two-group axis, concept)", columns(
        ("axis, concept_set, concept", "str", "", "which concept along which axis"),
        ("positive_group, negative_group", "str", "", "as in axes.parquet"),
        ("cosine", "float", "cosine", "cos(H(c) − R, g), in [−1, 1]"),
        ("projection", "float", "h-space", "(H(c) − m)·ĝ, m the midpoint of the two group means"),
        ("score", "float", "score", "projection / (‖g‖/2): 0 = midpoint, +1 = at the positive group's mean, −1 = at the negative's"),
        ("toward", "str", "", "group the concept leans towards (sign of score)"),
        ("n_seeds", "int", "seeds", "seeds per prompt"),
        ("score_ci_low, score_ci_high", "float", "score", CI.format("score"), True),
        ("cosine_ci_low, cosine_ci_high", "float", "cosine", CI.format("cosine"), True),
        ("loto_min_score, loto_max_score", "float", "score", "smallest and largest `score` when one axis template, or one concept template, is left out in turn (equal to `score` with one template)", True),
        ("cosine_alt_centring", "float", "cosine", "`cosine` with the other centring reference (set mean for a base-prompt audit; the base prompt for a set-mean audit when it was planned, else NaN)", True),
        ("fragile", "bool", "", "the score's sign flips when a template is left out, or the cosine's sign flips with the other centring", True),
        ("rule", "str", "", "the rule the lean was judged by: `min_effect` (default), `labels` or `vocabulary` (see Significance)", True),
        ("min_effect", "float", "score", "the band of the `min_effect` rule (`statistics.min_effect`); NaN under the legacy rules", True),
        ("null_model", "str", "", "`labels` or `vocabulary` under those legacy rules (and in runs made before `rule`)", True),
        ("p_value", "float", "probability", "the rule's p-value (NaN when the lean cannot be tested)", True),
        ("q_value", "float", "probability", "Benjamini–Hochberg adjusted p-value across every row of the table", True),
        ("image_share, image_share_low, image_share_high", "float", "share", "with `captions:`: share of the concept's images read as the axis's first group, with its 95% Wilson interval (NaN where the axis's attribute was not read)", True),
        ("witness", "str", "", "with `captions:`: the lean beside its images: `agree` (a finding, images past parity on its side), `images only` (images wholly beyond 40–60% but no finding: the latent lean is a weak witness), `latent only` (a finding the images do not show: their interval includes 0.5), `opposite`, `neither`; empty where not read", True),
        ("significant", "bool", "", "`min_effect`: `q_value < statistics.alpha` and the score's 95% interval lies wholly beyond ±`min_effect`; legacy rules: `q_value < statistics.alpha` and the cosine's interval excludes 0", True),
    )),
    Table("steps", "results", RESULTS_VERSION, "one row per (two-group axis, concept, step); `per_step` aggregation only", columns(
        ("axis, concept_set, concept", "str", "", "which concept along which axis"),
        ("step", "int", "", "denoising step (0-based, of the kept steps)"),
        ("timestep", "float", "", "scheduler timestep of that step"),
        ("score", "float", "score", "lean score computed from that step's h alone"),
    )),
    Table("step_agreement", "results", RESULTS_VERSION, "one row per (two-group axis, step, step); runs keeping more than one step", columns(
        ("axis", "str", "", "a two-group axis"),
        ("step_a, step_b", "int", "", "denoising step indices"),
        ("timestep_a, timestep_b", "float", "", "the scheduler's timesteps of those steps"),
        ("cosine", "float", "cosine", "cos(g at step_a, g at step_b), each axis from that step's seed-mean latents; `step_consistency` in axes.parquet is the mean off the diagonal"),
    )),
    Table("captions", "captions", CAPTIONS_VERSION, "one row per (captioned prompt, seed)", columns(
        *UNIT, *PROMPT,
    )),
    Table("readings", "captions", CAPTIONS_VERSION, "one row per (captioned prompt, seed, attribute)", columns(
        *READINGS,
    )),
    Table("guidance_readings", "captions", CAPTIONS_VERSION, "guidance sweep only: one row per (scale, concept prompt, seed, attribute)", columns(
        ("guidance", "float", "", "the swept guidance scale"),
        *READINGS,
    )),
]  # fmt: skip

REGISTRY = Registry(TABLES)


@REGISTRY.migration("lean", 1)
def _lean_rule(frame: pd.DataFrame) -> pd.DataFrame:
    """Version 1 lean tables judged by a legacy rule recorded it in ``null_model`` only."""
    if "rule" not in frame.columns and "null_model" in frame.columns:
        frame = frame.assign(rule=frame["null_model"])
    return frame
