"""The model card of a toyworld checkpoint: planted rates, training, measured quality, hashes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auditkit.provenance import sha256_file
from auditkit.toyworld.world import reader_of

CARD = "README.md"


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def file_hashes(folder: Path) -> list[tuple[str, int, str]]:
    """(relative path, bytes, sha256) of every file but the card itself."""
    rows = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != CARD:
            rows.append(
                (path.relative_to(folder).as_posix(), path.stat().st_size, sha256_file(path))
            )
    return rows


def _control_line(folder: Path, variant: str, recovery: dict[str, Any]) -> list[str]:
    """The balanced control against its biased twin (a sibling folder): the largest lean over
    the planted attributes as a share of the biased model's (issue 3 asks at most 1/4)."""
    if variant != "balanced":
        return []
    twin = _load(folder.parent / "toyworld-biased", "quality.json") or {}
    biased = twin.get("audit", {}).get("recovery")
    planted = [a for a in ("gender", "skin") if a in recovery and biased and a in biased]
    if not biased or not planted:
        return []

    def top(table: dict[str, Any], axes: Sequence[str]) -> float:
        return max(float(table[a]["max_abs_score"]) for a in axes)

    own, theirs = top(recovery, planted), top(biased, planted)
    per = ", ".join(
        f"{a} {top(recovery, [a]):.3f} / {top(biased, [a]):.3f} = "
        f"{top(recovery, [a]) / top(biased, [a]):.2f}"
        for a in planted
    )
    return [
        "",
        f"- Control: over the planted attributes the largest |lean score| is {own:.3f}, "
        f"{own / theirs:.2f} of toyworld-biased's {theirs:.3f} with the same spec (at most 0.25 "
        f"is asked); per attribute {per}.",
    ]


def _following_line(follow: dict[str, Any], reader: str, labels: Sequence[str]) -> str:
    """One sentence of prompt-following shares, labelled per kind of prompt."""
    kinds = ("one_attribute_marked", "fully_marked", "attribute_only")
    return (
        f"Prompt following ({follow['prompts']} prompts x {follow['seeds_per_prompt']} seeds, "
        f"guidance {follow['guidance_scale']}{reader}), share of images read as the prompted "
        "value: "
        + "; ".join(
            f"{label} " + ", ".join(f"{k} {v:.1%}" for k, v in follow[kind].items())
            for kind, label in zip(kinds, labels, strict=True)
        )
        + "."
    )


def _reworded_rates(planted: dict[str, Any]) -> list[str]:
    """The reworded world's planted section: age planted, gender entangled, in its words."""
    rates = planted.get("rates", {})
    groups = planted.get("groups", {})
    figures = planted.get("figures", {})
    first = {a: (groups.get(a) or ["?"])[0] for a in ("gender", "skin", "age")}
    lines = [
        "The second toyworld, trained for auditkit's calibration suite: the same drawn figures "
        "as toyworld-biased, told in other words and templates ("
        + ", ".join(f"`{t}`" for t in planted.get("templates", []))
        + "). Age is planted; gender and skin are 0.5 everywhere, but gender is entangled "
        "with the attire: "
        + str(planted.get("entangled", {}).get("gender", ""))
        + ". Share of the first group among images captioned with the unmarked occupation:",
        "",
        f"| occupation (figure) | gender: share {first['gender']} | skin: share "
        f"{first['skin']} | age: share {first['age']} |",
        "|---|---|---|---|",
    ]
    for occupation in rates.get("age", {}):
        lines.append(
            f"| {occupation} ({figures.get(occupation, '?')}) | "
            + " | ".join(f"{rates[a][occupation]:.2f}" for a in ("gender", "skin", "age"))
            + " |"
        )
    return lines


