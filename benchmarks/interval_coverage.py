"""Coverage of the lean score's 95% intervals, centred and percentile, in simulated audits.

The synthetic-nuisance world of the calibration suite (templates and group terms that move the
leans), with two templates or four, and optionally a direction of each group term's own
(``--term-own``: its length in half-axis units). Such a direction lengthens the axis that a
resample builds from fewer terms than the estimate, so the resampled leans shrink towards 0,
and a percentile interval can miss its own estimate; the centred interval places the
resamples' spread around the estimate. Each cell: share of intervals holding the population
lean, share holding their own estimate, median width, over 12 simulated audits (384 intervals).

Usage: python benchmarks/interval_coverage.py [--term-own 0,0.5,1,2] [--seeds 24]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pandas as pd


def simulated(term_own: float, templates: int, seeds: int, audits: int = 12) -> pd.DataFrame:
    """Rows of every simulated audit's lean table, both intervals, with the population lean."""
    from auditkit.analyses import slices
    from auditkit.analyses.stage import analyze_audit
    from auditkit.calibration import synthetic
    from auditkit.calibration.suite import with_statistics
    from auditkit.plan import plan_audit

    slices()
    nuisance = dataclasses.replace(synthetic.NUISANCE, templates=templates)
    base = synthetic.scenario_spec(nuisance, seeds)
    plan = plan_audit(base)
    prompts = {p.prompt_id: p for p in plan.prompts}
    rng = np.random.default_rng(11)
    frames = []
    for audit in range(audits):
        latents, population = synthetic.simulate(base, nuisance, rng)
        if term_own:
            own = {}
            per_seed = np.array(latents.per_seed)
            for i, pid in enumerate(latents.prompt_ids):
                p = prompts[pid]
                if p.role == "axis":
                    if p.term not in own:
                        own[p.term] = rng.normal(size=synthetic.D) / np.sqrt(synthetic.D)
                    per_seed[i] += (own[p.term] * term_own * synthetic.HALF_AXIS).astype(np.float32)
            latents = dataclasses.replace(
                latents, per_seed=per_seed, step_means=per_seed.mean(1, keepdims=True)
            )
        for interval in ("centred", "percentile"):
            spec = with_statistics(base, bootstrap_resamples=300, interval=interval)
            lean = analyze_audit(spec, plan, latents)["lean"]
            frame = lean.merge(population, on=["axis", "concept"])
            frames.append(frame.assign(interval=interval, audit=audit))
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--term-own", default="0,0.5,1,2")
    parser.add_argument("--seeds", type=int, default=24)
    args = parser.parse_args()
    print(f"{'term own':>8} {'templates':>9} {'interval':>10} {'covers truth':>12} "
          f"{'holds estimate':>14} {'median width':>12}")  # fmt: skip
    for term_own in (float(x) for x in args.term_own.split(",")):
        for templates in (2, 4):
            rows = simulated(term_own, templates, args.seeds)
            for interval, part in rows.groupby("interval", sort=True):
                low, high = part["score_ci_low"], part["score_ci_high"]
                truth, score = part["population_score"], part["score"]
                covers = ((low <= truth) & (truth <= high)).mean()
                holds = ((low <= score) & (score <= high)).mean()
                print(f"{term_own:8.1f} {templates:9d} {interval:>10} {covers:12.3f} "
                      f"{holds:14.3f} {(high - low).median():12.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
