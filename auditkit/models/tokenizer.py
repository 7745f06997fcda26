"""A tiny CLIP tokenizer written from a word list, offline.

Why: tests and the toyworld model need a real ``CLIPTokenizer`` (the class Stable Diffusion
pipelines load) without downloading one. :func:`build_clip_tokenizer` writes the classic CLIP
files (byte-level BPE vocabulary and merges) so that each listed word is exactly one token and
any other text still tokenizes without ``unk``; the tiny pipelines of
:mod:`auditkit.models.tiny` and the toyworld checkpoints use it.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
MERGES_HEADER = "#version: 0.2"
DEFAULT_MODEL_MAX_LENGTH = 32

_WORD_RE = re.compile(r"[a-z]+")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP map from each byte to a printable unicode character.

    CLIP's byte-level BPE works on these characters, not on raw bytes; printable ASCII maps to
    itself. Having all 256 in the vocabulary means *any* UTF-8 text tokenizes without ``unk``.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(0xA1, 0xAC + 1),
        *range(0xAE, 0xFF + 1),
    ]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes, strict=True)}


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Segment one pre-tokenized word exactly like CLIP's reference BPE.

    The last character carries the end-of-word marker; the lowest-ranked adjacent pair is merged
    (all its occurrences, left to right) until no known merge applies.
    """
    parts = [*word[:-1], word[-1] + END_OF_WORD]
    while len(parts) > 1:
        pairs = set(itertools.pairwise(parts))
        best = min(pairs, key=lambda pair: ranks.get(pair, len(ranks)))
        if best not in ranks:
            break
        merged: list[str] = []
        i = 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def normalize_words(words: Iterable[str]) -> tuple[str, ...]:
    """Lower-case, strip and de-duplicate (first occurrence wins); reject non-letter words.

    Only ``[a-z]+`` words can become a single CLIP token: CLIP's pre-tokenizer splits digits,
    punctuation and apostrophes into separate pieces.
    """
    seen: dict[str, None] = {}
    bad: list[str] = []
    for raw in words:
        word = raw.strip().lower()
        if not _WORD_RE.fullmatch(word):
            bad.append(repr(raw))
        else:
            seen.setdefault(word, None)
    if bad:
        raise ValueError(
            "tiny tokenizer words must be single words of letters a-z; got " + ", ".join(bad)
        )
    return tuple(seen)


@dataclass(frozen=True)
class TokenizerPlan:
    """Vocabulary and merges of the tiny tokenizer (pure data, computed without torch)."""

    vocab: dict[str, int]
    merges: tuple[tuple[str, str], ...]


def plan_tokenizer(words: Sequence[str]) -> TokenizerPlan:
    """Char-level byte BPE vocabulary plus merges that turn each word into one token.

    For each word in order, the current merges are simulated; while the word is still split,
    merges joining its pieces left to right are *appended*. Appended merges have the lowest
    priority, so they never change how earlier words segment (those reach one token using only
    higher-priority merges).
    """
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        for _ in range(len(word) + 1):
            parts = _bpe(word, ranks)
            if len(parts) == 1:
                break
            acc = parts[0]
            for piece in parts[1:]:
                ranks.setdefault((acc, piece), len(ranks))
                acc += piece
        else:  # pragma: no cover - defensive: the construction always converges
            raise RuntimeError(f"could not build BPE merges for {word!r}")
    merges = tuple(sorted(ranks, key=ranks.__getitem__))

    base = list(_bytes_to_unicode().values())
    tokens = [*base, *(ch + END_OF_WORD for ch in base), *("".join(m) for m in merges)]
    tokens += [BOS_TOKEN, EOS_TOKEN]  # EOS last: highest id, as CLIP's pooling expects
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return TokenizerPlan(vocab=vocab, merges=merges)


def _write_tokenizer_files(out_dir: Path, plan: TokenizerPlan, model_max_length: int) -> None:
    """Write the classic CLIP tokenizer files (``vocab.json``, ``merges.txt``, configs).

    These are the files every transformers version can load as ``CLIPTokenizer``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(
        json.dumps(plan.vocab, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    merges_lines = [MERGES_HEADER, *(f"{a} {b}" for a, b in plan.merges)]
    (out_dir / "merges.txt").write_text("\n".join(merges_lines) + "\n", encoding="utf-8")
    special = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
    }
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "do_lower_case": True,
        **special,
    }
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps(special, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def build_clip_tokenizer(
    out_dir: Path,
    words: Iterable[str] = (),
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
) -> CLIPTokenizer:
    """Write a tiny CLIP tokenizer to ``out_dir`` and return it, loaded back from disk.

    The vocabulary holds every byte-level character alone and with the end-of-word marker
    ``</w>`` (so any text, ASCII or not, tokenizes without ``unk``), one merge chain per entry of
    ``words`` (so each becomes exactly one token) and the special tokens ``<|startoftext|>`` and
    ``<|endoftext|>`` (which is also ``pad`` and ``unk``, as in Stable Diffusion 1.x).

    Files written: ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``,
    ``special_tokens_map.json`` and (from transformers' own save) ``tokenizer.json``.

    Raises:
        ValueError: a word is not made of letters a-z only.
        RuntimeError: a word does not round-trip to one token (a bug in this module).
    """
    from transformers import CLIPTokenizer

    normalized = normalize_words(words)
    plan = plan_tokenizer(normalized)
    out_dir = Path(out_dir)
    _write_tokenizer_files(out_dir, plan, model_max_length)
    tokenizer = CLIPTokenizer.from_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))  # adds tokenizer.json for fast loading
    _write_tokenizer_files(out_dir, plan, model_max_length)  # keep our tokenizer_config.json

    broken = [
        word
        for word in normalized
        if tokenizer(word, add_special_tokens=False)["input_ids"]
        != [plan.vocab[word + END_OF_WORD]]
    ]
    if broken:  # pragma: no cover - would mean our BPE simulation disagrees with tokenizers
        raise RuntimeError(f"tiny tokenizer does not map these words to one token: {broken}")
    return tokenizer