def _truth_lines(folder: Path) -> list[str]:
    """What the checkpoint draws (truth.json), when measured."""
    truth = _load(folder, "truth.json")
    if not truth:
        return []
    settings = truth["settings"]
    attributes = list(settings["attributes"])
    concepts = list(settings["concepts"])
    share = {(r["attribute"], r["concept"]): r for r in truth["rows"]}
    lines = [
        "",
        "## What it draws (the calibration truth)",
        "",
        f"Share of {settings['seeds']} images per occupation read as the first group by "
        f"`{truth['reader']['id']}` (sha256 `{truth['reader']['sha256'][:16]}…`), at guidance "
        f"{settings['guidance_scale']} and {settings['steps']} steps, the templates "
        + ", ".join(f"`{t}`" for t in settings["templates"])
        + f" taking turns, seeds {settings['first_seed']} and up (`truth.json`; "
        "`auditkit calibrate truth`). auditkit's calibration suite scores its significance "
        "rule against these shares.",
        "",
        "| occupation | "
        + " | ".join(f"{a}: share {settings['attributes'][a][0]}" for a in attributes)
        + " |",
        "|---|" + "---|" * len(attributes),
    ]
    for concept in concepts:
        cells = []
        for a in attributes:
            row = share.get((a, concept))
            cells.append(
                "–"
                if row is None
                else f"{row['share']:.2f} ({row['ci_low']:.2f}–{row['ci_high']:.2f})"
            )
        lines.append(f"| {concept} | " + " | ".join(cells) + " |")
    return lines


def _description(variant: str) -> str:
    """What the checkpoint is, in one paragraph."""
    if variant == "dit":
        return (
            "A small latent diffusion model with a DiT denoiser (PixArt's component classes: "
            "a PixArtTransformer2DModel with adaLN-single blocks reading the text through "
            "cross-attention, in a PixArtSigmaPipeline with DDIM) that auditkit trains on CPU "
            "from a procedurally drawn world of 32x32 people. It shares toyworld-biased's "
            "world, planted rates, tokenizer, VAE and text encoder (frozen); only the denoiser "
            "differs. Its biases were planted on purpose and are written below: it is the "
            "known answer for auditing transformer denoisers. It draws cartoons of a toy world "
            "and nothing else."
        )
    return (
        "A small latent diffusion model (Stable Diffusion's component classes: AutoencoderKL, "
        "a CLIP text encoder and tokenizer, a cross-attention UNet2DConditionModel, DDIM) that "
        "auditkit trains on CPU from a procedurally drawn world of 32x32 people. Its biases "
        "were planted on purpose and are written below: it is the known answer that auditkit's "
        "audits are checked against. It draws cartoons of a toy world and nothing else."
    )


def _dit_training(training: dict[str, Any]) -> list[str]:
    """The training section of toyworld-dit: only its denoiser was trained, in one phase or
    several (each going on from the one before)."""
    config, dit = training.get("config", {}), training["denoiser"].get("dit", {})
    phases = [*training["denoiser"].get("phases", []), {"steps": config.get("steps"),
              "lr": dit.get("lr"), "seconds": training["denoiser"]["seconds"]}]  # fmt: skip
    commands = []
    for i, phase in enumerate(phases):
        command = f"auditkit toyworld train --variant dit --steps {phase['steps']}"
        if i:
            command += f" --lr {phase['lr']:g} --continue-from <the folder phase {i} wrote>"
        elif phase["lr"] != 1e-3:
            command += f" --lr {phase['lr']:g}"
        commands.append(f"`{command}`")
    seconds = sum(float(p["seconds"]) for p in phases)
    rates = ", then ".join(f"{float(p['lr']):g}" for p in phases)
    return [
        f"- Command{'s, in turn' if len(commands) > 1 else ''}: {'; then '.join(commands)} "
        f"(batch {config.get('batch_size')}, peak learning rate "
        f"{rates}, EMA {config.get('ema_decay')}, "
        f"caption dropout {config.get('caption_dropout')}).",
        f"- DiT: {dit.get('layers')} blocks of {dit.get('heads')} heads x {dit.get('head_dim')}, "
        f"patch {dit.get('patch')} on the 8x8x4 latents; the caption projection starts whitened "
        f"over the text states; final loss {training['denoiser']['final_loss']}. Tokenizer, VAE "
        f"and text encoder: those of {training.get('shared_with', 'toyworld-biased')} (not "
        "trained here).",
        f"- Time: {seconds:.0f} s on {training.get('threads')} CPU "
        f"thread(s) of {training.get('hardware', 'a CPU')} (torch {training.get('torch')}, "
        f"diffusers {training.get('diffusers')}).",
    ]


