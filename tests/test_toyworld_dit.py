"""The known answer on a transformer denoiser: toyworld-dit's default audit, at the PixArt
family's default hook, recovers the planted rates (issue 13: Spearman at least 0.9 for gender
and skin).

The audit is ``audits/toyworld-dit.yaml`` with its probe, seeds and vocabulary as shipped and
only the lean read (no captions, no later passes), so it costs one extraction of 896 units: the
lean scores are those of the full audit, which reads the same prompts and seeds.
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_the_dit_default_audit_recovers_the_planted_rates(tmp_path: Path) -> None:
    from auditkit.cli.toyworld import _score_audit
    from auditkit.toyworld.build import PACKAGE_CHECKPOINTS

    shipped = yaml.safe_load((ROOT / "audits" / "toyworld-dit.yaml").read_text())
    assert "hook" not in shipped["probe"], "the audit must read the family's default hook"
    for key in ("captions", "crossings", "gates"):
        shipped.pop(key, None)
    shipped["analyses"] = ["lean"]
    shipped["report"] = {"formats": ["html"]}
    spec = tmp_path / "toyworld-dit-lean.yaml"
    spec.write_text(yaml.safe_dump(shipped, sort_keys=False))  # groups keep their order
    # what 'auditkit toyworld evaluate --audit' runs and scores
    _folder, record = _score_audit(spec, tmp_path / "runs", PACKAGE_CHECKPOINTS)

    resolved = yaml.safe_load((tmp_path / "runs" / shipped["name"] / "spec.yaml").read_text())
    assert resolved["probe"]["hook"] == "transformer.transformer_blocks.5"  # 2 x 8 // 3
    assert resolved["probe"]["tokens"] == "full"
    recovery = record["recovery"]
    assert recovery["gender"]["spearman"] >= 0.9, recovery["gender"]
    assert recovery["skin"]["spearman"] >= 0.9, recovery["skin"]
    # age is planted at parity: its leans stay well inside those of the planted attributes
    age = recovery["age"]["max_abs_score"]
    assert age < 0.5 * recovery["gender"]["max_abs_score"], recovery["age"]
