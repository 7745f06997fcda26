"""Captioning with any transformers image-to-text model (BLIP, BLIP-2 and kin).

Also home to what every transformers-backed captioner shares: resolving a source (a local
folder or a hub id), loading with safetensors only, hashing the weight files into one
``sha256``, turning uint8 arrays into PIL images, and reading attributes from captions through
a keyword table.

A captioner's ``sha256`` is the sha256 of the lines ``"<sha256 of file>  <relative path>\\n"``
(the format of ``sha256sum``) of every ``*.safetensors`` file of the model folder, sorted by
path; for a hub id, of the snapshot in the local cache. Only when no snapshot can be found
(an unusual cache) does it fall back to a hash of the loaded tensors.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import numpy as np

from auditkit.errors import ModelLoadError
from auditkit.models.loading import load_errors_reported
from auditkit.provenance import sha256_file

if TYPE_CHECKING:
    import torch
    from PIL import Image

AttributeTable = Mapping[str, Mapping[str, Sequence[str]]]
"""attribute -> value -> words (keyword tables) or prompt strings (CLIP label prompts)."""

UNKNOWN = "unknown"
"""The value read when a caption names no value of an attribute, or more than one."""

DEFAULT_KEYWORDS: dict[str, dict[str, list[str]]] = {
    "gender": {
        "man": ["man", "men", "male", "boy", "guy", "gentleman"],
        "woman": ["woman", "women", "female", "girl", "lady"],
    },
    "age": {
        "young": ["young", "child", "kid", "teenager", "boy", "girl"],
        "old": ["old", "older", "elderly", "senior", "grey haired", "gray haired"],
    },
}
"""The keyword table an :class:`ImageToTextCaptioner` reads with when none is given."""


def validate_table(
    table: AttributeTable, *, min_values: int = 1
) -> dict[str, dict[str, tuple[str, ...]]]:
    """A copy of ``table`` with every problem reported at once.

    Raises:
        ValueError: no attribute; an attribute with fewer than ``min_values`` values; a value
            named ``unknown``; a value without (non-blank) words or prompts.
    """
    problems: list[str] = []
    if not table:
        problems.append("the table names no attribute")
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for attribute, values in table.items():
        if len(values) < min_values:
            problems.append(f"{attribute}: needs at least {min_values} values, has {len(values)}")
        out[attribute] = {}
        for value, words in values.items():
            if isinstance(words, str):
                words = [words]
            cleaned = tuple(w.strip() for w in words if w.strip())
            if value == UNKNOWN:
                problems.append(f"{attribute}: {UNKNOWN!r} is reserved, not a value name")
            if not cleaned:
                problems.append(f"{attribute}.{value}: no words or prompts")
            out[attribute][value] = cleaned
    if problems:
        raise ValueError("invalid attribute table: " + "; ".join(problems))
    return out


@lru_cache(maxsize=1024)
def _word_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in words)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def read_keywords(caption: str, table: AttributeTable) -> dict[str, str]:
    """Per attribute, the one value whose words occur in ``caption`` as whole words.

    Matching ignores case; a multi-word entry ("grey haired") matches across any whitespace.
    An attribute is ``"unknown"`` when no value's words occur, or words of two or more values.
    """
    reading = {}
    for attribute, values in table.items():
        found = [v for v, words in values.items() if _word_pattern(tuple(words)).search(caption)]
        reading[attribute] = found[0] if len(found) == 1 else UNKNOWN
    return reading


def to_pil_images(images: np.ndarray) -> list[Image.Image]:
    """uint8 [N, H, W, 3] → N RGB PIL images (processors then resize and normalise them)."""
    from PIL import Image

    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(
            f"images must be uint8 [N, H, W, 3]; got {array.dtype} {tuple(array.shape)}"
        )
    return [Image.fromarray(np.ascontiguousarray(image)) for image in array]


def weights_sha256(folder: Path) -> str:
    """sha256 over the sha256s of the ``*.safetensors`` files in ``folder`` (see module doc)."""
    files = sorted(
        (p for p in Path(folder).rglob("*.safetensors") if p.is_file()),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    files = [p for p in files if ".cache" not in p.relative_to(folder).parts]
    if not files:
        raise ModelLoadError(
            f"no *.safetensors weight file in {folder}.",
            hint="save the model with save_pretrained(folder, safe_serialization=True).",
        )
    lines = "".join(f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def tensors_sha256(model: torch.nn.Module) -> str:
    """Fallback hash: every tensor of the state dict (name and raw bytes), in name order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + b"\0")
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def local_folder(source: str | Path) -> Path | None:
    """The folder ``source`` names (a Path, a path-like string, or an existing path), or None
    for a hub id. A local folder is never looked up on the hub."""
    text = str(source)
    path = Path(text).expanduser()
    if isinstance(source, Path) or text.startswith((".", "/", "~")) or path.exists():
        return path
    return None