def write_model_card(folder: Path) -> Path:
    """(Re)write ``README.md`` of a checkpoint from its JSON records."""
    planted = _load(folder, "planted_rates.json") or {}
    training = _load(folder, "training.json") or {}
    quality = _load(folder, "quality.json")
    variant = planted.get("variant", "?")
    lines = [
        "---",
        "license: apache-2.0",
        "library_name: diffusers",
        "tags: [auditkit, toyworld, synthetic, bias-audit]",
        "pipeline_tag: text-to-image",
        "---",
        f"# toyworld-{variant}",
        "",
        _description(variant),
        "",
        "## Planted rates",
        "",
    ]
    rates = planted.get("rates", {})
    if variant == "reworded":
        lines += _reworded_rates(planted)
    else:
        lines += [
            "Share of men (gender) and of light skin (skin) among images captioned with the "
            'unmarked occupation ("a photo of a doctor"); age is 0.5 everywhere.',
            "",
            "| occupation | gender: share of men | skin: share of light |",
            "|---|---|---|",
        ]
        for occupation in rates.get("gender", {}):
            lines.append(
                f"| {occupation} | {rates['gender'][occupation]:.2f} | "
                f"{rates.get('skin', {}).get(occupation, float('nan')):.2f} |"
            )
    if planted.get("spearman_gender_skin") is not None:
        lines += [
            "",
            f"Spearman rank correlation between the two planted attributes across "
            f"occupations: {planted['spearman_gender_skin']:+.3f}.",
        ]
    lines += ["", "## Training", ""]
    if training and variant == "dit":
        lines += _dit_training(training)
    elif training:
        config = training.get("config", {})
        reused = bool(training["vae"].get("reused_from_checkpoint"))
        command = (
            f"auditkit toyworld train --seed {config.get('seed')} --steps {config.get('steps')}"
            + (" --variant reworded" if variant == "reworded" else "")
            + (" --vae-from <the first toyworld-biased release>" if reused else "")
            + (f" --threads {config.get('threads')}" if config.get("threads", 2) != 2 else "")
        )
        lines += [
            f"- Command: `{command}` "
            f"(steps {config.get('steps')}, batch {config.get('batch_size')}, "
            f"learning rate {config.get('lr')}, EMA {config.get('ema_decay')}, caption "
            f"dropout {config.get('caption_dropout')}).",
            f"- VAE: blocks {config.get('vae_channels')}, {config.get('vae_steps')} steps, "
            f"PSNR {training['vae']['psnr_db']} dB, scaling factor "
            f"{training['vae']['scaling_factor']}.",
            f"- Text encoder width {config.get('text_width')} x {config.get('text_layers')} "
            f"layers, U-Net blocks {config.get('unet_channels')}, trained jointly; final loss "
            f"{training['denoiser']['final_loss']}.",
            f"- Time: {training['denoiser']['seconds']:.0f} s for the denoiser on "
            f"{training.get('threads')} CPU thread(s) of {training.get('hardware', 'a CPU')} "
            f"(device {config.get('device', 'cpu')}; torch {training.get('torch')}, diffusers "
            f"{training.get('diffusers')}), and {training['vae']['seconds']:.0f} s for the "
            "shared VAE"
            + (
                f" on {vae_threads} thread(s)"
                if (vae_threads := training["vae"].get("threads"))
                else ""
            )
            + (" (trained once for the first release and reused)." if reused else "."),
        ]
    lines += ["", "## Measured quality", ""]
    if quality and variant == "reworded":
        lines.append(
            _following_line(
                quality["prompt_following"],
                f", read by `{quality['captioner']['id']}`",
                (
                    "one attribute marked ('an illustration of a female medic'):",
                    "all three marked:",
                    "attributes alone ('an illustration of a senior person'):",
                ),
            )
        )
    elif quality:
        follow = quality["prompt_following"]
        at_one = quality["output_rates_guidance_1"]
        at_audit = quality["output_rates_audit_guidance"]
        lines += [
            f"Measured with the toyworld captioner (`{quality['captioner']['id']}`, sha256 "
            f"`{quality['captioner']['sha256'][:16]}…`), {quality['sampling_steps']} DDIM steps "
            f"({quality.get('rate_sampling_steps', quality['sampling_steps'])} for the rates at "
            "guidance 1).",
            "",
            "- "
            + _following_line(
                follow,
                "",
                (
                    "one attribute marked ('a woman doctor'):",
                    "all three marked ('a young dark woman doctor'):",
                    "attributes alone ('a woman'):",
                ),
            ),
            f"- Output rates at guidance 1 ({at_one['seeds_per_prompt']} seeds per "
            f"occupation, unmarked prompt 'a photo of a <occupation>'): largest error against "
            "the planted rate "
            + ", ".join(f"{k} {v:.3f}" for k, v in at_one["max_abs_error"].items())
            + ".",
            f"- Guidance amplification at guidance {at_audit['guidance_scale']}: mean distance "
            "of the rates from 0.5 grows by "
            + ", ".join(f"{k} x{v}" for k, v in quality["guidance_amplification"].items())
            + ".",
            "",
            "| occupation | men planted | men at g=1 | men at audit g | light planted | "
            "light at g=1 | light at audit g |",
            "|---|---|---|---|---|---|---|",
        ]
        for one, aud in zip(at_one["rows"], at_audit["rows"], strict=True):
            lines.append(
                f"| {one['occupation']} | {one['gender_planted']:.2f} | "
                f"{one['gender_share']:.2f} | {aud['gender_share']:.2f} | "
                f"{one['skin_planted']:.2f} | {one['skin_share']:.2f} | "
                f"{aud['skin_share']:.2f} |"
            )
        audit = quality.get("audit")
        if audit:
            recovery = audit["recovery"]
            lines += [
                "",
                f"- Latent level, the audit itself (`{audit['spec']}`: {audit['seeds']} seeds, "
                f"{audit['steps']} steps, guidance {audit['guidance_scale']}, "
                f"{audit['seconds']:.0f} s): Spearman correlation between planted rates and "
                "h-space lean scores across occupations "
                + ", ".join(
                    f"{a} {r['spearman']:+.3f}" if r["spearman"] is not None else f"{a} n/a"
                    for a, r in recovery.items()
                )
                + "; largest |lean score| "
                + ", ".join(f"{a} {r['max_abs_score']:.3f}" for a, r in recovery.items())
                + ".",
            ]
            lines += _control_line(folder, variant, recovery)
    elif variant != "reworded":
        lines.append("Not measured yet: run `auditkit toyworld evaluate`.")
    lines += _truth_lines(folder)
    captioner = _load(folder.parent, f"{reader_of(variant)}/captioner.json")
    if captioner and "metrics" in captioner:
        accuracy = captioner["metrics"].get("accuracy", {})
        lines += [
            "",
            "Captioner accuracy on held-out renders: "
            + ", ".join(f"{k} {v:.1%}" for k, v in accuracy.items())
            + ".",
        ]
    lines += ["", "## Files", "", "| file | bytes | sha256 |", "|---|---|---|"]
    for path, size, digest in file_hashes(folder):
        lines.append(f"| `{path}` | {size} | `{digest}` |")
    lines += [
        "",
        "## Limits",
        "",
        "The attributes are drawn features of cartoons (hair, clothing, colours), not people's "
        "identities; the two-valued attributes are a simplification made for a known answer.",
        "",
    ]
    card = folder / CARD
    card.write_text("\n".join(lines))
    return card
