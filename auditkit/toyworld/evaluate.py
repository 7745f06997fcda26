"""Measure a toyworld checkpoint against the truth it was trained on.

* Prompt following: for fully marked prompts, the share of images whose captioner reading
  matches each prompted attribute value.
* Output rates: for unmarked occupation prompts, the share of images read as men (and as light
  skinned), at guidance 1 (the learned distribution) and at the audit's guidance scale (where
  classifier-free guidance sharpens rates towards 0 and 1), compared with the planted rates.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from auditkit.toyworld.captioner import ToyworldCaptioner
from auditkit.toyworld.world import ATTRIBUTES, OCCUPATIONS, TEMPLATES, planted_rates

PLANTED_ATTRIBUTES = ("gender", "skin")


def generate(
    pipe: Any,
    prompts: list[str],
    seeds: list[int],
    *,
    guidance_scale: float,
    steps: int,
    batch_size: int = 256,
) -> np.ndarray:
    """uint8 images [len(prompts) * len(seeds), 32, 32, 3], prompt-major, seeded per image."""
    from auditkit.extract.runner import adapter_of, initial_noise

    extra = adapter_of(pipe).call_kwargs(pipe)  # PixArt (toyworld-dit): no resolution binning
    pairs = [(p, s) for p in prompts for s in seeds]
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        latents = torch.stack([initial_noise(pipe, s, 32) for _, s in chunk])
        with torch.inference_mode():
            images = pipe(
                prompt=[p for p, _ in chunk],
                latents=latents,
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                height=32,
                width=32,
                output_type="np",
                **extra,
            ).images
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def _prompt_term(values: dict[str, str], occupation: str | None, variant: str) -> str:
    """The caption term of a prompt marking ``values`` (and the occupation, when given), in
    the variant's words: the training captions' own grammar (:func:`caption_term`)."""
    from auditkit.toyworld.world import Person, caption_term

    person = Person(
        gender=values.get("gender", "man"),
        skin=values.get("skin", "light"),
        age=values.get("age", "young"),
        occupation=occupation or OCCUPATIONS[0],
    )
    marked = frozenset(values) | ({"occupation"} if occupation else set())
    return caption_term(person, marked, variant)


def prompt_following(
    pipe: Any,
    captioner: ToyworldCaptioner,
    *,
    seeds: int,
    guidance_scale: float,
    steps: int,
    variant: str = "biased",
) -> dict[str, Any]:
    """Fully marked prompts (every attribute combination x occupation) and single-attribute
    prompts: the share of images the captioner reads as the prompted value, per attribute.
    ``variant`` picks the world's words and first template (the reworded world's own)."""
    from auditkit.toyworld.world import templates_of

    template = templates_of(variant)[0]
    combos = list(itertools.product(*(ATTRIBUTES[a] for a in ("gender", "skin", "age"))))
    cases: list[tuple[dict[str, str], str | None]] = []
    for (gender, skin, age), occupation in itertools.product(combos, OCCUPATIONS):
        cases.append(({"gender": gender, "skin": skin, "age": age}, occupation))
    for attribute, options in ATTRIBUTES.items():
        for option, occupation in itertools.product(options, OCCUPATIONS):
            cases.append(({attribute: option}, occupation))
    for attribute, options in ATTRIBUTES.items():
        for option in options:
            cases.append(({attribute: option}, None))
    prompts = [template.replace("{term}", _prompt_term(v, occ, variant)) for v, occ in cases]
    images = generate(pipe, prompts, list(range(seeds)), guidance_scale=guidance_scale, steps=steps)
    readings = captioner.read(images)
    kinds = ("fully_marked", "one_attribute_marked", "attribute_only")
    hits: dict[str, dict[str, list[bool]]] = {
        k: {a: [] for a in (*ATTRIBUTES, "occupation")} for k in kinds
    }
    for i, (values, job) in enumerate(cases):
        kind = "attribute_only" if job is None else kinds[0 if len(values) == 3 else 1]
        for reading in readings[i * seeds : (i + 1) * seeds]:
            for attribute, value in values.items():
                hits[kind][attribute].append(reading[attribute] == value)
            if job:
                hits[kind]["occupation"].append(reading["occupation"] == job)
    return {
        "prompts": len(prompts),
        "seeds_per_prompt": seeds,
        "guidance_scale": guidance_scale,
        **{
            kind: {a: round(float(np.mean(v)), 4) for a, v in table.items() if v}
            for kind, table in hits.items()
        },
    }


def output_rates(
    pipe: Any,
    captioner: ToyworldCaptioner,
    variant: str,
    *,
    seeds: int,
    guidance_scale: float,
    steps: int,
) -> dict[str, Any]:
    """Share of images read as the first value of each planted attribute, per occupation."""
    template = TEMPLATES[0]
    prompts = [template.replace("{term}", occ) for occ in OCCUPATIONS]
    images = generate(
        pipe, prompts, list(range(1000, 1000 + seeds)), guidance_scale=guidance_scale, steps=steps
    )
    readings = captioner.read(images)
    planted = planted_rates(variant)  # type: ignore[arg-type]
    table = []
    for i, occupation in enumerate(OCCUPATIONS):
        chunk = readings[i * seeds : (i + 1) * seeds]
        row: dict[str, Any] = {"occupation": occupation}
        for attribute in PLANTED_ATTRIBUTES:
            first = ATTRIBUTES[attribute][0]
            share = float(np.mean([r[attribute] == first for r in chunk]))
            row[f"{attribute}_planted"] = planted[attribute][occupation]
            row[f"{attribute}_share"] = round(share, 4)
        table.append(row)
    errors = {
        a: round(max(abs(r[f"{a}_share"] - r[f"{a}_planted"]) for r in table), 4)
        for a in PLANTED_ATTRIBUTES
    }
    spread = {
        a: round(float(np.mean([abs(r[f"{a}_share"] - 0.5) for r in table])), 4)
        for a in PLANTED_ATTRIBUTES
    }
    return {
        "guidance_scale": guidance_scale,
        "seeds_per_prompt": seeds,
        "rows": table,
        "max_abs_error": errors,
        "mean_distance_from_half": spread,
    }


def evaluate_checkpoint(
    pipe: Any,
    captioner: ToyworldCaptioner,
    variant: str,
    *,
    audit_guidance: float,
    steps: int,
    follow_seeds: int = 32,
    rate_seeds: int = 128,
    rate_steps: int = 50,
) -> dict[str, Any]:
    """All quality numbers of one checkpoint (written to its quality.json and model card).

    Output rates at guidance 1 (the learned distribution) are sampled finely, with
    ``rate_steps`` DDIM steps; prompt following and the rates at the audit's guidance scale use
    the audit's own ``steps``.
    """
    pipe.set_progress_bar_config(disable=True)
    at_one = output_rates(
        pipe, captioner, variant, seeds=rate_seeds, guidance_scale=1.0, steps=rate_steps
    )
    at_audit = output_rates(
        pipe, captioner, variant, seeds=rate_seeds, guidance_scale=audit_guidance, steps=steps
    )
    spread_one = at_one["mean_distance_from_half"]
    spread_audit = at_audit["mean_distance_from_half"]
    amplification = {
        a: round(spread_audit[a] / max(spread_one[a], 1e-9), 3) for a in PLANTED_ATTRIBUTES
    }
    return {
        "schema_version": 1,
        "kind": "auditkit.toyworld.quality",
        "variant": variant,
        "sampling_steps": steps,
        "rate_sampling_steps": rate_steps,
        "captioner": {"id": captioner.id, "sha256": captioner.sha256},
        "prompt_following": prompt_following(
            pipe, captioner, seeds=follow_seeds, guidance_scale=audit_guidance, steps=steps
        ),
        "output_rates_guidance_1": at_one,
        "output_rates_audit_guidance": at_audit,
        "guidance_amplification": amplification,
    }


def evaluate_folder(
    folder: Any,
    captioner_dir: Any,
    guidance: float,
    steps: int,
    *,
    device: str = "cpu",
    rate_seeds: int = 128,
) -> Any:
    """Evaluate the checkpoint in ``folder``; write quality.json and refresh its model card."""
    import json
    from pathlib import Path

    from diffusers import DiffusionPipeline

    from auditkit.toyworld.captioner import load_captioner
    from auditkit.toyworld.card import write_model_card
    from auditkit.toyworld.world import reader_of

    folder = Path(folder)
    planted = json.loads((folder / "planted_rates.json").read_text())
    variant = planted.get("world", planted["variant"])  # toyworld-dit draws the biased world
    from auditkit.models.loading import dtype_keyword, quiet_libraries

    quiet_libraries()
    pipe = DiffusionPipeline.from_pretrained(
        str(folder), local_files_only=True, **{dtype_keyword(): torch.float32}
    ).to(device)
    if variant == "reworded":  # its truth is truth.json; here how well it follows prompts
        pipe.set_progress_bar_config(disable=True)
        reader = load_captioner(Path(captioner_dir).parent / reader_of(variant))
        record = {
            "schema_version": 1,
            "kind": "auditkit.toyworld.quality",
            "variant": variant,
            "sampling_steps": steps,
            "captioner": {"id": reader.id, "sha256": reader.sha256},
            "prompt_following": prompt_following(
                pipe, reader, seeds=32, guidance_scale=guidance, steps=steps, variant=variant
            ),
        }
        (folder / "quality.json").write_text(json.dumps(record, indent=2) + "\n")
        return write_model_card(folder)
    quality = evaluate_checkpoint(
        pipe,
        load_captioner(Path(captioner_dir)),
        variant,
        audit_guidance=guidance,
        steps=steps,
        rate_seeds=rate_seeds,
    )
    previous = folder / "quality.json"
    if previous.is_file() and "audit" in (old := json.loads(previous.read_text())):
        quality["audit"] = old["audit"]
    previous.write_text(json.dumps(quality, indent=2) + "\n")
    return write_model_card(folder)


AXIS_OF_ATTRIBUTE = {"gender": "gender", "skin": "skin", "age": "age"}


def planted_recovery(lean: Any, planted: dict[str, Any]) -> dict[str, Any]:
    """Compare an audit's lean scores with the planted rates, per planted attribute.

    ``lean`` is the audit's lean table (axes named after the attributes, first group = the
    attribute's first value); ``planted`` the checkpoint's planted_rates.json. Returns, per
    attribute, the Spearman correlation across occupations and the largest |score|.
    """
    from auditkit.toyworld.world import spearman_rho

    out: dict[str, Any] = {}
    for attribute, axis in AXIS_OF_ATTRIBUTE.items():
        rows = lean[lean["axis"] == axis]
        if rows.empty:
            continue
        rates = planted["rates"][attribute]
        scores = dict(zip(rows["concept"], rows["score"], strict=True))
        occupations = [o for o in rates if o in scores]
        rho = spearman_rho([rates[o] for o in occupations], [scores[o] for o in occupations])
        out[attribute] = {
            "spearman": None if rho is None else round(rho, 4),
            "max_abs_score": round(float(rows["score"].abs().max()), 4),
            "scores": {o: round(float(scores[o]), 4) for o in occupations},
        }
    return out