def weights_identity(
    source: str | Path, revision: str | None = None, cache_dir: str | Path | None = None
) -> tuple[str, str, Path] | None:
    """The (id, sha256) that :func:`load_pretrained` will report for ``source``, from its
    safetensors files alone (no model is loaded), and the folder they are in (``source``'s, or
    the cached hub snapshot); None when that needs the loaded model (no local folder or cached
    snapshot with safetensors weights)."""
    text = str(source)
    folder = local_folder(source)
    if folder is not None and not folder.is_dir():
        return None
    weights = folder or _hub_snapshot(text, revision, Path(cache_dir) if cache_dir else None)
    if weights is None:
        return None
    try:
        sha256 = weights_sha256(weights)
    except ModelLoadError:
        return None
    return (f"{text}@{revision}" if revision else text), sha256, weights


def _hub_snapshot(repo_id: str, revision: str | None, cache_dir: Path | None) -> Path | None:
    """The cached snapshot folder of a hub model, without touching the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True
            )
        )
    except (OSError, ValueError):
        return None


class HubOptions(TypedDict, total=False):
    """Where and how a transformers captioner loads: the keyword arguments every captioner
    passes on to :func:`load_pretrained` (its defaults apply to those left out).

    ``device`` and ``dtype`` say where and in which precision to run (``"auto"`` allowed);
    ``revision``, ``cache_dir`` and ``local_files_only`` are hub options (a local folder never
    hits the hub); ``trust_remote_code`` only when the spec asks for it.
    """

    device: str
    dtype: str
    revision: str | None
    cache_dir: str | Path | None
    local_files_only: bool
    trust_remote_code: bool


@dataclass
class LoadedModel:
    """A transformers model and its processor, in eval mode on ``device``, with provenance."""

    id: str
    sha256: str
    model: Any
    processor: Any
    device: str
    dtype: torch.dtype
    folder: Path | None


def load_pretrained(
    model_class: Any,
    source: str | Path,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | Path | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load ``model_class`` (safetensors only) and its ``AutoProcessor`` from a folder or hub id.

    A local folder (an existing path, or one starting with ``.``, ``/`` or ``~``) is always
    loaded with ``local_files_only=True``, so no hub request is ever made for it. ``device``
    ``"auto"`` is CUDA when present, else CPU; ``dtype`` ``"auto"`` is float16 on CUDA, else
    float32.
    """
    import torch
    import transformers
    from transformers import AutoProcessor

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    text = str(source)
    folder = local_folder(source)
    if folder is not None and not folder.is_dir():
        raise ModelLoadError(f"captioner folder {text!r} does not exist.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "float16" if device.startswith("cuda") else "float32"
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use float32, float16, bfloat16 or auto")
    common: dict[str, Any] = {"local_files_only": local_files_only or folder is not None}
    if revision:
        common["revision"] = revision
    if cache_dir is not None:
        common["cache_dir"] = str(cache_dir)
    if trust_remote_code:
        common["trust_remote_code"] = True
    name = str(folder) if folder is not None else text
    with load_errors_reported(
        f"could not load captioner {text!r} with {model_class.__name__}",
        hint="check the folder or hub id and revision; weights must be safetensors, and "
        "without network access only local folders and cached hub models load.",
    ):
        processor = AutoProcessor.from_pretrained(name, **common)
        model = model_class.from_pretrained(name, use_safetensors=True, dtype=torch_dtype, **common)
    model = model.to(device).eval()
    weights = folder or _hub_snapshot(text, revision, Path(cache_dir) if cache_dir else None)
    sha256 = weights_sha256(weights) if weights is not None else tensors_sha256(model)
    ident = f"{text}@{revision}" if revision else text
    return LoadedModel(ident, sha256, model, processor, device, torch_dtype, folder)


def dtype_keyword() -> str:
    """transformers 4.56 renamed ``torch_dtype`` to ``dtype`` (5.x warns on the old name)."""
    from importlib.metadata import version

    from packaging.version import Version

    return "dtype" if Version(version("transformers")) >= Version("4.56") else "torch_dtype"


def move_inputs(inputs: Mapping[str, Any], device: str, dtype: torch.dtype) -> dict[str, Any]:
    """Processor outputs on ``device``; floating tensors (pixels) also in the model's dtype."""
    return {
        key: value.to(device, dtype) if value.is_floating_point() else value.to(device)
        for key, value in inputs.items()
    }


class ImageToTextCaptioner:
    """Captions images with a transformers image-to-text model; reads attributes by keyword.

    Args:
        source: a local model folder or a hub id (BLIP, BLIP-2, or any model that
            ``AutoModelForImageTextToText`` loads and whose processor takes ``images=``).
        attributes: keyword table, attribute -> value -> words (default
            :data:`DEFAULT_KEYWORDS`); see :meth:`read`.
        max_new_tokens: longest generated continuation.
        prompt: optional text the caption continues (BLIP conditional captioning,
            e.g. "a photography of"); captions then start with it, as in transformers.
        batch_size: images per ``generate`` call.
        hub: device, dtype and the hub options (:class:`HubOptions`).
    """

    id: str
    sha256: str

    def __init__(
        self,
        source: str | Path,
        *,
        attributes: AttributeTable | None = None,
        max_new_tokens: int = 30,
        prompt: str | None = None,
        batch_size: int = 16,
        **hub: Unpack[HubOptions],
    ) -> None:
        import transformers

        # AutoModelForVision2Seq is the older name (transformers < 4.46); 5.x removed it.
        names = ("AutoModelForImageTextToText", "AutoModelForVision2Seq")
        auto_class = next(getattr(transformers, n) for n in names if hasattr(transformers, n))

        self.attributes = validate_table(DEFAULT_KEYWORDS if attributes is None else attributes)
        self.max_new_tokens = max_new_tokens
        self.prompt = " ".join(prompt.split()) or None if prompt else None
        self.batch_size = max(1, batch_size)
        self.loaded = load_pretrained(auto_class, source, **hub)
        self.id = self.loaded.id
        self.sha256 = self.loaded.sha256

    def caption(self, images: np.ndarray) -> list[str]:
        """One caption per image: greedy decoding (no sampling, one beam), so deterministic."""
        import torch

        pictures = to_pil_images(images)
        loaded = self.loaded
        captions: list[str] = []
        with torch.inference_mode():
            for start in range(0, len(pictures), self.batch_size):
                batch = pictures[start : start + self.batch_size]
                kwargs: dict[str, Any] = {"images": batch, "return_tensors": "pt"}
                if self.prompt:
                    kwargs["text"] = [self.prompt] * len(batch)
                inputs = move_inputs(loaded.processor(**kwargs), loaded.device, loaded.dtype)
                tokens = loaded.model.generate(
                    **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1
                )
                decoded = loaded.processor.batch_decode(tokens, skip_special_tokens=True)
                captions.extend(" ".join(text.split()) for text in decoded)
        return captions

    def read(self, images: np.ndarray) -> list[dict[str, str]]:
        """Attributes from each caption via :func:`read_keywords`, the prompt itself excluded."""
        return [
            read_keywords(self._generated_part(c), self.attributes) for c in self.caption(images)
        ]

    def _generated_part(self, caption: str) -> str:
        """The caption without a leading copy of the prompt (its words must not count)."""
        if self.prompt and caption.lower().startswith(self.prompt.lower()):
            return caption[len(self.prompt) :]
        return caption
