"""Could the starting noise of each seed be a control variate for the lean? (issue 11)

The seed's starting latent is drawn from N(0, I), so any feature of it has a known mean (0): a
regression of each seed's lean score on such features, subtracted, would narrow a lean's
interval without moving its expected value, and could pull a replicate whose seeds happened to
draw, say, fewer junior carers back towards the model's own rate. This script measures whether
the noise explains enough of the per-seed scores for that to matter.

On a stored calibration scenario (default toyworld-reworded at its 512 seeds; ``auditkit
calibrate run`` extracts the store, or this script does, resumably), per axis and concept:

* the per-seed score ``2 (h − m)·g / ‖g‖²`` (h: the concept's latent at that seed, mean over its
  templates; g and m: the axis and the midpoint of its groups over all seeds);
* the held-out R² of a ridge regression of that score on the seed's starting noise, average-
  pooled per channel to 1x1, 2x2 and 4x4 cells (4, 16 and 64 features; fitted on the even seeds,
  scored on the odd ones, the best of four ridge strengths);
* the mean correlation between the concepts' per-seed scores, and each score's spread.

Usage: python benchmarks/noise_covariate.py [--scenario toyworld-reworded] [--work runs/calibration]
About 11 minutes on two CPU cores when the store must be extracted, seconds otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def per_seed_scores(name: str, work: Path) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray]:
    """Per axis, each concept's (and each group's, as ``@group``) per-seed score; and the
    starting noise of every seed [N, ...]."""
    from auditkit.analyze.measures import build_layout
    from auditkit.calibration.suite import load_stored_scenario
    from auditkit.extract.runner import initial_noise
    from auditkit.models.loading import load_pipeline

    scenario = load_stored_scenario(name, work, show_progress=False)
    spec, latents = scenario.spec, scenario.latents
    assert latents.per_seed is not None
    X = latents.per_seed.astype(np.float64)  # [prompts, seeds, features]
    layout = build_layout(spec, latents.row_map())  # the analysis's own prompt rows
    concepts = {
        c: X[rows].mean(axis=0) for cset in layout.concepts for c, rows in cset.terms.items()
    }
    scores: dict[str, dict[str, np.ndarray]] = {}
    for axis in layout.axes:
        if not axis.two_group:
            continue
        groups = axis.group_names[:2]
        G = [np.mean([X[rows].mean(axis=0) for rows in axis.groups[g]], axis=0) for g in groups]
        first, second = G[0].mean(axis=0), G[1].mean(axis=0)
        g_vec, mid = first - second, (first + second) / 2
        scale = 2 / float(g_vec @ g_vec)
        per = {c: scale * ((h - mid) @ g_vec) for c, h in concepts.items()}
        per |= {"@" + g: scale * ((G[k] - mid) @ g_vec) for k, g in enumerate(groups)}
        scores[axis.name] = per
    loaded = load_pipeline(spec.model, cache_dir=work)
    noise = np.stack([
        initial_noise(loaded.pipe, s, spec.model.resolution).numpy()
        for s in latents.seeds
    ])  # fmt: skip
    return scores, noise


def held_out_r2(F: np.ndarray, y: np.ndarray) -> float:
    """R² on the odd seeds of a ridge fit on the even ones (best of four strengths)."""
    train, test = np.arange(0, len(y), 2), np.arange(1, len(y), 2)
    centre = F[train].mean(axis=0)
    A = F[train] - centre
    best = -np.inf
    for lam in (1.0, 10.0, 100.0, 1000.0):
        beta = np.linalg.solve(
            A.T @ A + lam * np.eye(A.shape[1]), A.T @ (y[train] - y[train].mean())
        )
        pred = (F[test] - centre) @ beta + y[train].mean()
        best = max(best, 1 - float(((y[test] - pred) ** 2).mean() / y[test].var()))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="toyworld-reworded")
    parser.add_argument("--work", type=Path, default=Path("runs/calibration"))
    args = parser.parse_args()
    scores, noise = per_seed_scores(args.scenario, args.work)
    n, channels, height, width = noise.shape
    print(f"{args.scenario}: {n} seeds, starting noise {list(noise.shape[1:])}")
    for axis, per in scores.items():
        names = list(per)
        print(f"\n{axis}: held-out R² of the per-seed score on the pooled noise")
        print(f"{'cells':>6} " + " ".join(f"{c:>9}" for c in names))
        for k in (1, 2, 4):
            F = noise.reshape(n, channels, k, height // k, k, width // k).mean(axis=(3, 5))
            F = F.reshape(n, -1)
            F = F / F.std(axis=0)
            print(f"{k}x{k:<4} " + " ".join(f"{held_out_r2(F, per[c]):9.2f}" for c in names))
        print(f"{'sd':>6} " + " ".join(f"{per[c].std():9.2f}" for c in names))
        concepts = [c for c in names if not c.startswith("@")]
        R = np.corrcoef(np.stack([per[c] for c in concepts]))
        off = (R.sum() - len(concepts)) / (len(concepts) ** 2 - len(concepts))
        print(f"mean correlation between the concepts' per-seed scores: {off:.2f}")


if __name__ == "__main__":
    main()
