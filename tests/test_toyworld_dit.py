"""The known answer on a transformer denoiser: toyworld-dit's default audit, at the PixArt
family's default hook, recovers the planted rates (issue 13: Spearman at least 0.9 for gender
and skin).

The audit is ``audits/toyworld-dit.yaml`` with its probe, seeds and vocabulary as shipped and
only the lean read (no captions, no later passes), so it costs one extraction of 896 units: the
lean scores are those of the full audit, which reads the same prompts and seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from auditkit.toyworld.build import checkpoint_path
from auditkit.toyworld.evaluate import planted_recovery

ROOT = Path(__file__).resolve().parents[1]


def test_the_dit_default_audit_recovers_the_planted_rates(tmp_path: Path) -> None:
    from auditkit.run import run_audit
    from auditkit.spec import parse_spec

    shipped = yaml.safe_load((ROOT / "audits" / "toyworld-dit.yaml").read_text())
    assert "hook" not in shipped["probe"], "the audit must read the family's default hook"
    for key in ("captions", "crossings", "gates"):
        shipped.pop(key, None)
    shipped["analyses"] = ["lean"]
    shipped["report"] = {"formats": ["html"]}
    spec = parse_spec(yaml.safe_dump(shipped, sort_keys=False))  # groups keep their order
    run = tmp_path / "dit"
    run_audit(spec, run, show_progress=False, render=False)

    resolved = yaml.safe_load((run / "spec.yaml").read_text())
    assert resolved["probe"]["hook"] == "transformer.transformer_blocks.5"  # 2 x 8 // 3
    assert resolved["probe"]["tokens"] == "full"
    lean = pd.read_parquet(run / "results" / "lean.parquet")
    planted = json.loads((checkpoint_path("dit") / "planted_rates.json").read_text())
    recovery = planted_recovery(lean, planted)
    assert recovery["gender"]["spearman"] >= 0.9, recovery["gender"]
    assert recovery["skin"]["spearman"] >= 0.9, recovery["skin"]
    # age is planted at parity: its leans stay well inside those of the planted attributes
    ages = lean[lean["axis"] == "age"]["score"].abs()
    assert ages.max() < 0.5 * recovery["gender"]["max_abs_score"], ages.max()
