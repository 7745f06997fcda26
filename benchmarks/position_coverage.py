"""Coverage of the position's 95% intervals (the position between marked variants) in
simulated audits of the calibration suite's synthetic worlds.

In the synthetic worlds a marked variant sits ``1 / (2·SHARE_PER_SCORE)`` half-axes out, so a
concept's population position is ``2·SHARE_PER_SCORE·(planted lean + shift)``: its own
direction cancels, and the wording of its templates and of its marked variants is drawn anew
per simulated audit (mean 0). Prints the share of intervals holding that population position.

Usage: python benchmarks/position_coverage.py [--world clean|nuisance] [--audits 20] [--seeds 32]
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=["clean", "nuisance"], default="nuisance")
    parser.add_argument("--audits", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=32)
    args = parser.parse_args()

    import numpy as np

    import auditkit.analyses  # noqa: F401  (the slices plan the marked prompts)
    from auditkit.analyses.stage import analyze_audit
    from auditkit.calibration.suite import with_statistics
    from auditkit.calibration.synthetic import (
        CLEAN,
        CONCEPTS,
        NUISANCE,
        PLANTED,
        SHARE_PER_SCORE,
        scenario_spec,
        simulate,
    )
    from auditkit.plan import plan_audit

    nuisance = {"clean": CLEAN, "nuisance": NUISANCE}[args.world]
    spec = with_statistics(
        scenario_spec(nuisance, args.seeds), bootstrap_resamples=1000, effect="marked_position"
    )
    plan = plan_audit(spec)
    rng = np.random.default_rng([7, args.seeds])
    held = total = 0
    for _ in range(args.audits):
        latents, _population = simulate(spec, nuisance, rng)
        for row in analyze_audit(spec, plan, latents)["lean"].itertuples():
            shift = nuisance.shift if row.axis == "gender" else 0.0
            truth = 2 * SHARE_PER_SCORE * (PLANTED[row.axis][CONCEPTS.index(row.concept)] + shift)
            total += 1
            held += bool(row.marked_position_ci_low <= truth <= row.marked_position_ci_high)
    print(
        f"{args.world}, {args.seeds} seeds: {held}/{total} intervals hold the position "
        f"({held / total:.1%})"
    )


if __name__ == "__main__":
    main()
