"""How uncertainty is estimated and what counts as a finding (:class:`StatisticsSpec`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from auditkit.spec.base import FrozenModel

SignificanceRule = Literal["min_effect", "labels", "vocabulary"]
JudgedEffect = Literal["auto", "score", "marked_position"]

DEFAULT_MIN_EFFECT = 0.3
"""Default half-width of the equivalence band, in lean-score units (docs/method.md, "Choosing
the band": on the calibration models a lean of 0.3 went with images about 10 points from
parity, between the null-sized 5 and the large 20)."""

DEFAULT_POSITION_BAND = 0.2
"""Default ``min_position``: the band when the judged effect is the position between marked
variants (docs/method.md, "The position between marked variants": null-sized pairs reached
0.18 on the calibration models, large ones started at 0.36)."""


class StatisticsSpec(FrozenModel):
    """How uncertainty is estimated and what counts as a finding."""

    bootstrap_resamples: int = Field(
        1000,
        ge=0,
        le=100_000,
        description="Bootstrap resamples for confidence intervals (0 turns them off, and with "
        "them the min_effect rule's test).",
    )
    seed: int = Field(0, ge=0, description="Seed of the bootstrap's random generator.")
    resampling: Literal["hierarchical", "seeds"] = Field(
        "hierarchical",
        description="What one bootstrap resample draws again: 'hierarchical' draws the seeds, "
        "the templates (shared between lists with the same templates) and each group's terms, "
        "so that intervals carry the wording as well as the noise; 'seeds' draws the seeds "
        "only.",
    )
    interval: Literal["centred", "percentile"] = Field(
        "centred",
        description="How a 95% interval is read off the bootstrap's resamples. 'centred' "
        "(default): their spread from their 2.5th to their 97.5th percentile, placed around "
        "the estimate (each percentile minus their median, added to the estimate), so an "
        "interval always holds the estimate it goes with. 'percentile': the percentiles "
        "themselves, as in runs made before this setting; a resample averages fewer templates "
        "and terms than the estimate, which can put that interval beside its own estimate "
        "where the wording moves the axis more than the concepts lean (docs/method.md).",
    )
    alpha: float = Field(
        0.05,
        gt=0.0,
        lt=1.0,
        description="False discovery rate for calling a lean a finding (Benjamini-Hochberg "
        "across every axis and concept of the audit).",
    )
    rule: SignificanceRule = Field(
        "min_effect",
        description="What makes a lean a finding. 'min_effect' (default): the lean score is "
        "beyond the equivalence band ±min_effect with 95% confidence, after "
        "Benjamini-Hochberg correction; seeds then change the precision, not the verdict on a "
        "lean smaller than the band. 'labels' and 'vocabulary' are the rules of runs made "
        "before it (any lean reproducible across seeds; |cosine| above null axes made from "
        "the audit's own concepts) and are kept to reproduce them: docs/method.md measures "
        "why neither is the default.",
    )
    min_effect: float = Field(
        DEFAULT_MIN_EFFECT,
        ge=0.0,
        le=10.0,
        description="Smallest lean score that matters (half-width of the equivalence band "
        "around 0, in the units of the lean score: ±1 is the distance from the midpoint to a "
        "group's latent). The report shows what share skew a lean of this size went with on "
        "the calibration models.",
    )
    effect: JudgedEffect = Field(
        "auto",
        description="The statistic the min_effect rule judges against its band. 'score': the "
        "lean score, the concept's offset from the midpoint of the two groups' latents, "
        "judged against min_effect. 'marked_position': where the concept's latent sits "
        "between its two marked variants ('a man doctor', 'a woman doctor'), from -1 at the "
        "second group's to +1 at the first's, judged against min_position; the concept's own "
        "offset cancels, since both variants carry it. It needs the defaults analysis and "
        "every two-group axis marked (defaults: true). 'auto' (default): the position where the "
        "spec marks every two-group axis and runs the defaults analysis (as a spec does unless "
        "it turns them off), else the score. The lean table records which was judged "
        "(docs/method.md measures both).",
    )
    min_position: float = Field(
        DEFAULT_POSITION_BAND,
        ge=0.0,
        le=1.0,
        description="Smallest position between marked variants that matters (the band when "
        "the judged effect is marked_position; ±1 is a marked variant). Null-sized pairs of "
        "the calibration models reached 0.18, large ones started at 0.36.",
    )
    null_model: Literal["labels", "vocabulary"] | None = Field(
        None,
        description="Legacy name of the rule, from specs written before 'rule': when set and "
        "'rule' is not, the rule is this null model.",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_null_model(cls, data: Any) -> Any:
        """A spec that names only ``null_model`` keeps the rule it was written for."""
        if isinstance(data, dict) and data.get("null_model") and "rule" not in data:
            data = {**data, "rule": data["null_model"]}
        return data


__all__ = [
    "DEFAULT_MIN_EFFECT",
    "DEFAULT_POSITION_BAND",
    "JudgedEffect",
    "SignificanceRule",
    "StatisticsSpec",
]
