"""The checks that span the sections of an :class:`~auditkit.spec.audit.AuditSpec`: each lists
every problem it finds at its own location, and the spec raises them together; and the
statistic its significance rule judges (:func:`judged_effect`, :func:`judged_band`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from auditkit.spec.base import listed, repeated
from auditkit.spec.vocabulary import MAX_CROSSING_GROUPS

if TYPE_CHECKING:
    from auditkit.spec.audit import AuditSpec

Location = tuple[str | int, ...]
Problem = tuple[Location, Any, str]
"""A cross-field problem: where in the spec it is, the value found there, and what is wrong.
The location is what the loader shows (``crossings[0].axes[1]``); ``()`` is the top level."""


def located_errors(problems: list[Problem]) -> ValidationError:
    """One validation error listing every problem, each at its own location (a cross-field
    check would otherwise sit at the top level)."""
    details = [
        InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)
        for loc, value, message in problems
    ]
    return ValidationError.from_exception_data("AuditSpec", details)


def _storage_problems(spec: AuditSpec) -> list[Problem]:
    probe = spec.probe
    if not isinstance(probe.per_step_h, list):
        return []
    where: Location = ("probe", "per_step_h")
    if probe.aggregation == "per_step":
        message = "aggregation 'per_step' reads every kept step: per_step_h must be 'all' or 'auto'"
        return [(where, probe.per_step_h, message)]
    kept = set(range(spec.model.steps) if probe.steps == "all" else probe.steps)
    stray = [s for s in probe.per_step_h if s not in kept or s >= spec.model.steps]
    if stray:
        message = f"steps {stray} are not kept steps (probe.steps within model.steps)"
        return [(where, probe.per_step_h, message)]
    return []


def _name_problems(spec: AuditSpec) -> list[Problem]:
    names = (
        [a.name for a in spec.axes]
        + [c.name for c in spec.concepts]
        + [x.name for x in spec.crossings]
    )
    dupes = repeated(names)
    if not dupes:
        return []
    message = f"axis, crossing and concept-set names must be unique; repeated: {dupes}"
    return [((), None, message)]


def _crossing_problems(spec: AuditSpec) -> list[Problem]:
    known = {a.name: a for a in spec.axes}
    problems: list[Problem] = []
    for i, crossing in enumerate(spec.crossings):
        unknown = [(j, name) for j, name in enumerate(crossing.axes) if name not in known]
        for j, name in unknown:
            message = f"unknown axis {name!r}; the spec's axes are {listed(known)}"
            problems.append((("crossings", i, "axes", j), name, message))
        if unknown:
            continue  # the size needs every axis
        size = math.prod(len(known[n].groups) for n in crossing.axes)
        if size > MAX_CROSSING_GROUPS:
            message = f"gives {size} groups, more than {MAX_CROSSING_GROUPS}"
            problems.append((("crossings", i, "axes"), crossing.axes, message))
    return problems


def _gate_problems(spec: AuditSpec) -> list[Problem]:
    axes = {a.name for a in spec.axes}
    sets = {c.name for c in spec.concepts}
    problems: list[Problem] = []
    for i, gate in enumerate(spec.gates):
        if gate.axis is not None and gate.axis not in axes:
            message = f"unknown axis {gate.axis!r}; the spec's axes are {listed(axes)}"
            problems.append((("gates", i, "axis"), gate.axis, message))
        if gate.concept_set is not None and gate.concept_set not in sets:
            message = f"unknown concept set {gate.concept_set!r}; the spec has {listed(sets)}"
            problems.append((("gates", i, "concept_set"), gate.concept_set, message))
    return problems


def _caption_seed_problems(spec: AuditSpec) -> list[Problem]:
    wanted = spec.captions.seeds if spec.captions is not None else None
    if wanted is None or wanted <= len(spec.seed_list):
        return []
    message = f"asks for {wanted} seeds but the audit has {len(spec.seed_list)}"
    return [(("captions", "seeds"), wanted, message)]


def _guidance_problems(spec: AuditSpec) -> list[Problem]:
    if spec.captions is None:
        return []
    scales = spec.captions.guidance
    problems: list[Problem] = []
    seen: set[float] = set()
    for j, scale in enumerate(scales):
        if not (math.isfinite(scale) and 1.0 <= scale <= 100.0):
            message = (
                f"{scale} is not a guidance scale between 1 and 100 (every scale up to 1 "
                "samples without guidance, as 1 does)"
            )
        elif scale == spec.model.guidance_scale:
            message = f"{scale:g} is the audit's own guidance scale (model.guidance_scale)"
        elif scale in seen:
            message = f"{scale:g} is listed twice"
        else:
            seen.add(scale)
            continue
        problems.append((("captions", "guidance", j), scale, message))
    if scales and "concept" not in spec.captions.roles:
        message = "sweeps the concept prompts, but captions.roles does not caption them"
        problems.append((("captions", "guidance"), scales, message))
    return problems


def _causal_problems(spec: AuditSpec) -> list[Problem]:
    causal = spec.captions.causal if spec.captions is not None else None
    if causal is None:
        return []
    where = ("captions", "causal")
    problems: list[Problem] = []
    if spec.probe.aggregation != "mean" or spec.probe.spatial_pool != "none":
        problems.append(
            (
                where,
                None,
                "needs probe.aggregation 'mean' and probe.spatial_pool 'none' (got "
                f"{spec.probe.aggregation!r} and {spec.probe.spatial_pool!r}): the axis is "
                "added to the hook point's output, so it must be one step-mean h of the "
                "output's full shape",
            )
        )
    problems += _two_group_axis_problems(
        spec, causal.axes or [], (*where, "axes"), "steered", "to steer along"
    )
    known = {t for cs in spec.concepts for t in cs.terms}
    for j, term in enumerate(causal.concepts or []):
        if term not in known:
            message = f"unknown concept {term!r}; the spec's concepts are {listed(known)}"
            problems.append(((*where, "concepts", j), term, message))
    if causal.seeds is not None and causal.seeds > len(spec.seed_list):
        message = f"asks for {causal.seeds} seeds but the audit has {len(spec.seed_list)}"
        problems.append(((*where, "seeds"), causal.seeds, message))
    return problems


def _discovery_problems(spec: AuditSpec) -> list[Problem]:
    captions = spec.captions
    if captions is None or captions.discovery is None or "concept" in captions.roles:
        return []
    message = (
        "mines the captions of the concept prompts, but captions.roles does not "
        "caption them; add 'concept' to captions.roles"
    )
    return [(("captions", "discovery"), None, message)]


def _grounding_problems(spec: AuditSpec) -> list[Problem]:
    grounding = spec.grounding
    if grounding is None or grounding.axes is None:
        return []
    return _two_group_axis_problems(
        spec, grounding.axes, ("grounding", "axes"), "grounded", "to compare with images"
    )


def judged_effect(spec: AuditSpec) -> str:
    """The statistic the spec's min_effect rule judges: ``statistics.effect``, with ``auto``
    resolved (the position where every two-group axis is marked and the defaults analysis
    runs, else the score)."""
    effect = spec.statistics.effect
    if effect != "auto":
        return effect
    marked = "defaults" in spec.analyses and all(
        axis.defaults for axis in spec.axes if len(axis.groups) == 2
    )
    return "marked_position" if marked else "score"


def judged_band(spec: AuditSpec) -> float:
    """The band of the judged statistic: ``min_position`` for the position, else
    ``min_effect``."""
    stats = spec.statistics
    return stats.min_position if judged_effect(spec) == "marked_position" else stats.min_effect


def _effect_problems(spec: AuditSpec) -> list[Problem]:
    """The position between marked variants, asked for by name, needs every two-group axis
    marked."""
    stats = spec.statistics
    if stats.effect != "marked_position" or stats.rule != "min_effect":
        return []
    why = "statistics.effect 'marked_position' judges each lean by its marked variants"
    problems: list[Problem] = []
    if "defaults" not in spec.analyses:
        problems.append(
            (
                ("analyses",),
                spec.analyses,
                f"{why}, which the defaults analysis samples; add "
                "'defaults' to analyses (or set statistics.effect: score)",
            )
        )
    for i, axis in enumerate(spec.axes):
        if len(axis.groups) == 2 and not axis.defaults:
            problems.append(
                (
                    ("axes", i, "defaults"),
                    False,
                    f"{why}; axis {axis.name!r} has none: set "
                    "defaults: true (or statistics.effect: score)",
                )
            )
    return problems


def _two_group_axis_problems(
    spec: AuditSpec, names: list[str], where: Location, done: str, purpose: str
) -> list[Problem]:
    """A section's list of axes that must be two-group axes of the spec (steered, grounded):
    a crossing, an unknown axis or one of k groups is a problem at ``where[j]``."""
    axes = {a.name: a for a in spec.axes}
    crossings = {x.name for x in spec.crossings}
    problems: list[Problem] = []
    for j, name in enumerate(names):
        if name in crossings:
            message = f"{name!r} is a crossing (k-way); only two-group axes can be {done}"
        elif name not in axes:
            message = f"unknown axis {name!r}; the spec's axes are {listed(axes)}"
        elif len(axes[name].groups) != 2:
            message = (
                f"axis {name!r} has {len(axes[name].groups)} groups; only two-group axes "
                f"have a direction {purpose}"
            )
        else:
            continue
        problems.append(((*where, j), name, message))
    return problems


def cross_field_problems(spec: AuditSpec) -> list[Problem]:
    """Every problem of every check that spans sections, in the spec's order."""
    return [
        *_name_problems(spec),
        *_crossing_problems(spec),
        *_gate_problems(spec),
        *_caption_seed_problems(spec),
        *_guidance_problems(spec),
        *_causal_problems(spec),
        *_discovery_problems(spec),
        *_grounding_problems(spec),
        *_storage_problems(spec),
        *_effect_problems(spec),
    ]
