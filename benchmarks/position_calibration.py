"""The calibration suite's table for the stored scenarios whose 512-seed stores are not yet
extracted with their marked prompts: every method judged on the 128-seed stores that
``benchmarks/marked_position.py`` writes (seeds 0-127, every axis marked), merged with the
calls of an ``auditkit calibrate run`` (the scenarios whose 512-seed stores exist, and the
synthetic ones), into one table in the suite's own format (docs/method.md, "The position
between marked variants").

With 128 seeds a scenario has at most 8 replicates of 16 seeds, 4 of 32, 2 of 64 and 1 of 128
(the 512-seed stores give 8, 8, 8 and 4).

Usage:
    auditkit calibrate run --scenario toyworld-reworded --scenario synthetic \\
        --scenario synthetic-nuisance --work runs/calibration
    python benchmarks/position_calibration.py --calls runs/calibration/calls.parquet \\
        --scenarios toyworld-biased toyworld-balanced --out runs/position-calibration
About 9 minutes of judging per 128-seed scenario on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def scenario_calls(name: str, stores: Path) -> pd.DataFrame:
    """Every method's calls on the 128-seed store of a stored scenario."""
    import auditkit.analyses  # noqa: F401  (the slices plan the marked prompts)
    from auditkit.analyze.latents import load_latents
    from auditkit.calibration.suite import (
        METHODS,
        SCENARIO_DIR,
        Scenario,
        replicate_calls,
        scenario_model_folder,
        truth_by_axis,
    )
    from auditkit.calibration.truth import read_truth
    from auditkit.extract.store import ActivationStore
    from auditkit.plan import plan_audit
    from auditkit.spec import load_spec

    spec = load_spec(SCENARIO_DIR / f"{name}.yaml").model_copy(update={"seeds": 128})
    truth = truth_by_axis(spec, read_truth(scenario_model_folder(spec)))
    store = ActivationStore(stores / name / "run" / "activations")
    latents = load_latents(store, plan_audit(spec), spec.probe.aggregation)
    return replicate_calls(
        Scenario(name, spec, latents, truth),
        (16, 32, 64, 128),
        max_replicates=8,
        methods=tuple(METHODS),
        progress=print,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=Path, nargs="*", default=[])
    parser.add_argument("--scenarios", nargs="*", default=["toyworld-biased", "toyworld-balanced"])
    parser.add_argument("--stores", type=Path, default=ROOT / "runs" / "marked-position")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "position-calibration")
    args = parser.parse_args()

    from auditkit.calibration.report import mapping_document, markdown, share_mappings
    from auditkit.calibration.suite import rates

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    frames = [pd.read_parquet(path) for path in args.calls]
    for name in args.scenarios:
        cached = args.out / f"{name}.parquet"
        if not cached.is_file():
            scenario_calls(name, args.stores).to_parquet(cached, index=False)
        frames.append(pd.read_parquet(cached))
    calls = pd.concat(frames, ignore_index=True)
    table = rates(calls)
    mapping, positions = share_mappings(calls)
    scenarios = list(dict.fromkeys(calls["scenario"]))
    text = markdown(
        table, mapping, scenarios, (16, 32, 64, 128), 8, time.perf_counter() - started, positions
    )
    calls.to_parquet(args.out / "calls.parquet", index=False)
    (args.out / "calibration.md").write_text(text, encoding="utf-8")
    document = mapping_document(mapping, positions)
    (args.out / "mapping.json").write_text(json.dumps(document, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
