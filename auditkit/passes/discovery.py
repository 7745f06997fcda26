"""Open-vocabulary discovery from captions (optional).

What does the model associate with "a photo of a nurse" that nobody listed? Words and short
phrases are mined from the captions of the concept prompts (``captions/captions.parquet``),
each kept term becomes a prompt through a template ("a photo of a {term}"), its h is extracted
like any other prompt's, and :func:`auditkit.analyze.discovery.rank_terms` ranks the terms per
concept and per two-group axis by centred cosine, with seed-bootstrap intervals.

**Mining** (:func:`mine_terms`): captions are lowercased and split into words at punctuation;
every run of 1..``ngrams`` consecutive words is a candidate unless one of its words is a dropped
word (a small built-in English stopword list, the spec's extra stopwords, every word of the
spec's templates and base prompt, of the captioner's prompt, and of the concept terms
themselves), a number or a single character. A term counts once per caption; terms found in at
least ``min_count`` captions are kept, the ``max_terms`` most frequent first (ties
alphabetical), so the vocabulary is a deterministic function of the captions and the spec.

**Extraction**: the term prompts are planned exactly as :func:`auditkit.plan.plan_audit` plans
a concept set (same unit-id scheme: model settings, prompt text and seed), for every seed of the
audit, and extracted into the run's activation store (through :meth:`auditkit.sampling.Sampler.
extract`, as extraction does it); a term whose prompt the audit already has
(the axis prompt "a photo of a woman") reuses its units. A rerun with every unit stored does not
load the diffusion model. The audit's plan and plan hash are untouched.

Tables (schema: docs/run-directory.md): ``results/discovered_terms.parquet`` (the vocabulary
with per-concept counts) and ``results/discovery.parquet`` (the ranking).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit.analyze.discovery import (
    empty_ranking,
    rank_terms,
    ranking_layout,
    ranking_prompt_ids,
)
from auditkit.analyze.latents import load_latents
from auditkit.caption.stage import CaptionStats
from auditkit.caption.store import read_captions
from auditkit.executors import Executor
from auditkit.extract.store import ActivationStore
from auditkit.models.loading import LoadedPipeline
from auditkit.plan import AuditPlan, plan_audit, prompt_id
from auditkit.rundir import RunDir
from auditkit.sampling import Sampler
from auditkit.spec.audit import AuditSpec
from auditkit.spec.captions import DiscoverySpec
from auditkit.spec.vocabulary import CentringSpec, ConceptSetSpec, fill

DISCOVERY_SCHEMA_VERSION = 1
DISCOVERED_ROLE = "discovered"
"""Role of a term prompt (plan roles: axis | concept | marked | base)."""
DISCOVERED_SET = "discovery"
TERM_COLUMNS = [
    "term",
    "term_rank",
    "n_words",
    "prompt",
    "prompt_id",
    "total_count",
    "concept_set",
    "concept",
    "n_captions",
    "count",
]
"""Columns of ``results/discovered_terms.parquet``."""

_STOPWORD_TEXT = """
    a an the and or but nor of in on at to for from by with without into onto over under
    above below near next up down out off about as than then there here this that these those
    it its it's is are was were be been being has have had having do does did can could will
    would should may might must shall he she they them their his her hers him we us our you
    your i me my mine who whom whose which what when where why how some any all each every
    both either neither no not only very just also too so such one two three other another
    while during against between through front behind beside around along across image photo
    photograph photography picture pic close closeup view shot"""
STOPWORDS: frozenset[str] = frozenset(_STOPWORD_TEXT.split())
"""Built-in English stopwords (and words captioners use for the picture itself)."""

_SEGMENT = re.compile(r"[.,;:!?()\[\]{}\"“”/|]+")
_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")


@dataclass
class DiscoveryStats(CaptionStats):
    """What one discovery pass did (the manifest's ``stages.discovery``): a captioning pass's
    counts plus the mined terms and the prompt template."""

    terms: int = 0
    template: str = ""


def caption_segments(caption: str) -> list[list[str]]:
    """Lowercase words of ``caption``, split into runs at punctuation (phrases never cross it)."""
    return [_WORD.findall(part) for part in _SEGMENT.split(caption.lower())]


def caption_terms(
    caption: str, ngrams: int, drop_words: frozenset[str], drop_terms: frozenset[str]
) -> set[str]:
    """Every term (1..``ngrams`` consecutive words, none of them dropped) in ``caption``."""
    found: set[str] = set()
    for words in caption_segments(caption):
        keep = [w not in drop_words and len(w) > 1 and not w.isdigit() for w in words]
        for n in range(1, ngrams + 1):
            for i in range(len(words) - n + 1):
                if all(keep[i : i + n]):
                    term = " ".join(words[i : i + n])
                    if term not in drop_terms:
                        found.add(term)
    return found


def mine_terms(
    captions: pd.DataFrame,
    *,
    ngrams: int,
    min_count: int,
    max_terms: int,
    drop_words: Iterable[str] = (),
    drop_terms: Iterable[str] = (),
) -> tuple[list[tuple[str, int]], pd.DataFrame]:
    """The vocabulary of ``captions`` and its per-concept counts.

    ``captions`` has columns unit_id, set_name (the concept set), term (the concept) and caption;
    a unit listed twice (its prompt is in two sets) is one caption overall. Returns the kept
    ``(term, captions containing it)`` pairs, most frequent first (ties alphabetical), and a table
    concept_set, concept, term, count (captions of that concept containing the term), n_captions
    (captions of that concept), with every (concept, kept term) pair.
    """
    words = frozenset(w.lower() for w in drop_words)
    phrases = frozenset(t.lower() for t in drop_terms)
    per_unit = {
        str(uid): caption_terms(str(text), ngrams, words, phrases)
        for uid, text in zip(captions["unit_id"], captions["caption"], strict=True)
    }
    total: dict[str, int] = {}
    for found in per_unit.values():
        for term in found:
            total[term] = total.get(term, 0) + 1
    ranked = sorted(
        ((t, n) for t, n in total.items() if n >= min_count), key=lambda x: (-x[1], x[0])
    )
    vocabulary = ranked[:max_terms]
    rows: list[dict[str, Any]] = []
    pairs = captions[["set_name", "term"]].drop_duplicates()
    for set_name, concept in zip(pairs["set_name"], pairs["term"], strict=True):
        mask = (captions["set_name"] == set_name) & (captions["term"] == concept)
        units = set(captions.loc[mask, "unit_id"].astype(str))
        for term, _ in vocabulary:
            rows.append(
                {
                    "concept_set": str(set_name),
                    "concept": str(concept),
                    "term": term,
                    "count": sum(term in per_unit[u] for u in units),
                    "n_captions": len(units),
                }
            )
    columns = ["concept_set", "concept", "term", "count", "n_captions"]
    counts = pd.DataFrame(rows, columns=columns)
    counts[["count", "n_captions"]] = counts[["count", "n_captions"]].astype("int64")
    return vocabulary, counts


def discovery_section(spec: AuditSpec) -> DiscoverySpec:
    """``spec.captions.discovery``; raises if discovery is off."""
    if spec.captions is None or spec.captions.discovery is None:
        raise ValueError("the spec has no captions.discovery section: discovery is off")
    return spec.captions.discovery


def discovery_template(spec: AuditSpec) -> str:
    """The template terms are put into: the spec's, else the first concept set's first."""
    return discovery_section(spec).template or spec.concepts[0].templates[0]


def dropped_words(spec: AuditSpec) -> tuple[frozenset[str], frozenset[str]]:
    """(words never mined, exact phrases never mined) for ``spec``."""
    section = discovery_section(spec)
    texts = [discovery_template(spec), spec.centring.base_prompt]
    texts += [t for a in spec.analysis_axes for t in a.templates]
    texts += [t for cs in spec.concepts for t in [*cs.templates, *cs.terms]]
    if spec.captions is not None and spec.captions.captioner.prompt:
        texts.append(spec.captions.captioner.prompt)
    words = set(STOPWORDS)
    for text in texts:
        for segment in caption_segments(text.replace("{term}", " ")):
            words.update(segment)
    phrases: set[str] = set()
    for entry in section.stopwords:
        tokens = [w for segment in caption_segments(entry) for w in segment]
        (words if len(tokens) == 1 else phrases).update(
            tokens if len(tokens) == 1 else [" ".join(tokens)]
        )
    return frozenset(words), frozenset(phrases)


def discovery_plan(spec: AuditSpec, terms: list[str]) -> AuditPlan:
    """Prompts (role "discovered") and work units of ``terms`` for every seed of the audit.

    Planned by :func:`auditkit.plan.plan_audit` itself, as a one-template concept set, so a
    term's units have exactly the ids the audit would give the same prompt text.
    """
    template = discovery_template(spec)
    derived = spec.model_copy(
        update={
            "axes": [],
            "crossings": [],
            "concepts": [ConceptSetSpec(name=DISCOVERED_SET, templates=[template], terms=terms)],
            "centring": CentringSpec(reference="set_mean"),
            "analyses": ["lean"],
        }
    )
    plan = plan_audit(derived)
    prompts = tuple(replace(p, role=DISCOVERED_ROLE) for p in plan.prompts)
    return replace(plan, prompts=prompts)


def run_discovery(
    spec: AuditSpec,
    plan: AuditPlan,
    run_dir: Path,
    *,
    pipeline: Executor | Callable[[], LoadedPipeline],
    show_progress: bool = True,
) -> DiscoveryStats:
    """Mine, extract the missing term units, rank, and write both tables under ``results/``.

    ``pipeline`` is called (once) only when some term unit is not in the activation store.
    """
    from auditkit.extract.runner import pending_units

    section = discovery_section(spec)
    started = time.perf_counter()
    template = discovery_template(spec)
    captions = read_captions(run_dir / "captions")[0]
    captions = captions[captions["role"] == "concept"]
    words, phrases = dropped_words(spec)
    vocabulary, counts = mine_terms(
        captions,
        ngrams=section.ngrams,
        min_count=section.min_count,
        max_terms=section.max_terms,
        drop_words=words,
        drop_terms=phrases,
    )
    terms = [t for t, _ in vocabulary]
    stats = DiscoveryStats(0, 0, 0, 0.0, False, terms=len(terms), template=template)
    ranking = empty_ranking()
    if terms:
        store = ActivationStore(run_dir / "activations")
        sub = discovery_plan(spec, terms)
        todo = pending_units(sub, store)
        stats.units_total = len(sub.units)
        stats.units_skipped = len(sub.units) - len(todo)
        if todo:
            sampler = Sampler(spec, pipeline, show_progress=show_progress)
            sampler.extract(sub, store)
            stats.model_loaded = sampler.model_loaded
            stats.units_run = len(todo)
        needed = ranking_prompt_ids(spec)
        units = {u.unit_id: u for u in plan.units if u.prompt_id in needed}
        units.update({u.unit_id: u for u in sub.units})
        latents = load_latents(
            store, replace(sub, units=tuple(units.values())), spec.probe.aggregation
        )
        rows = latents.row_map()
        by_term = {p.term: rows[p.prompt_id] for p in sub.prompts}
        assert latents.per_seed is not None  # read without a spec: never streamed
        ranking = rank_terms(
            ranking_layout(spec, rows),
            latents.per_seed,
            by_term,
            counts,
            resamples=spec.statistics.bootstrap_resamples,
            seed=spec.statistics.seed,
            top_k=section.top_k,
        )
    write_discovery(
        run_dir / "results", _terms_table(vocabulary, counts, template), ranking, template
    )
    stats.seconds = round(time.perf_counter() - started, 3)
    return stats


def _terms_table(
    vocabulary: list[tuple[str, int]], counts: pd.DataFrame, template: str
) -> pd.DataFrame:
    vocab = pd.DataFrame(
        [
            {
                "term": term,
                "term_rank": i + 1,
                "n_words": len(term.split()),
                "prompt": fill(template, term),
                "prompt_id": prompt_id(fill(template, term)),
                "total_count": total,
            }
            for i, (term, total) in enumerate(vocabulary)
        ],
        columns=TERM_COLUMNS[:6],
    )
    table = vocab.merge(counts, on="term", how="left", sort=False)
    table = table.sort_values(["term_rank"], kind="mergesort").reset_index(drop=True)
    for column in ("term_rank", "n_words", "total_count", "count", "n_captions"):
        table[column] = table[column].astype("int64")
    return table[TERM_COLUMNS]


def write_discovery(
    results_dir: Path, terms: pd.DataFrame, ranking: pd.DataFrame, template: str
) -> None:
    """Write ``discovered_terms.parquet`` and ``discovery.parquet`` atomically (versioned)."""
    meta = {"discovery_template": template}
    run = RunDir.of_folder(results_dir)
    run.write_table("discovered_terms", terms, meta)
    run.write_table("discovery", ranking, meta)


def read_discovery(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(discovered terms, ranking) of a run's ``results/``.

    Raises:
        UsageError: the run has no discovery tables.
        SchemaVersionError: a table was written by a newer auditkit.
    """
    run = RunDir.of_folder(results_dir)
    terms, ranking = (run.table(name, required=True) for name in ("discovered_terms", "discovery"))
    assert terms is not None and ranking is not None
    return terms, ranking


__all__ = [
    "DISCOVERED_ROLE",
    "DISCOVERY_SCHEMA_VERSION",
    "STOPWORDS",
    "TERM_COLUMNS",
    "DiscoveryStats",
    "caption_terms",
    "discovery_plan",
    "discovery_template",
    "dropped_words",
    "mine_terms",
    "read_discovery",
    "run_discovery",
    "write_discovery",
]
