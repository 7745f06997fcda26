"""Gate verdicts of the two default toyworld audits at 32 and at 128 seeds.

The default gates must fail on toyworld-biased and pass on toyworld-balanced whatever the seed
count: the significance rule's verdict on a null-sized lean must not change with seeds alone.
This runs ``audits/toyworld.yaml`` and ``audits/toyworld-balanced.yaml`` as written (32 seeds)
and again with ``seeds: 128`` (seeds 0-127), and prints every gate's value and verdict.

Usage: python benchmarks/gate_stability.py [--work runs/gate-stability] [--seeds 32,128]
About 25 minutes on two CPU cores (the 128-seed runs dominate); every run resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
AUDITS = ("toyworld.yaml", "toyworld-balanced.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "gate-stability")
    parser.add_argument("--seeds", default="32,128")
    args = parser.parse_args()

    from auditkit.run import run_audit
    from auditkit.spec import parse_spec

    rows = []
    for audit in AUDITS:
        for seeds in (int(s) for s in args.seeds.split(",")):
            raw = yaml.safe_load((ROOT / "audits" / audit).read_text())
            raw["seeds"] = seeds
            raw["report"]["formats"] = ["html"]
            spec = parse_spec(yaml.safe_dump(raw))
            out = args.work / f"{Path(audit).stem}-{seeds}"
            run_audit(spec, out, show_progress=False, render=False)
            gates = json.loads((out / "results" / "gates.json").read_text())
            for gate in gates["gates"]:
                rows.append((audit, seeds, gate["name"], gate["value"], gate["passed"]))
    print(f"{'audit':<24} {'seeds':>5}  {'gate':<46} {'value':>7}  verdict")
    for audit, seeds, name, value, passed in rows:
        shown = "-" if value is None else f"{value:.3g}"
        print(f"{audit:<24} {seeds:>5}  {name:<46} {shown:>7}  {'pass' if passed else 'FAIL'}")


if __name__ == "__main__":
    main()
