"""Where an unmarked concept sits between its two marked variants, against what each toyworld
model draws: a candidate statistic for findings (docs/method.md, "The position between marked
variants").

For each axis with groups A and B and each concept c, per template:

    position = 2 (H(c) − m)·d / ‖d‖²,   d = H(A c) − H(B c),   m = (H(A c) + H(B c)) / 2

(H: the mean latent over seeds; "A c" the concept marked with A's word, "a sketch of a junior
mason"), averaged over the templates: −1 at B's variant, +1 at A's, 0 midway. Both ends carry
the concept, so its own offset along the attribute, which the lean takes for part of its lean
(mason on toyworld-reworded), cancels. For an ideal model at high noise the unmarked prompt's
denoiser output is the mixture of the marked ones weighted by the model's own shares, which is
why the position is read against the drawn share.

Each scenario (auditkit/calibration/scenarios) is audited at ``--seeds`` seeds (0 and up) with
the defaults analysis on for every axis, each group marked with its first term less a trailing
"person" ("junior person" → "junior"). Disjoint replicates of 16, 32 and 64 seeds are then judged
two ways against the model's truth.json (512 other seeds, its own reader):

* the shipped rule: the lean table's ``significant`` (min_effect at the spec's band, hierarchical
  resampling), through the calibration suite's own ``judge``;
* the position: a seed bootstrap (``--resamples``), centred 95% interval, p-value of
  "|position| ≤ band" with the bootstrap's standard error, Benjamini-Hochberg over the audit's
  pairs, called when q < alpha and the interval clears the band (``--band``).

Prints, per scenario and seed count, null-sized pairs called and large pairs found (as the
calibration suite counts them), the position against the drawn share at all seeds, and writes
``marked_position.json`` under ``--work``.

Usage: python benchmarks/marked_position.py [--scenarios toyworld-reworded ...] [--seeds 128]
About 10 minutes of extraction per scenario at 128 seeds on two CPU cores (it resumes), plus
about a minute of judging.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "auditkit" / "calibration" / "scenarios"
CHECKPOINTS = ROOT / "auditkit" / "toyworld" / "checkpoints"
ALL = ("toyworld-biased", "toyworld-balanced", "toyworld-reworded")


def marker(term: str) -> str:
    return term[: -len(" person")] if term.endswith(" person") else term


def scenario_spec(name: str, seeds: int) -> dict:
    raw = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
    raw["seeds"] = seeds
    for axis in raw["axes"]:
        axis["defaults"] = True
        axis["markers"] = {g: marker(terms[0]) for g, terms in axis["groups"].items()}
    raw["analyses"] = ["lean", "defaults"]
    return raw


class Positions:
    """The rows of every (axis, concept) pair's position, from a run's prompts table."""

    def __init__(self, prompts, row: dict[str, int]) -> None:
        concepts = prompts[prompts["role"] == "concept"]
        marked = prompts[prompts["role"] == "marked"]
        axes = prompts[prompts["role"] == "axis"]
        self.pairs: list[tuple[str, str]] = []
        self.rows: list[list[tuple[int, int, int]]] = []  # per pair: (unmarked, A, B) per template
        for axis in dict.fromkeys(axes["set_name"]):
            first, second = list(dict.fromkeys(axes[axes["set_name"] == axis]["group"]))
            mine = marked[marked["set_name"].str.startswith(f"{axis}/")]
            for term in dict.fromkeys(concepts["term"]):
                per_template = []
                for template in dict.fromkeys(concepts["template"]):

                    def one(frame, template=template, term=term) -> int:
                        pick = frame[(frame["term"] == term) & (frame["template"] == template)]
                        (pid,) = pick["prompt_id"]
                        return row[pid]

                    per_template.append(
                        (
                            one(concepts),
                            one(mine[mine["group"] == first]),
                            one(mine[mine["group"] == second]),
                        )
                    )
                self.pairs.append((axis, term))
                self.rows.append(per_template)

    def of(self, H: np.ndarray) -> np.ndarray:
        """Positions [..., pairs] of mean latents H [..., prompts, width]."""
        out = []
        for per_template in self.rows:
            values = []
            for u, a, b in per_template:
                d = H[..., a, :] - H[..., b, :]
                centred = H[..., u, :] - 0.5 * (H[..., a, :] + H[..., b, :])
                values.append(2 * (centred * d).sum(-1) / (d * d).sum(-1))
            out.append(np.mean(values, axis=0))
        return np.stack(out, axis=-1)


def judge_positions(
    per_seed: np.ndarray, positions: Positions, band: float, alpha: float, resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(position, interval low, high, called) per pair of one replicate [prompts, seeds, width]."""
    from scipy import special

    from auditkit.analyze.stats import benjamini_hochberg
    from auditkit.analyze.uncertainty import bootstrap_weights

    n = per_seed.shape[1]
    estimate = positions.of(per_seed.mean(axis=1))
    weights = bootstrap_weights(n, resamples, np.random.default_rng(seed))
    samples = np.concatenate(
        [
            positions.of(np.einsum("bn,pnd->bpd", weights[i : i + 50], per_seed))
            for i in range(0, resamples, 50)
        ]
    )
    q = np.quantile(samples, [0.025, 0.5, 0.975], axis=0)
    low, high = estimate + q[0] - q[1], estimate + q[2] - q[1]
    se = samples.std(axis=0, ddof=1)
    z = (np.abs(estimate) - band) / se
    p = np.clip(special.erfc(z / math.sqrt(2.0)), 0.0, 1.0)
    called = (benjamini_hochberg(p) < alpha) & ((low > band) | (high < -band))
    return estimate, low, high, called


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "marked-position")
    parser.add_argument("--scenarios", nargs="+", default=list(ALL), choices=ALL)
    parser.add_argument("--seeds", type=int, default=128)
    parser.add_argument("--counts", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--band", type=float, default=0.15)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()

    import pandas as pd

    from auditkit.analyses.checks import check_spec
    from auditkit.analyze.latents import load_latents
    from auditkit.calibration.suite import classify, judge, seed_subset
    from auditkit.extract.store import ActivationStore
    from auditkit.plan import plan_audit
    from auditkit.run import run_audit
    from auditkit.rundir import RunDir
    from auditkit.spec import parse_spec

    out: dict[str, object] = {"seeds": args.seeds, "band": args.band, "scenarios": {}}
    for name in args.scenarios:
        work = args.work / name
        work.mkdir(parents=True, exist_ok=True)
        spec_path = work / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(scenario_spec(name, args.seeds), sort_keys=False))
        run = run_audit(spec_path, work / "run", render=False).run_dir
        spec = check_spec(parse_spec(spec_path.read_text()))
        plan = plan_audit(spec)
        latents = load_latents(ActivationStore(RunDir(run).activations), plan, "mean")
        assert latents.per_seed is not None
        prompts = pd.read_parquet(run / "results" / "prompts.parquet")
        positions = Positions(prompts, latents.row_map())
        truth_rows = json.loads((CHECKPOINTS / name / "truth.json").read_text())["rows"]
        share = {(r["attribute"], r["concept"]): r["share"] for r in truth_rows}
        truth = pd.Series([share[p] for p in positions.pairs])
        kind = classify(truth).to_numpy()
        per_seed = latents.per_seed.astype(np.float64)
        whole = positions.of(per_seed.mean(axis=1))
        print(f"\n{name} at {args.seeds} seeds: position against the drawn share")
        print("axis    concept      share  2·share−1  position")
        for (axis, concept), s, v in zip(positions.pairs, truth, whole, strict=True):
            print(f"{axis:<7} {concept:<11} {s:6.3f}  {2 * s - 1:+8.2f}  {v:+8.2f}")
        counts = []
        print(
            f"\n{name}: null-sized called / large found (shipped rule | position, band {args.band})"
        )
        for n in args.counts:
            tally = {"shipped": [0, 0, 0, 0], "position": [0, 0, 0, 0]}
            misses: list[str] = []
            for r in range(args.seeds // n):
                index = np.arange(r * n, (r + 1) * n)
                shipped = judge(spec, plan, seed_subset(latents, index), ["min_effect"])
                shipped = shipped.set_index(["axis", "concept"])["significant"]
                called_shipped = np.array([bool(shipped[p]) for p in positions.pairs])
                value, _, _, called = judge_positions(
                    per_seed[:, index],
                    positions,
                    args.band,
                    spec.statistics.alpha,
                    args.resamples,
                    seed=r,
                )
                for method, calls in (("shipped", called_shipped), ("position", called)):
                    t = tally[method]
                    t[0] += int((calls & (kind == "null-sized")).sum())
                    t[1] += int((kind == "null-sized").sum())
                    t[2] += int((calls & (kind == "large")).sum())
                    t[3] += int((kind == "large").sum())
                misses += [
                    f"{positions.pairs[i][1]}/{positions.pairs[i][0]} {value[i]:+.2f}"
                    for i in np.flatnonzero((kind == "large") & ~called)
                ]
            row = {"seeds": n, "replicates": args.seeds // n}
            for method, (nc, nn, lf, ln) in tally.items():
                row[method] = {"null_called": nc, "null": nn, "large_found": lf, "large": ln}
            row["position_misses"] = misses
            counts.append(row)

            def rate(a: int, b: int) -> str:
                return f"{a}/{b} = {a / b:.0%}" if b else "–"

            s, p = row["shipped"], row["position"]
            print(
                f"{n:4d} seeds x {row['replicates']}: shipped {rate(s['null_called'], s['null'])}"
                f" / {rate(s['large_found'], s['large'])} | position "
                f"{rate(p['null_called'], p['null'])} / {rate(p['large_found'], p['large'])}"
                + (f"  misses: {', '.join(misses)}" if misses else "")
            )
        out["scenarios"][name] = {  # type: ignore[index]
            "pairs": [
                {"axis": a, "concept": c, "share": float(s), "position": float(v)}
                for (a, c), s, v in zip(positions.pairs, truth, whole, strict=True)
            ],
            "counts": counts,
        }
    (args.work / "marked_position.json").write_text(json.dumps(out, indent=1))
    print(f"\nwritten: {args.work / 'marked_position.json'}")


if __name__ == "__main__":
    main()
