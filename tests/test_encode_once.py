"""Each distinct prompt is encoded once per pipeline call (auditkit/extract/encode_once.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import torch

from auditkit.analyses.checks import check_spec
from auditkit.extract import runner
from auditkit.extract.encode_once import encode_once
from auditkit.layout import resolve_spec
from auditkit.models.loading import LoadedPipeline, load_pipeline
from auditkit.plan import WorkUnit
from auditkit.spec import ModelSpec, parse_spec

KINDS = ("sd", "sdxl", "pixart", "sana")
"""CLIP (SD), CLIP with a pooled projection (SDXL's second encoder), T5 (PixArt) and a
decoder-style encoder that returns a key-value cache (SANA's Gemma)."""

PROMPTS = ["a photo of a nurse", "a photo of a pilot", "a photo of a nurse", "", "", "a pilot"]


@pytest.fixture(scope="module")
def pipes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedPipeline]:
    cache = tmp_path_factory.mktemp("cache")
    return {
        kind: load_pipeline(
            ModelSpec(id=f"builtin:tiny-{kind}", device="cpu", steps=2), cache_dir=cache
        )
        for kind in KINDS
    }


def _encoders(pipe: Any) -> list[tuple[str, Any, Any]]:
    names = [n for n in pipe.components if n.startswith("text_encoder")]
    return [(n, pipe.components[n], pipe.components[n.replace("text_encoder", "tokenizer")])
            for n in names]  # fmt: skip


def _leaves(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _leaves(v)]
    if isinstance(value, tuple | list):
        return [t for v in value for t in _leaves(v)]
    return []


class _Rows:
    """Counts the rows an encoder's own forward is given."""

    def __init__(self, module: Any) -> None:
        self.seen: list[int] = []
        own = module.forward

        def counted(*args: Any, **kwargs: Any) -> Any:
            first = args[0] if args else kwargs["input_ids"]
            self.seen.append(int(first.shape[0]))
            return own(*args, **kwargs)

        module.forward = counted


@pytest.mark.parametrize("kind", KINDS)
def test_each_distinct_row_is_encoded_once_with_the_same_output(
    pipes: dict[str, LoadedPipeline], kind: str
) -> None:
    pipe = pipes[kind].pipe
    for _name, encoder, tokenizer in _encoders(pipe):
        ids = tokenizer(PROMPTS, padding="max_length", max_length=16, truncation=True,
                        return_tensors="pt")  # fmt: skip
        call = {"attention_mask": ids.attention_mask, "output_hidden_states": True}
        with torch.inference_mode():
            plain = encoder(ids.input_ids, **call)
            rows = _Rows(encoder)
            try:
                with encode_once(pipe):
                    once = encoder(ids.input_ids, **call)
            finally:
                del encoder.__dict__["forward"]
        assert rows.seen == [4]  # the four distinct prompts of the six
        assert type(once) is type(plain)
        # a key-value cache, where the encoder returns one, is dropped: no pipeline reads it
        fields = [k for k in plain if not type(plain[k]).__name__.endswith("Cache")]
        assert list(once) == fields
        for key in fields:
            for a, b in zip(_leaves(plain[key]), _leaves(once[key]), strict=True):
                assert a.shape == b.shape
                if a.dim() >= 3:  # the token states the pipelines condition on
                    assert torch.equal(a, b), (kind, key)
                else:  # a pooled projection may move in its last bit with fewer rows
                    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_the_encoders_are_their_own_again_afterwards(pipes: dict[str, LoadedPipeline]) -> None:
    pipe = pipes["sd"].pipe
    encoder = pipe.components["text_encoder"]
    assert "forward" not in encoder.__dict__
    with encode_once(pipe):
        assert "forward" in encoder.__dict__
    assert "forward" not in encoder.__dict__
    # a forward installed on the instance (an offloading wrapper) is put back, not dropped
    own = encoder.forward
    encoder.forward = lambda *a, **k: own(*a, **k)
    wrapper = encoder.__dict__["forward"]
    try:
        with pytest.raises(RuntimeError), encode_once(pipe):
            raise RuntimeError("a failed call")
        assert encoder.__dict__["forward"] is wrapper
    finally:
        del encoder.__dict__["forward"]


def test_an_encoder_whose_output_cannot_be_split_is_called_as_before(
    pipes: dict[str, LoadedPipeline],
) -> None:
    pipe = pipes["sd"].pipe
    encoder = pipe.components["text_encoder"]
    own = encoder.forward
    calls: list[int] = []

    def odd(input_ids: torch.Tensor, **kwargs: Any) -> Any:
        calls.append(int(input_ids.shape[0]))
        return {"states": own(input_ids, **kwargs)[0], "note": object()}

    encoder.forward = odd
    ids = pipe.tokenizer(PROMPTS, padding="max_length", max_length=16, return_tensors="pt")
    try:
        with torch.inference_mode(), encode_once(pipe):
            first = encoder(ids.input_ids)
            second = encoder(ids.input_ids)
    finally:
        del encoder.__dict__["forward"]
    # the first call tried 4 rows, found the output unsplittable and ran all 6; later calls run
    # all 6 at once
    assert calls == [4, 6, 6]
    assert torch.equal(first["states"], second["states"])
    assert torch.equal(first["states"], own(ids.input_ids)[0])
    # the encoder's own forward, back, is tried row by row again
    rows = _Rows(encoder)
    try:
        with torch.inference_mode(), encode_once(pipe):
            encoder(ids.input_ids)
    finally:
        del encoder.__dict__["forward"]
    assert rows.seen == [4]


@pytest.mark.parametrize("kind", ["sd", "pixart"])
def test_a_batch_captures_the_same_h_with_fewer_encoder_rows(
    pipes: dict[str, LoadedPipeline], kind: str, tmp_path: Path, monkeypatch: Any
) -> None:
    text = f"""
spec_version: 1
name: once
model: {{id: "builtin:tiny-{kind}", device: cpu, steps: 2, guidance_scale: 5.0,
        resolution: 32}}
seeds: 2
axes: [{{name: a, templates: ["a photo of a {{term}}"], groups: {{x: [man], y: [woman]}}}}]
concepts: [{{name: c, templates: ["a photo of a {{term}}"], terms: [nurse, pilot]}}]
"""
    spec = resolve_spec(check_spec(parse_spec(text)), tmp_path)
    loaded = pipes[kind]
    units = [
        WorkUnit(f"u{i}", f"p{i // 2}", f"a photo of a {t}", i % 2)
        for i, t in enumerate(["nurse", "nurse", "pilot", "pilot"])
    ]
    encoder = loaded.pipe.components["text_encoder"]
    rows = _Rows(encoder)
    try:
        once = runner.capture_batch(loaded, [spec], units)
        assert rows.seen == [2, 1]  # two prompts, then the empty prompt of the guidance half
        monkeypatch.setattr(runner, "encode_once", lambda pipe: contextlib.nullcontext())
        plain = runner.capture_batch(loaded, [spec], units)
        assert rows.seen[2:] == [4, 4]
    finally:
        del encoder.__dict__["forward"]
    assert torch.equal(once.h[0], plain.h[0])
