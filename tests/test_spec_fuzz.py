"""Property-based fuzzing of the spec loader and validator (issue 16): whatever the bytes of a
spec file, reading it as ``auditkit plan`` does gives a plan or a located spec error (exit 2),
within 2 s of CPU time and 500 MB of memory, never another exception.

A modest number of examples runs here (``AUDITKIT_FUZZ_EXAMPLES``, default 120 per level, the
file in well under a minute on two cores); ``benchmarks/fuzz_spec.py`` is the long run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from spec_fuzzing import hostile_texts, mutated_specs, read_like_plan

EXAMPLES = int(os.environ.get("AUDITKIT_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the time is checked below, in CPU seconds (the machine is shared)
    database=None,
    derandomize=os.environ.get("AUDITKIT_FUZZ_RANDOM") is None,
    suppress_health_check=list(HealthCheck),
)
MAX_CPU_SECONDS = 2.0
MAX_RSS_GROWTH = 500 * 2**20


def _holds(data: bytes, folder: Path) -> None:
    outcome = read_like_plan(data, folder)
    assert outcome.kind != "crash", (outcome.error, outcome.message, data[:300])
    assert not outcome.unlocated, (outcome.message, data[:300])
    assert outcome.cpu < MAX_CPU_SECONDS, (outcome, data[:300])
    assert outcome.rss_growth < MAX_RSS_GROWTH, (outcome, data[:300])


@FUZZ
@given(data=hostile_texts())
def test_any_spec_text_gives_a_plan_or_a_located_spec_error(
    data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _holds(data, tmp_path_factory.mktemp("fuzz", numbered=True))


@FUZZ
@given(data=mutated_specs())
def test_any_mutation_of_a_valid_spec_gives_a_plan_or_a_located_spec_error(
    data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _holds(data, tmp_path_factory.mktemp("fuzz", numbered=True))


BAD = {
    "not utf-8": b"spec_version: 1\nname: \xff\xfe\n",
    "utf-16": "spec_version: 1\n".encode("utf-16"),
    "deep": b"spec_version: 1\ndescription: " + b"[" * 2000 + b"]" * 2000 + b"\n",
    "bomb": (
        b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
        b"e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    ),
    "key twice": b"spec_version: 1\nspec_version: 1\n",
    "nul id": b'spec_version: 1\nname: x\nmodel: {id: "./a\\0"}\n',
    "seeds true": b"spec_version: 1\nname: x\nseeds: true\n",
}


@pytest.mark.parametrize("name", list(BAD))
def test_the_cli_exits_2_on_hostile_specs(tmp_path: Path, name: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(BAD[name])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, "-m", "auditkit", "plan", str(spec), "--cache-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "unexpected" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
