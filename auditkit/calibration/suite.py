"""The calibration suite: how often each significance rule calls a null-sized lean a finding,
and how often it finds a large one, against what each model actually draws.

A scenario is an audit spec, per-seed latents for many seeds, and a truth table (per axis and
concept, the share of images of the axis's first group). The suite splits the seeds into
disjoint replicates of 16, 32, 64 and 128 seeds, judges every replicate with every rule, and
counts:

* **null-sized** pairs (true share within ±0.05 of parity) called findings;
* **large** pairs (true share at least 0.2 from parity) found.

Scenarios: the toyworld checkpoints (latents from an audit at 512 seeds, truth read by the
toyworld captioner at 512 other seeds, :mod:`auditkit.calibration.truth`) and synthetic stores
with planted directions and nuisance structure (:mod:`auditkit.calibration.synthetic`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditkit.analyze.latents import LatentSet
from auditkit.plan import AuditPlan, plan_audit
from auditkit.spec import AuditSpec

NULL_SIZED = 0.05
"""A pair is null-sized when its true share is within this of parity."""
LARGE = 0.2
"""A pair is large when its true share is at least this far from parity."""

METHODS: dict[str, dict[str, Any]] = {
    "min_effect": {"rule": "min_effect", "effect": "score", "resampling": "hierarchical"},
    "min_effect, seeds only": {"rule": "min_effect", "effect": "score", "resampling": "seeds"},
    "min_effect, marked position": {
        "rule": "min_effect",
        "effect": "marked_position",
        "min_position": 0.2,
        "resampling": "hierarchical",
    },
    "labels (legacy)": {"rule": "labels", "resampling": "seeds"},
    "vocabulary (legacy)": {"rule": "vocabulary", "resampling": "seeds"},
}
"""The rules compared: the default, the default without wording in its intervals, the default
judging the position between marked variants (with its own band), and the two rules of
earlier runs."""

SCORE_BINS = (0.0, 0.15, 0.3, 0.5, 0.8, float("inf"))
"""|lean score| bins of the lean-to-share mapping."""
POSITION_BINS = (0.0, 0.1, 0.2, 0.35, 0.5, float("inf"))
"""|position| bins of the position-to-share mapping (the position runs about 0.6-0.7 times
2·share − 1 on the calibration models)."""


@dataclass(frozen=True)
class Scenario:
    """An audit with known truth: spec, per-seed latents (all seeds), truth per (axis,
    concept) as ``share`` of the axis's first group."""

    name: str
    spec: AuditSpec
    latents: LatentSet
    truth: pd.DataFrame


def with_statistics(spec: AuditSpec, **update: Any) -> AuditSpec:
    """The spec with some statistics settings changed."""
    return spec.model_copy(update={"statistics": spec.statistics.model_copy(update=update)})


def seed_subset(latents: LatentSet, index: np.ndarray) -> LatentSet:
    """The latents of the seeds at ``index`` (one aggregated step: the suite needs no
    per-step table)."""
    if latents.per_seed is None:
        raise ValueError("the calibration suite's latents are held in memory, not streamed")
    per_seed = latents.per_seed[:, index]
    return LatentSet(
        latents.prompt_ids,
        tuple(latents.seeds[i] for i in index),
        per_seed,
        per_seed.mean(axis=1, keepdims=True),
        (0,),
        (1.0,),
        latents.aggregation,
    )


def classify(share: pd.Series) -> pd.Series:
    """'null-sized', 'large' or 'between', from the true share of the first group."""
    skew = (share - 0.5).abs()
    return pd.Series(
        np.where(
            skew <= NULL_SIZED + 1e-9,
            "null-sized",
            np.where(skew >= LARGE - 1e-9, "large", "between"),
        ),
        index=share.index,
    )


