"""How much seed noise lengthens each axis of a calibration scenario, and what removing it would
change in the lean scores.

The lean score divides by ``‖ĝ‖²``, whose expectation is ``‖g‖²`` plus the trace of the
per-seed axis covariance over the seed count, so few seeds shrink every score a little. For each
two-group axis of a stored calibration scenario (``auditkit calibrate run`` extracts it into
``WORK/SCENARIO``; it resumes) and each disjoint replicate of 16, 32, 64 and 128 seeds (8 at
most), this prints:

* the inflation ``‖ĝ‖² / (‖ĝ‖² − tr Σ / n)`` (Σ: covariance of the per-seed axis vectors);
* per concept, the score ``2 (h − mid)·g / ‖g‖²`` and its U-statistic twin, built from the
  products of distinct seeds only (in numerator and denominator), which has no such inflation.

Usage: python benchmarks/axis_inflation.py [--scenario toyworld-reworded] [--work runs/calibration]
A minute or two once the scenario's store exists (extracting it: about 15 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from auditkit.analyze.measures import build_layout
from auditkit.calibration.suite import classify, load_stored_scenario


def per_seed_mean(X: np.ndarray, rows: list[int]) -> np.ndarray:
    """The mean over ``rows`` (prompts) of their per-seed latents: [seeds, D]."""
    return np.mean([X[r] for r in rows], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="toyworld-reworded")
    parser.add_argument("--work", type=Path, default=Path("runs/calibration"))
    parser.add_argument("--out", type=Path, help="write every row as parquet here")
    args = parser.parse_args()

    scenario = load_stored_scenario(args.scenario, args.work, show_progress=False)
    latents = scenario.latents
    assert latents.per_seed is not None
    X = latents.per_seed  # [prompts, seeds, D], float32
    layout = build_layout(scenario.spec, latents.row_map())
    truth = scenario.truth.set_index(["axis", "concept"])["share"]
    concepts = {
        c: per_seed_mean(X, rows).astype(np.float64)
        for cset in layout.concepts
        for c, rows in cset.terms.items()
    }
    total = X.shape[1]
    found = []
    for axis in layout.axes:
        if not axis.two_group:
            continue
        first, second = (
            np.mean([per_seed_mean(X, rows) for rows in axis.groups[g]], axis=0).astype(np.float64)
            for g in axis.group_names[:2]
        )
        for n in (16, 32, 64, 128, total):
            for r in range(min(total // n, 8)):
                seeds = slice(r * n, (r + 1) * n)
                d = first[seeds] - second[seeds]  # per-seed axis vectors
                mid = (first[seeds] + second[seeds]) / 2
                g = d.mean(axis=0)
                length = g @ g
                noise = ((d - g) ** 2).sum() / (n - 1) / n
                pairs = n * (n - 1)
                sum_d = d.sum(axis=0)
                length_u = (sum_d @ sum_d - (d * d).sum()) / pairs
                for concept, per_seed in concepts.items():
                    x = per_seed[seeds] - mid
                    score_u = (x.sum(axis=0) @ sum_d - (x * d).sum()) / pairs / length_u
                    found.append(
                        {
                            "axis": axis.name,
                            "seeds": n,
                            "replicate": r,
                            "concept": concept,
                            "inflation": length / (length - noise),
                            "score": 2 * (x.mean(axis=0) @ g) / length,
                            "score_u": 2 * score_u,
                            "share": truth.get((axis.name, concept), np.nan),
                        }
                    )
    rows = pd.DataFrame(found)
    rows["kind"] = classify(rows["share"])
    if args.out:
        rows.to_parquet(args.out)
    inflation = rows.groupby(["axis", "seeds"])["inflation"].agg(["mean", "min", "max"])
    print("axis inflation by seed count (over replicates):")
    print(inflation.round(3).to_string())
    at_all = rows[rows["seeds"] == total]
    print(f"\nlargest |score - U-statistic score| at {total} seeds:")
    print(f"{(at_all['score'] - at_all['score_u']).abs().max():.4f}")
    large = rows[(rows["kind"] == "large") & (rows["seeds"] == 32)]
    print("\nlarge pairs at 32 seeds, score and U-statistic score per replicate:")
    table = large.pivot_table(index=["axis", "concept"], columns="replicate", values="score")
    print(table.round(2).to_string())
    table_u = large.pivot_table(index=["axis", "concept"], columns="replicate", values="score_u")
    print(table_u.round(2).to_string())


if __name__ == "__main__":
    main()
