"""Where each seed of a concept sits along the age axis of toyworld-reworded, beside the age its
image is read as: why the lean misses mason, and how far a per-seed mixture gets.

Runs the calibration scenario ``toyworld-reworded`` (auditkit/calibration/scenarios) at 128 seeds
with a ``captions`` section (the default toyworld captioner; its age readings of this world match
the model's truth.json within 0.05 on every occupation), then, per occupation:

* the mean centred lean ``2 (h − M)·g / ‖g‖²`` (M: mean latent of the occupations, g: junior −
  senior axis) over both templates and all seeds;
* the same, over the seeds whose image is read junior and over those read senior;
* the junior share its mixture estimate gives: a two-component Gaussian mixture along g with
  one separation and spread for all occupations and an offset and weight per occupation (the
  best of three starts of EM, then each weight by profile likelihood); at all seeds and in
  four disjoint 32-seed replicates.

Both for the mean over the ten steps (what the audit's lean uses) and the last step alone.

Usage: python benchmarks/per_seed_age.py [--work runs/per-seed-age]
About 6 minutes on two CPU cores (the audit; it resumes), plus a minute of fitting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "auditkit" / "calibration" / "scenarios" / "toyworld-reworded.yaml"
TRUTH = ROOT / "auditkit" / "toyworld" / "checkpoints" / "toyworld-reworded" / "truth.json"
JUNIOR_READ = "young"  # the default captioner's word for the reworded world's "junior"


def mixture(x: dict[str, np.ndarray]) -> tuple[dict[str, float], float, float]:
    """Per-concept weight of the upper component; the shared separation and spread."""

    def em(w0: float) -> tuple[float, dict[str, float], dict[str, float], float, float]:
        w = dict.fromkeys(x, w0)
        mu = {t: float(np.percentile(v, 100 * (1 - w0))) - 0.5 for t, v in x.items()}
        d, s, ll = 1.0, 0.3, -np.inf
        for _ in range(200):
            resp, ll = {}, 0.0
            for t, v in x.items():
                a = w[t] * np.exp(-((v - mu[t] - d) ** 2) / (2 * s * s))
                b = (1 - w[t]) * np.exp(-((v - mu[t]) ** 2) / (2 * s * s))
                resp[t] = a / (a + b + 1e-300)
                ll += float(np.log(a + b + 1e-300).sum() - len(v) * np.log(s))
            w = {t: float(r.mean()) for t, r in resp.items()}
            for _ in range(3):
                mu = {t: float(np.mean(v - d * resp[t])) for t, v in x.items()}
                d = sum(float(((v - mu[t]) * resp[t]).sum()) for t, v in x.items()) / sum(
                    float(r.sum()) for r in resp.values()
                )
            sq = sum(
                float((resp[t] * (v - mu[t] - d) ** 2 + (1 - resp[t]) * (v - mu[t]) ** 2).sum())
                for t, v in x.items()
            )
            s = float(np.sqrt(sq / sum(len(v) for v in x.values())))
        return ll, w, mu, d, s

    _, _, _, d, s = max((em(w0) for w0 in (0.2, 0.5, 0.8)), key=lambda r: r[0])
    weights = {}
    for t, v in x.items():
        best = (-np.inf, 0.5)
        for w0 in np.linspace(0.01, 0.99, 99):
            for mu0 in np.linspace(v.min() - d, v.max(), 200):
                dens = w0 * np.exp(-((v - mu0 - d) ** 2) / (2 * s * s))
                dens += (1 - w0) * np.exp(-((v - mu0) ** 2) / (2 * s * s))
                ll = float(np.log(dens + 1e-300).sum())
                if ll > best[0]:
                    best = (ll, float(w0))
        weights[t] = best[1]
    return weights, d, s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "per-seed-age")
    parser.add_argument("--seeds", type=int, default=128)
    parser.add_argument("--replicate", type=int, default=32)
    args = parser.parse_args()

    import pandas as pd

    from auditkit.analyses.checks import check_spec
    from auditkit.analyze.latents import load_latents
    from auditkit.extract.store import ActivationStore
    from auditkit.plan import plan_audit
    from auditkit.run import run_audit
    from auditkit.rundir import RunDir
    from auditkit.spec import parse_spec

    raw = yaml.safe_load(SCENARIO.read_text())
    raw.update(seeds=args.seeds, captions={"captioner": {"kind": "toyworld"}})
    raw["analyses"] = ["lean", "lean_by_step"]
    raw["probe"]["aggregation"] = "per_step"
    args.work.mkdir(parents=True, exist_ok=True)
    spec_path = args.work / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    run = run_audit(spec_path, args.work / "run", render=False).run_dir
    spec = check_spec(parse_spec(spec_path.read_text()))
    plan = plan_audit(spec)
    latents = load_latents(ActivationStore(RunDir(run).activations), plan, "per_step")
    assert latents.per_seed is not None
    steps = len(latents.steps)
    per_seed = latents.per_seed.reshape(len(latents.prompt_ids), len(latents.seeds), steps, -1)
    row = latents.row_map()
    prompts = pd.read_parquet(run / "results" / "prompts.parquet")
    readings = pd.read_parquet(run / "captions" / "readings.parquet")
    age = readings[readings["attribute"] == "age"].set_index(["prompt_id", "seed"])["value"]
    axis = prompts[(prompts["role"] == "axis") & (prompts["set_name"] == "age")]
    concepts = prompts[prompts["role"] == "concept"]
    terms = list(dict.fromkeys(concepts["term"]))
    truth = {
        r["concept"]: r["share"]
        for r in json.loads(TRUTH.read_text())["rows"]
        if r["attribute"] == "age"
    }
    views: dict[str, object] = {}
    out = {"seeds": args.seeds, "replicate": args.replicate, "views": views}
    for view, pick in (("mean over steps", None), ("last step", steps - 1)):

        def h(ids: pd.Series, pick: int | None = pick) -> np.ndarray:
            x = per_seed[[row[p] for p in ids]].astype(np.float64)
            return x.mean(axis=2) if pick is None else x[:, :, pick]

        junior = h(axis[axis["group"] == "junior"]["prompt_id"]).mean(axis=(0, 1))
        senior = h(axis[axis["group"] == "senior"]["prompt_id"]).mean(axis=(0, 1))
        g = junior - senior
        centre = h(concepts["prompt_id"]).mean(axis=(0, 1))
        lean = {}
        for t in terms:
            ids = concepts[concepts["term"] == t]["prompt_id"]
            lean[t] = 2 * ((h(ids) - centre) @ g) / (g @ g)  # [templates, seeds]
        weights, sep, spread = mixture({t: v.reshape(-1) for t, v in lean.items()})
        reps = []
        for r in range(args.seeds // args.replicate):
            cut = slice(r * args.replicate, (r + 1) * args.replicate)
            reps.append(mixture({t: v[:, cut].reshape(-1) for t, v in lean.items()})[0])
        table = []
        print(f"\n{view}: separation {sep:.2f}, spread {spread:.2f} (half-axis units)")
        print("occupation  truth  read  lean   |junior |senior  mixture  replicates")
        for t in terms:
            ids = list(concepts[concepts["term"] == t]["prompt_id"])
            read = np.array([[age.get((p, s)) == JUNIOR_READ for s in latents.seeds] for p in ids])
            v = lean[t]
            entry = {
                "occupation": t,
                "truth_junior_share": truth[t],
                "read_junior_share": float(read.mean()),
                "lean": float(v.mean()),
                "lean_read_junior": float(v[read].mean()) if read.any() else None,
                "lean_read_senior": float(v[~read].mean()) if (~read).any() else None,
                "mixture_junior_share": weights[t],
                "mixture_replicates": [rep[t] for rep in reps],
            }
            table.append(entry)
            print(
                f"{t:<10} {truth[t]:5.2f} {read.mean():5.2f} {v.mean():+5.2f}"
                f"  {entry['lean_read_junior'] or float('nan'):+5.2f}"
                f"  {entry['lean_read_senior'] or float('nan'):+5.2f}  {weights[t]:5.2f}   "
                + " ".join(f"{rep[t]:.2f}" for rep in reps)
            )
        views[view] = {"separation": sep, "spread": spread, "rows": table}
    (args.work / "per_seed_age.json").write_text(json.dumps(out, indent=1))
    print(f"\nwritten: {args.work / 'per_seed_age.json'}")


if __name__ == "__main__":
    main()
