"""How much lean the toyworld *itself* carries: the lean statistic on renders, with no model.

The audit's lean score of a concept is its position between two group means, measured from
their midpoint along their difference (:func:`auditkit.analyze.measures.lean`). Computed on
mean *images* instead of mean h (or on mean VAE latents), it says how far an occupation's
renders already sit towards "man" or "light" before any model learns anything: a world whose
attire shares pixels with an attribute cue gives the balanced control leans that no method can
remove. Use it to check a change to the drawing in seconds, before retraining
(docs/toyworld.md, "The balanced control").

The means are over ``n`` renders each. A group mean holds every occupation equally often (the
training captions hold them uniformly in expectation): drawing the occupation at random instead
lets the group means differ by chance in their mix of attire, which an occupation's strongly
coloured attire then reads as a lean of either sign. The other attributes follow the variant's
planted rates, as in the attribute-only training captions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from auditkit.toyworld.drawing import render
from auditkit.toyworld.world import ATTRIBUTES, OCCUPATIONS, Person, planted_rates

Encoder = Callable[[np.ndarray], np.ndarray]
"""uint8 images [N, 32, 32, 3] -> one flat float vector per image."""


def pixels(images: np.ndarray) -> np.ndarray:
    """The renders themselves, as flat vectors in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float64) / 255.0


def vae_encoder(vae: Any, batch_size: int = 256) -> Encoder:
    """An :class:`Encoder` giving the mean of a diffusers ``AutoencoderKL``'s latent per image."""
    import torch

    def encode(images: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            part = images[start : start + batch_size].astype(np.float32) / 127.5 - 1.0
            tensor = torch.from_numpy(part).permute(0, 3, 1, 2)
            with torch.no_grad():
                latent = vae.encode(tensor).latent_dist.mean
            out.append(latent.reshape(len(part), -1).double().numpy())
        return np.concatenate(out)

    return encode


def render_leans(
    variant: Literal["biased", "balanced"] = "balanced",
    *,
    n: int = 3000,
    seed: int = 0,
    encoder: Encoder = pixels,
    draw: Callable[[Person, np.random.Generator], np.ndarray] = render,
) -> dict[str, dict[str, float]]:
    """Attribute -> occupation -> lean score of the occupation's mean rendering (``encoder``
    space) between the attribute's two groups (+1 = at the first group's mean).

    ``draw`` renders one person (default the shipped drawing), so a changed drawing can be
    compared with the shipped one before anything is trained.
    """
    rng = np.random.default_rng(seed)
    rates = planted_rates(variant)

    def person(job: str, **fixed: str) -> Person:
        values = {
            name: fixed[name]
            if name in fixed
            else (groups[0] if rng.random() < rates[name][job] else groups[1])
            for name, groups in ATTRIBUTES.items()
        }
        return Person(occupation=job, **values)

    def mean(people: list[Person]) -> np.ndarray:
        images = np.stack([draw(p, rng) for p in people])
        return np.asarray(encoder(images).mean(axis=0))

    concept = {job: mean([person(job) for _ in range(n)]) for job in OCCUPATIONS}
    out: dict[str, dict[str, float]] = {}
    jobs = [OCCUPATIONS[i % len(OCCUPATIONS)] for i in range(n)]  # every occupation alike
    for name, (first, second) in ATTRIBUTES.items():
        a = mean([person(job, **{name: first}) for job in jobs])
        b = mean([person(job, **{name: second}) for job in jobs])
        axis, midpoint = a - b, (a + b) / 2.0
        half = float(np.dot(axis, axis)) / 2.0
        out[name] = {
            job: float(np.dot(vector - midpoint, axis) / half) for job, vector in concept.items()
        }
    return out


__all__ = ["Encoder", "pixels", "render_leans", "vae_encoder"]
