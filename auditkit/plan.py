"""Stage 2: expand a spec into prompts and (prompt, seed) work units with content ids.

A unit's id hashes everything that determines its activations (model, sampling, probe, prompt,
seed) and nothing else, so a rerun, or an edited spec that shares prompts, skips finished units.

The prompts are the axes' and the concept sets' (and the base prompt), then those the analysis
slices the spec runs ask for (:meth:`auditkit.analyses.base.Analysis.prompts`, e.g. concepts
marked with a group: "a photo of a woman doctor"). The slices sit above the plan, which cannot
import them: :mod:`auditkit.analyses` tells the plan how to ask them when it is imported
(:func:`set_slice_prompts`), and every command that plans imports it first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from auditkit.errors import SchemaVersionError, SpecError
from auditkit.spec.audit import AuditSpec
from auditkit.spec.vocabulary import fill

PLAN_SCHEMA_VERSION = 1


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""The canonical JSON of what is hashed (made once: a plan hashes every unit)."""


def _sha(payload: Any) -> str:
    return hashlib.sha256(_CANONICAL.encode(payload).encode()).hexdigest()


@dataclass(frozen=True)
class PlannedPrompt:
    """One prompt of the audit and where it came from."""

    prompt_id: str
    prompt: str
    role: str  # axis | concept | marked | base
    set_name: str
    group: str
    term: str
    template: str

    @classmethod
    def of(
        cls, prompt: str, role: str, set_name: str, group: str, term: str, template: str
    ) -> PlannedPrompt:
        """The planned prompt of the text ``prompt`` (its id is the text's content id)."""
        return cls(prompt_id(prompt), prompt, role, set_name, group, term, template)

    def record(self) -> dict[str, str]:
        """Its fields in order (prompt_id, prompt, role, set_name, group, term, template): the
        prompt's columns of a table with a row per planned prompt."""
        return {  # asdict's dict, written out: a large plan records every prompt twice
            "prompt_id": self.prompt_id,
            "prompt": self.prompt,
            "role": self.role,
            "set_name": self.set_name,
            "group": self.group,
            "term": self.term,
            "template": self.template,
        }


@dataclass(frozen=True)
class SlicePrompt:
    """A prompt an analysis slice adds to the plan (its ``Analysis.prompts``), and the key under
    which the layout keeps its latent row (:attr:`auditkit.analyze.measures.AuditLayout.marked`;
    the rows of the prompts that share a key are listed in plan order, e.g. one per template)."""

    key: tuple[str, ...]
    prompt: PlannedPrompt


@dataclass(frozen=True)
class WorkUnit:
    """One (prompt, seed) pair: a single sampled trajectory whose h is captured."""

    unit_id: str
    prompt_id: str
    prompt: str
    seed: int


@dataclass(frozen=True)
class AuditPlan:
    """The fully expanded audit: prompts (with provenance), units and the plan hash."""

    schema_version: int
    spec_name: str
    extraction_fingerprint: dict[str, Any]
    prompts: tuple[PlannedPrompt, ...]
    units: tuple[WorkUnit, ...]
    plan_hash: str = field(default="")

    def to_json(self) -> dict[str, Any]:
        """Serialisable form, written to ``plan.json``."""
        return {
            "schema_version": self.schema_version,
            "kind": "auditkit.plan",
            "spec_name": self.spec_name,
            "plan_hash": self.plan_hash,
            "extraction_fingerprint": self.extraction_fingerprint,
            "prompts": [p.record() for p in self.prompts],
            "units": [asdict(u) for u in self.units],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, source: str = "plan.json") -> AuditPlan:
        """Read a plan written by this or an earlier auditkit."""
        version = int(data.get("schema_version", 0))
        if version > PLAN_SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{source} has schema_version {version}; this auditkit reads up to "
                f"{PLAN_SCHEMA_VERSION}.",
                hint="upgrade auditkit to read this run directory.",
            )
        return cls(
            schema_version=version,
            spec_name=data["spec_name"],
            extraction_fingerprint=data["extraction_fingerprint"],
            prompts=tuple(PlannedPrompt(**p) for p in data["prompts"]),
            units=tuple(WorkUnit(**u) for u in data["units"]),
            plan_hash=data["plan_hash"],
        )

    def write(self, path: Path) -> None:
        """Write ``plan.json`` atomically."""
        from auditkit.rundir import write_json_atomic

        write_json_atomic(path, self.to_json())


