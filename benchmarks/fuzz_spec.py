"""The long spec fuzzing run (issue 16): read many generated hostile specs the way
``auditkit plan`` does, in this process, and print what came out.

    python benchmarks/fuzz_spec.py --examples 10000

Every other example is YAML text or bytes (tests/spec_fuzzing.py: ``hostile_texts``), the
others mutations of audits/toyworld.yaml (``mutated_specs``), drawn at random (``--seed`` repeats a
run). It prints the counts by outcome (a plan, a spec or usage error, any other exception:
a defect), the exceptions by type, the specs whose error named no line, the longest time one
spec took (wall and CPU) and the process's peak resident memory, and exits 1 when a spec
crashed, took 2 s of CPU or more, or grew the peak memory by 500 MB or more. The first
examples of each failure, and the slowest spec, are written to ``--keep`` (default:
fuzz-failures/) to be replayed (``auditkit plan FILE``).
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

MAX_CPU_SECONDS = 2.0
MAX_RSS_GROWTH = 500 * 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=None, help="repeat a run (default: random)")
    parser.add_argument("--keep", type=Path, default=Path("fuzz-failures"))
    args = parser.parse_args()

    from hypothesis import HealthCheck, Phase, given, seed, settings
    from spec_fuzzing import Outcome, hostile_texts, mutated_specs, peak_rss, read_like_plan

    import auditkit.analyses  # noqa: F401  (the plan asks the slices for their prompts)

    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    by_level: Counter[str] = Counter()
    failures: list[tuple[str, Outcome, bytes]] = []
    slowest: list[float] = [0.0, 0.0]
    largest = [0]
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="auditkit-fuzz-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # no scratch left in /tmp
    count = [0]
    current = [""]
    slowest_spec: list[tuple[Outcome, bytes] | None] = [None]

    def check(level: str, data: bytes) -> None:
        outcome = read_like_plan(data, folder / str(count[0] % 50))
        count[0] += 1
        by_level[level] += 1
        outcomes[outcome.kind] += 1
        errors[outcome.error or "(plan)"] += 1
        slowest[0] = max(slowest[0], outcome.wall)
        if outcome.cpu > slowest[1]:
            slowest[1] = outcome.cpu
            slowest_spec[0] = (outcome, data)
        largest[0] = max(largest[0], outcome.rss_growth)
        why = (
            "crash"
            if outcome.kind == "crash"
            else "slow"
            if outcome.cpu >= MAX_CPU_SECONDS
            else "memory"
            if outcome.rss_growth >= MAX_RSS_GROWTH
            else "unlocated"
            if outcome.unlocated
            else ""
        )
        if why:
            failures.append((why, outcome, data))
        if count[0] % 1000 == 0:
            print(f"  {count[0]:,} specs, {time.perf_counter() - started:.0f}s", flush=True)

    for level, strategy, examples in (
        ("text", hostile_texts(), args.examples - args.examples // 2),
        ("structure", mutated_specs(), args.examples // 2),
    ):

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate],
        )
        @given(strategy)
        def one(data: bytes) -> None:
            check(current[0], data)

        current[0] = level
        (seed(args.seed)(one) if args.seed is not None else one)()
    total = time.perf_counter() - started

    print(
        f"specs fuzzed: {count[0]:,} ({by_level['text']:,} text/bytes, "
        f"{by_level['structure']:,} structure) in {total:.0f}s"
    )
    print("outcomes: " + ", ".join(f"{k} {v:,}" for k, v in outcomes.most_common()))
    print("by exception: " + ", ".join(f"{k} {v:,}" for k, v in errors.most_common()))
    print(f"max time per spec: {slowest[0]:.2f}s wall, {slowest[1]:.2f}s CPU")
    print(f"max growth of peak RSS during one spec: {largest[0] / 2**20:.1f} MiB")
    print(f"peak RSS of the process: {peak_rss() / 2**20:.0f} MiB")
    if slowest_spec[0] is not None:
        outcome, data = slowest_spec[0]
        args.keep.mkdir(parents=True, exist_ok=True)
        (args.keep / "slowest.yaml").write_bytes(data)
        print(
            f"slowest spec ({outcome.cpu:.2f}s CPU, {len(data):,} bytes, "
            f"{outcome.error or 'a plan'}): {args.keep / 'slowest.yaml'}"
        )
    kinds = Counter(why for why, _, _ in failures)
    print("failures: " + (", ".join(f"{k} {v}" for k, v in kinds.items()) or "none"))
    if failures:
        args.keep.mkdir(parents=True, exist_ok=True)
        for i, (why, outcome, data) in enumerate(failures[:50]):
            (args.keep / f"{i:03d}-{why}-{outcome.error or 'plan'}.yaml").write_bytes(data)
            print(f"  {why}: {outcome.error} {outcome.message[:300]!r}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
