"""CLIP zero-shot attribute detection (the DALL-Eval / OpenBias way of reading images).

Each attribute is read by comparing the image with label prompts: for every value, the mean
of CLIP's scaled cosine similarity (``logit_scale * cos``, what ``logits_per_image`` holds)
between the image and that value's prompts; a softmax over the values gives probabilities, the
argmax the value read. Several prompts per value ("a photo of a man", "a portrait of a man")
average out the wording of any one of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Unpack

import numpy as np

from auditkit.caption.image_to_text import (
    AttributeTable,
    HubOptions,
    load_pretrained,
    move_inputs,
    to_pil_images,
    validate_table,
)


def _pooled(output: Any) -> Any:
    """Projected embeddings from ``get_*_features``: a tensor in transformers 4.x, a
    ``BaseModelOutputWithPooling`` (projection in ``pooler_output``) in 5.x."""
    import torch

    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipZeroShotCaptioner:
    """Reads attributes with a transformers ``CLIPModel`` and label prompts.

    Args:
        source: a local model folder or a hub id of a CLIP model (safetensors weights).
        attributes: attribute -> value -> label prompts, e.g.
            ``{"gender": {"man": ["a photo of a man"], "woman": ["a photo of a woman"]}}``;
            at least two values per attribute.
        batch_size: images per forward pass.
        hub: device, dtype and the hub options
            (:class:`~auditkit.caption.image_to_text.HubOptions`).
    """

    id: str
    sha256: str

    def __init__(
        self,
        source: str | Path,
        *,
        attributes: AttributeTable,
        batch_size: int = 32,
        **hub: Unpack[HubOptions],
    ) -> None:
        from transformers import CLIPModel

        self.attributes = validate_table(attributes, min_values=2)
        self.batch_size = max(1, batch_size)
        self.loaded = load_pretrained(CLIPModel, source, **hub)
        self.id = self.loaded.id
        self.sha256 = self.loaded.sha256
        self._prompts = self._encode_prompts()

    def _encode_prompts(self) -> dict[str, tuple[Any, Any, Any]]:
        """Per attribute: unit text embeddings [P, D], owning value of each prompt [P], and
        the number of prompts per value [V]."""
        import torch

        loaded = self.loaded
        encoded = {}
        with torch.inference_mode():
            for attribute, values in self.attributes.items():
                prompts = [p for words in values.values() for p in words]
                owner = torch.tensor([i for i, ws in enumerate(values.values()) for _ in ws])
                tokens = loaded.processor(
                    text=prompts, padding=True, truncation=True, return_tensors="pt"
                )
                inputs = move_inputs(tokens, loaded.device, loaded.dtype)
                text = _pooled(loaded.model.get_text_features(**inputs)).float()
                text = text / text.norm(dim=-1, keepdim=True)
                counts = torch.bincount(owner, minlength=len(values)).float()
                encoded[attribute] = (text, owner.to(text.device), counts.to(text.device))
        return encoded

    def probabilities(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Per attribute, float32 probabilities [N, n_values] in the table's value order."""
        import torch

        pictures = to_pil_images(images)
        loaded = self.loaded
        with torch.inference_mode():
            parts = []
            for start in range(0, len(pictures), self.batch_size):
                pixels = loaded.processor(
                    images=pictures[start : start + self.batch_size], return_tensors="pt"
                )
                inputs = move_inputs(pixels, loaded.device, loaded.dtype)
                parts.append(_pooled(loaded.model.get_image_features(**inputs)).float())
            scale = loaded.model.logit_scale.detach().float().exp()
            out = {}
            for attribute, (text, owner, counts) in self._prompts.items():
                if not parts:
                    out[attribute] = np.zeros((0, len(counts)), np.float32)
                    continue
                image = torch.cat(parts)
                image = image / image.norm(dim=-1, keepdim=True)
                logits = scale * image @ text.T  # [N, P]
                summed = torch.zeros(len(image), len(counts), device=logits.device)
                means = summed.index_add_(1, owner, logits) / counts
                out[attribute] = means.softmax(dim=1).cpu().numpy().astype(np.float32)
        return out

    def read(self, images: np.ndarray) -> list[dict[str, str]]:
        """The most probable value of every attribute, one dict per image."""
        probabilities = self.probabilities(images)
        n = len(np.asarray(images))
        names = {attribute: list(values) for attribute, values in self.attributes.items()}
        best = {attribute: p.argmax(axis=1) for attribute, p in probabilities.items()}
        return [{a: names[a][int(best[a][i])] for a in names} for i in range(n)]

    def caption(self, images: np.ndarray) -> list[str]:
        """The values read, joined in table order, e.g. "man, light, young"."""
        return [", ".join(reading.values()) for reading in self.read(images)]