def extraction_fingerprint(spec: AuditSpec) -> dict[str, Any]:
    """Settings that determine stored activations (aggregation is applied later, so excluded)."""
    model = spec.model
    probe = spec.probe
    return {
        "model_id": model.id,
        "revision": model.revision,
        "pipeline": model.pipeline,
        "dtype": model.dtype,
        "scheduler": model.scheduler,
        "steps": model.steps,
        "guidance_scale": model.guidance_scale,
        "resolution": model.resolution,
        "hook": probe.hook,
        "kept_steps": probe.steps,
        "spatial_pool": probe.spatial_pool,
        **({"tokens": probe.tokens} if probe.tokens != "pooled" else {}),  # unit ids unchanged
        "guidance_half": probe.guidance_half,
        "store_dtype": probe.dtype_stored,
        # a unit storing fewer steps than it keeps is another unit; unit ids unchanged otherwise
        **({"per_step_h": probe.step_h_stored} if probe.step_h_stored != "all" else {}),
    }


def prompt_id(prompt: str) -> str:
    """Content id of a prompt text."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


_SLICE_PROMPTS: list[Callable[[AuditSpec], list[SlicePrompt]]] = []
"""How the plan asks the analysis slices for their prompts (one function, once set)."""
_SLICE_PROMPT_COUNT: list[Callable[[AuditSpec], int]] = []
"""How the plan asks them how many prompts they add, without building them."""

MAX_UNITS = 100_000
"""Most work units (prompt x seed) a plan may have: a spec that expands past it is refused,
counted before anything is built (:func:`expansion_problems`), so ``auditkit plan`` answers at
once. 100,000 images is days of sampling for a real model (split a larger audit into several);
planning takes about a second at the limit on one CPU core, with every unit a prompt of its
own."""


def set_slice_prompts(
    source: Callable[[AuditSpec], list[SlicePrompt]], count: Callable[[AuditSpec], int]
) -> None:
    """Let the plan ask the analysis slices for their prompts: ``source(spec)`` returns those
    of the slices ``spec`` runs, ``count(spec)`` how many they are at most (without building
    them). :mod:`auditkit.analyses` calls it when it is imported."""
    _SLICE_PROMPTS[:] = [source]
    _SLICE_PROMPT_COUNT[:] = [count]


def prompt_bound(spec: AuditSpec) -> int:
    """How many prompts :func:`expand_prompts` gives ``spec`` at most, by arithmetic alone
    (a crossing counts every combination of its axes' terms, before repeats are dropped)."""
    count = 1 if spec.centring.reference == "base" else 0
    for axis in spec.axes:
        count += len(axis.templates) * sum(len(terms) for terms in axis.groups.values())
    known = {a.name: a for a in spec.axes}
    for crossing in spec.crossings:
        parts = [known[name] for name in crossing.axes if name in known]
        combos = 1
        for i, axis in enumerate(parts):
            last = i == len(parts) - 1
            qualified = axis.qualifiers is not None and not last
            combos *= sum(1 if qualified else len(t) for t in axis.groups.values())
        count += len(crossing.templates or parts[0].templates) * combos if parts else 0
    count += sum(len(c.templates) * len(c.terms) for c in spec.concepts)
    if _SLICE_PROMPT_COUNT:
        count += _SLICE_PROMPT_COUNT[0](spec)
    return count


def expansion_problems(spec: AuditSpec) -> list[tuple[tuple[str | int, ...], str]]:
    """The spec's expansion past :data:`MAX_UNITS`, counted without building it: (YAML path,
    message), none when it fits."""
    prompts, seeds = prompt_bound(spec), len(spec.seed_list)
    units = prompts * seeds
    if units <= MAX_UNITS:
        return []
    return [
        (
            (),
            f"the audit expands to up to {prompts:,} prompts x {seeds:,} seeds = {units:,} "
            f"work units, more than the limit of {MAX_UNITS:,}; use fewer terms, templates, "
            "crossed axes or seeds, or split it into several audits",
        )
    ]


def slice_prompts(spec: AuditSpec) -> list[SlicePrompt]:
    """The prompts the analysis slices ``spec`` runs add to its plan, in report order.

    Raises:
        RuntimeError: :mod:`auditkit.analyses` was not imported, so the plan cannot ask them
            (a plan without their prompts would silently be another plan).
    """
    if not _SLICE_PROMPTS:
        raise RuntimeError(
            "the plan cannot ask the analysis slices for their prompts: import auditkit.analyses "
            "first (every command that plans does, through check_spec)"
        )
    return _SLICE_PROMPTS[0](spec)


def expand_prompts(spec: AuditSpec) -> list[PlannedPrompt]:
    """Every prompt the spec implies, in a stable order: the base prompt, the axes', the concept
    sets', then those of the analysis slices the spec runs (:func:`slice_prompts`). A text
    planned twice is kept under each role; its units are planned once."""
    rows: list[PlannedPrompt] = []

    def add(prompt: str, role: str, set_name: str, group: str, term: str, template: str) -> None:
        rows.append(PlannedPrompt.of(prompt, role, set_name, group, term, template))

    if spec.centring.reference == "base":
        base = spec.centring.base_prompt
        add(base, "base", "", "", "", base)
    for axis in spec.analysis_axes:
        for group, terms in axis.groups.items():
            for template in axis.templates:
                for term in terms:
                    add(fill(template, term), "axis", axis.name, group, term, template)
    for cset in spec.concepts:
        for template in cset.templates:
            for term in cset.terms:
                add(fill(template, term), "concept", cset.name, "", term, template)
    rows.extend(extra.prompt for extra in slice_prompts(spec))
    return rows


def plan_audit(spec: AuditSpec) -> AuditPlan:
    """Expand ``spec`` into a deterministic plan (same spec -> same plan hash); a spec that
    expands past :data:`MAX_UNITS` is refused (:class:`SpecError`) before anything is built."""
    too_big = expansion_problems(spec)
    if too_big:
        raise SpecError([message for _, message in too_big], source=spec.name)
    prompts = expand_prompts(spec)
    fingerprint = extraction_fingerprint(spec)
    fp_hash = _sha(fingerprint)
    units: list[WorkUnit] = []
    seen: set[str] = set()
    seeds = spec.seed_list
    for p in prompts:
        if p.prompt_id in seen:
            continue
        seen.add(p.prompt_id)
        for seed in seeds:
            uid = _sha([fp_hash, p.prompt, seed])[:24]
            units.append(WorkUnit(uid, p.prompt_id, p.prompt, seed))
    plan = AuditPlan(
        schema_version=PLAN_SCHEMA_VERSION,
        spec_name=spec.name,
        extraction_fingerprint=fingerprint,
        prompts=tuple(prompts),
        units=tuple(units),
    )
    digest = _sha(
        {
            "fingerprint": fingerprint,
            "prompts": [p.record() for p in prompts],
            "units": [u.unit_id for u in units],
        }
    )
    return AuditPlan(**{**plan.__dict__, "plan_hash": digest})


def unique_prompts(plan: AuditPlan) -> Iterable[PlannedPrompt]:
    """Prompts with distinct texts, first occurrence kept."""
    seen: set[str] = set()
    for p in plan.prompts:
        if p.prompt_id not in seen:
            seen.add(p.prompt_id)
            yield p