def judge(
    spec: AuditSpec, plan: AuditPlan, latents: LatentSet, methods: Iterable[str]
) -> pd.DataFrame:
    """The lean table of one replicate under each method (method column added)."""
    from auditkit.analyses.stage import analyze_audit

    frames = []
    for method in methods:
        settings = METHODS[method]
        # the position needs the marked prompts' rows, which the defaults slice lays out
        marked = settings.get("effect") == "marked_position"
        alone = spec.model_copy(update={"analyses": ["lean", "defaults"] if marked else ["lean"]})
        judged = analyze_audit(with_statistics(alone, **settings), plan, latents)["lean"]
        keep = ["axis", "concept", "score", "score_ci_low", "score_ci_high", "significant"]
        keep += [c for c in ("marked_position",) if c in judged.columns]
        frames.append(judged[keep].assign(method=method))
    return pd.concat(frames, ignore_index=True)


def replicate_calls(
    scenario: Scenario,
    seed_counts: Sequence[int],
    *,
    max_replicates: int,
    methods: Sequence[str],
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Every method's calls on disjoint seed replicates of a stored scenario."""
    from auditkit.analyses.checks import check_spec

    plan = plan_audit(check_spec(scenario.spec))
    total = len(scenario.latents.seeds)
    frames = []
    for n in seed_counts:
        replicates = min(total // n, max_replicates)
        for r in range(replicates):
            index = np.arange(r * n, (r + 1) * n)
            judged = judge(scenario.spec, plan, seed_subset(scenario.latents, index), methods)
            frames.append(judged.assign(seeds=n, replicate=r))
            if progress:
                progress(f"{scenario.name}: {n} seeds, replicate {r + 1}/{replicates}")
    calls = pd.concat(frames, ignore_index=True).assign(scenario=scenario.name)
    return calls.merge(scenario.truth[["axis", "concept", "share"]], on=["axis", "concept"])


def synthetic_calls(
    name: str,
    seed_counts: Sequence[int],
    *,
    replicates: int,
    methods: Sequence[str],
    seed: int = 0,
    resamples: int = 1000,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Every method's calls on freshly simulated audits of a synthetic scenario."""
    from auditkit.analyses.checks import check_spec
    from auditkit.calibration.synthetic import SCENARIOS, scenario_spec, simulate, truth_table

    nuisance = SCENARIOS[name]
    truth = truth_table()
    frames = []
    for n in seed_counts:
        spec = with_statistics(scenario_spec(nuisance, n), bootstrap_resamples=resamples)
        plan = plan_audit(check_spec(spec))
        rng = np.random.default_rng([seed, n])
        for r in range(replicates):
            latents, population = simulate(spec, nuisance, rng)
            judged = judge(spec, plan, latents, methods).merge(population, on=["axis", "concept"])
            frames.append(judged.assign(seeds=n, replicate=r))
        if progress:
            progress(f"{name}: {n} seeds, {replicates} simulated audits")
    calls = pd.concat(frames, ignore_index=True).assign(scenario=name)
    return calls.merge(truth[["axis", "concept", "share"]], on=["axis", "concept"])


def rates(calls: pd.DataFrame) -> pd.DataFrame:
    """Per scenario, method and seed count: how many null-sized pairs were called findings,
    and how many large pairs were found (counts over pairs x replicates, and shares)."""
    frame = calls.assign(kind=classify(calls["share"]))
    rows = []
    for (scenario, method, seeds), group in frame.groupby(
        ["scenario", "method", "seeds"], sort=False
    ):
        null = group[group["kind"] == "null-sized"]
        large = group[group["kind"] == "large"]
        rows.append(
            {
                "scenario": scenario,
                "method": method,
                "seeds": int(str(seeds)),
                "replicates": int(group["replicate"].nunique()),
                "null_pairs": int(null[["axis", "concept"]].drop_duplicates().shape[0]),
                "null_called": float(null["significant"].mean()) if len(null) else np.nan,
                "large_pairs": int(large[["axis", "concept"]].drop_duplicates().shape[0]),
                "large_found": float(large["significant"].mean()) if len(large) else np.nan,
            }
        )
    return pd.DataFrame(rows)


def lean_share_mapping(
    calls: pd.DataFrame, *, method: str = "min_effect", column: str = "score"
) -> pd.DataFrame:
    """What share skew a lean of each size went with: per bin of |``column``| (the lean score,
    or ``marked_position``), over the scenarios' (axis, concept) pairs at their largest seed
    count (averaged over replicates), the skew of the true share towards the lean's side
    (``share − 0.5`` signed by the lean). The bins' edges are ``score_low``/``score_high``,
    in the units of ``column``."""
    rows = calls[calls["method"] == method]
    if rows.empty or column not in rows.columns:
        return pd.DataFrame()
    top = rows.groupby("scenario")["seeds"].transform("max")
    rows = rows[rows["seeds"] == top]
    pairs = rows.groupby(["scenario", "axis", "concept"], as_index=False).agg(
        score=(column, "mean"), share=("share", "first")
    )
    pairs = pairs[pairs["score"].notna()]
    pairs["abs_score"] = pairs["score"].abs()
    pairs["skew"] = np.sign(pairs["score"]) * (pairs["share"] - 0.5)
    out = []
    for low, high in itertools.pairwise(SCORE_BINS if column == "score" else POSITION_BINS):
        inside = pairs[(pairs["abs_score"] >= low) & (pairs["abs_score"] < high)]
        if inside.empty:
            continue
        out.append(
            {
                "score_low": low,
                "score_high": high,
                "pairs": len(inside),
                "scenarios": ", ".join(sorted(inside["scenario"].unique())),
                "median_skew": float(inside["skew"].median()),
                "skew_p10": float(inside["skew"].quantile(0.1)),
                "skew_p90": float(inside["skew"].quantile(0.9)),
            }
        )
    return pd.DataFrame(out)


SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
"""The stored scenarios' audit specs (one YAML per known-answer model)."""


def stored_scenarios() -> list[str]:
    """Names of the stored (model) scenarios."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def scenario_model_folder(spec: AuditSpec) -> Path:
    """The folder of a scenario's builtin checkpoint (where its truth is stored)."""
    from auditkit.errors import UsageError
    from auditkit.toyworld.build import PACKAGE_CHECKPOINTS

    name = spec.model.id.removeprefix("builtin:")
    folder = Path(PACKAGE_CHECKPOINTS) / name
    if not spec.model.id.startswith("builtin:") or not folder.is_dir():
        raise UsageError(f"calibration scenario model {spec.model.id!r} is not a shipped model.")
    return folder


def truth_by_axis(spec: AuditSpec, truth: dict[str, Any]) -> pd.DataFrame:
    """The stored truth as (axis, concept, share of the axis's first group): an axis matches
    the attribute of its name, and the attribute's first group must be the axis's."""
    from auditkit.errors import UsageError

    rows = []
    for axis in spec.analysis_axes:
        first = next(iter(axis.groups))
        for row in truth["rows"]:
            if row["attribute"] != axis.name:
                continue
            share = float(row["share"])
            if row["first_group"] != first:
                if row["second_group"] != first:
                    raise UsageError(
                        f"truth attribute {axis.name!r} has groups {row['first_group']!r} / "
                        f"{row['second_group']!r}; the axis names {first!r}."
                    )
                share = 1.0 - share
            rows.append({"axis": axis.name, "concept": row["concept"], "share": share})
    return pd.DataFrame(rows)


def load_stored_scenario(name: str, work: Path, *, show_progress: bool = True) -> Scenario:
    """Extract (or resume) a stored scenario's audit into ``work/name`` and read its per-seed
    latents and the truth stored with its model."""
    from auditkit.analyze.latents import load_latents
    from auditkit.calibration.truth import read_truth
    from auditkit.extract.store import ActivationStore
    from auditkit.run import run_audit
    from auditkit.rundir import RunDir
    from auditkit.spec import load_spec

    spec = load_spec(SCENARIO_DIR / f"{name}.yaml")
    truth = truth_by_axis(spec, read_truth(scenario_model_folder(spec)))
    run_dir = Path(work) / name
    # the extraction is what the suite needs; the run's own analysis is kept cheap
    quick = with_statistics(spec, bootstrap_resamples=0)
    run_audit(quick, run_dir, show_progress=show_progress, render=False)
    plan = plan_audit(spec)
    latents = load_latents(
        ActivationStore(RunDir(run_dir).activations), plan, spec.probe.aggregation
    )
    return Scenario(name, spec, latents, truth)
