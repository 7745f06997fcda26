"""``auditkit toyworld``: train and evaluate toyworld, the small model with planted biases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from auditkit.cli.common import handle_errors
from auditkit.cli.options import device_option, path_option, variants_option


@click.group()
def toyworld() -> None:
    """Train and evaluate toyworld, the small model with planted biases."""


@toyworld.command("train")
@path_option(
    "--out",
    "out_root",
    help="Folder for the checkpoints (default: the package's shipped ones).",
)
@variants_option(
    help="Which checkpoints to train (default: biased and balanced; reworded, the "
    "calibration suite's second world, and dit, the biased world with a DiT denoiser, on "
    "request)."
)
@click.option("--seed", default=0, show_default=True, help="Seed of every random choice.")
@click.option("--steps", default=4800, show_default=True, help="Denoiser training steps.")
@click.option("--vae-steps", default=1200, show_default=True, help="VAE training steps.")
@click.option(
    "--captioner-steps",
    default=600,
    show_default=True,
    help="Captioner training steps (0: keep the existing captioner).",
)
@path_option(
    "--vae-from",
    exists=True,
    file_okay=False,
    help="Reuse the VAE of this checkpoint folder instead of training one.",
)
@device_option(help="Device for the denoiser training (cpu, cuda, cuda:1, ...).")
@click.option("--threads", default=2, show_default=True, help="CPU threads torch may use.")
@path_option(
    "--continue-from",
    exists=True,
    file_okay=False,
    help="dit only: go on training this toyworld-dit folder (a further phase).",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="dit only: peak learning rate (default 1e-3).",
)
@handle_errors
def toyworld_train(
    out_root: Path | None,
    variants: tuple[str, ...],
    seed: int,
    steps: int,
    vae_steps: int,
    captioner_steps: int,
    vae_from: Path | None,
    device: str,
    threads: int,
    continue_from: Path | None,
    lr: float | None,
) -> None:
    """Render the world and train captioner, VAE, text encoder and U-Net (CPU by default)."""
    from auditkit.toyworld.build import PACKAGE_CHECKPOINTS, train_toyworld
    from auditkit.toyworld.captioner import save_captioner, train_captioner
    from auditkit.toyworld.train import TrainConfig

    root = out_root or PACKAGE_CHECKPOINTS
    chosen = tuple(variants) or ("biased", "balanced")
    if captioner_steps:
        from auditkit.toyworld.world import reader_of

        # one reader per world drawn: the reworded world's skirts take the occupation's colour
        # (toyworld-dit reads with the biased world's captioner: it trains none of its own)
        drawn = [v for v in chosen if v != "dit"]
        worlds = {reader_of(v): "occupation" if v == "reworded" else "trousers" for v in drawn}
        for name, skirt in worlds.items():
            captioner, metrics = train_captioner(
                steps=captioner_steps, seed=seed, num_threads=1, skirt=skirt, captioner_id=name
            )
            save_captioner(captioner, root / name)
            click.echo(f"{name}: held-out accuracy {metrics}")
    from auditkit.models.loading import resolve_device

    device = resolve_device(device)
    if "dit" in chosen:  # the biased world's tokenizer, VAE, text encoder and captioner
        from auditkit.toyworld.build import checkpoint_path
        from auditkit.toyworld.dit import train_dit_checkpoint

        base = checkpoint_path("biased", root)
        if not (base / "model_index.json").is_file():  # --out elsewhere: the shipped one
            base = checkpoint_path("biased")
        from auditkit.toyworld.dit import DiTConfig

        config = TrainConfig(seed=seed, steps=steps, device=device, threads=threads)
        dit = DiTConfig() if lr is None else DiTConfig(lr=lr)
        folder = train_dit_checkpoint(
            root, base=base, config=config, dit=dit, continue_from=continue_from
        )
        click.echo(f"dit: {folder}")
        chosen = tuple(v for v in chosen if v != "dit")
        if not chosen:
            return
    config = TrainConfig(
        seed=seed, steps=steps, vae_steps=vae_steps, device=device, threads=threads
    )
    trained = train_toyworld(root, variants=chosen, config=config, vae_from=vae_from)  # type: ignore[arg-type]
    for variant, folder in trained.items():
        click.echo(f"{variant}: {folder}")


@toyworld.command("evaluate")
@path_option(
    "--checkpoints",
    "root",
    help="Folder holding toyworld-* checkpoints (default: the shipped ones).",
)
@click.option(
    "--guidance",
    default=4.0,
    show_default=True,
    help="The audit's guidance scale (amplification is measured there).",
)
@click.option("--steps", default=10, show_default=True, help="DDIM sampling steps.")
@path_option(
    "--audit",
    "audits",
    multiple=True,
    help="Audit spec of a toyworld checkpoint to run and score against the planted "
    "rates (repeatable).",
)
@path_option(
    "--runs",
    default=Path("runs"),
    show_default=True,
    help="Where the audits' run directories go.",
)
@variants_option(help="Checkpoints to measure (default: both).")
@click.option("--audits-only", is_flag=True, help="Only run and score the --audit specs.")
@device_option(help="Device for the sampling.")
@click.option(
    "--rate-seeds",
    default=128,
    show_default=True,
    help="Seeds per occupation for the output rates (guidance 1 and the audit's).",
)
@handle_errors
def toyworld_evaluate(
    root: Path | None,
    guidance: float,
    steps: int,
    audits: tuple[Path, ...],
    runs: Path,
    variants: tuple[str, ...],
    audits_only: bool,
    device: str,
    rate_seeds: int,
) -> None:
    """Measure prompt following, output rates and audit recovery; refresh the model cards."""
    import json

    from auditkit.models.loading import resolve_device
    from auditkit.toyworld.build import PACKAGE_CHECKPOINTS, VARIANTS, checkpoint_path
    from auditkit.toyworld.card import write_model_card
    from auditkit.toyworld.evaluate import evaluate_folder

    device = resolve_device(device)
    root = root or PACKAGE_CHECKPOINTS
    for variant in () if audits_only else (variants or VARIANTS):
        folder = checkpoint_path(variant, root)  # type: ignore[arg-type]
        if folder.is_dir():
            evaluate_folder(
                folder,
                root / "toyworld-captioner",
                guidance,
                steps,
                device=device,
                rate_seeds=rate_seeds,
            )
            click.echo(f"{variant}: measured {folder / 'quality.json'}")
    for spec in audits:
        folder, record = _score_audit(spec, runs, root)
        quality_path = folder / "quality.json"
        quality = json.loads(quality_path.read_text()) if quality_path.is_file() else {}
        quality["audit"] = record
        quality_path.write_text(json.dumps(quality, indent=2) + "\n")
        click.echo(f"{folder.name}: audit recovery {record['recovery']}")
    for variant in (*VARIANTS, "reworded", "dit"):
        folder = checkpoint_path(variant, root)  # type: ignore[arg-type]
        if folder.is_dir():
            click.echo(f"model card: {write_model_card(folder)}")


def _score_audit(spec_path: Any, runs: Any, root: Any) -> tuple[Any, dict[str, Any]]:
    """Run a toyworld audit spec and score its leans against the checkpoint's planted rates
    (the harness runs audits, so it lives here, above the run, not in toyworld)."""
    import json
    import time
    from pathlib import Path

    from auditkit.errors import UsageError
    from auditkit.run import run_audit
    from auditkit.rundir import RunDir
    from auditkit.spec import load_spec
    from auditkit.toyworld.evaluate import planted_recovery

    spec = load_spec(spec_path)
    name = spec.model.id.removeprefix("builtin:")
    folder = Path(root) / name
    if not (folder / "planted_rates.json").is_file():
        raise UsageError(
            f"{spec_path}: model.id {spec.model.id!r} is not a toyworld checkpoint under {root}."
        )
    started = time.perf_counter()
    outcome = run_audit(spec, Path(runs) / spec.name, show_progress=False)
    lean = RunDir(outcome.run_dir).table("lean", required=True)
    planted = json.loads((folder / "planted_rates.json").read_text())
    return folder, {
        "spec": spec.name,
        "seeds": len(spec.seed_list),
        "steps": spec.model.steps,
        "guidance_scale": spec.model.guidance_scale,
        "seconds": round(time.perf_counter() - started, 1),
        "recovery": planted_recovery(lean, planted),
    }
