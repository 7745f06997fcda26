"""Load a diffusers text-to-image pipeline for auditing (SD 1.x/2.x, LCM, SDXL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditkit.errors import ModelLoadError, PrerequisiteError
from auditkit.models.builtin import (
    SHIPPED_BUILTINS,
    builtin_name,
    existing_builtin_folder,
    shipped_folder,
    tiny_kind,
)
from auditkit.spec.sampling import ModelSpec

PIPELINE_KINDS = {
    "StableDiffusionPipeline": "stable-diffusion",
    "LatentConsistencyModelPipeline": "lcm",
    "StableDiffusionXLPipeline": "sdxl",
}
KIND_CLASSES = {kind: cls for cls, kind in PIPELINE_KINDS.items()}
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpm-solver": "DPMSolverMultistepScheduler",
    "pndm": "PNDMScheduler",
    "lcm": "LCMScheduler",
}


@dataclass
class LoadedPipeline:
    """A ready pipeline and what the manifest needs to know about it."""

    pipe: Any
    kind: str
    pipeline_class: str
    device: str
    dtype: str
    model_dir: Path | None
    uses_cfg: bool


def resolve_device(requested: str) -> str:
    """Turn 'auto' into a concrete device; fail with exit 3 if a named one is absent."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise PrerequisiteError(
            f"model.device is {requested!r} but this machine has no CUDA device visible to torch.",
            hint="set model.device to 'auto' or 'cpu', or install a CUDA build of torch.",
        )
    if requested == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise PrerequisiteError(
            "model.device is 'mps' but Metal (MPS) is not available here.",
            hint="set model.device to 'auto' or 'cpu'.",
        )
    return requested


def resolve_dtype(requested: str, device: str) -> str:
    """'auto' is float16 on CUDA and MPS, float32 on CPU."""
    if requested != "auto":
        return requested
    return "float16" if device.startswith(("cuda", "mps")) else "float32"


def model_folder(model: ModelSpec, cache_dir: Path) -> Path | None:
    """The local folder of the model, building a builtin one on first use; None for a hub id."""
    name = builtin_name(model.id)
    if name is not None:
        if name in SHIPPED_BUILTINS:
            return shipped_folder(name)
        kind = tiny_kind(name)
        from auditkit.models.tiny import tiny_pipeline_path

        quiet_libraries()
        return tiny_pipeline_path(kind, cache_dir)
    path = Path(model.id).expanduser()
    looks_local = model.id.startswith((".", "/", "~")) or path.exists()
    if not looks_local:
        return None
    if not path.is_dir():
        raise ModelLoadError(
            f"model.id: the model folder {str(path)!r} does not exist.",
            hint="point model.id at a diffusers pipeline folder (one with model_index.json), "
            "relative to the spec file, or use a hub id.",
        )
    if not (path / "model_index.json").is_file():
        raise ModelLoadError(
            f"model.id: {str(path)!r} is not a diffusers pipeline (no model_index.json in it).",
            hint="save the pipeline with pipe.save_pretrained(folder), or name its hub id.",
        )
    return path


def existing_model_folder(model: ModelSpec, cache_dir: Path) -> Path | None:
    """The model's local folder if it is already on disk (never builds or downloads)."""
    name = builtin_name(model.id)
    if name is not None:
        return existing_builtin_folder(name, cache_dir)
    path = Path(model.id).expanduser()
    if (path / "model_index.json").is_file():
        return path
    return _cached_hub_snapshot(model.id, model.revision)


def _cached_hub_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The hub cache's snapshot of ``repo_id`` if one is already on disk (no network)."""
    if "/" not in repo_id or repo_id.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:  # not cached, or not a valid repo id: nothing to read
        return None
    return folder if (folder / "model_index.json").is_file() else None


def detect_kind(model: ModelSpec, folder: Path | None) -> tuple[str, str]:
    """(kind, pipeline class name) from the spec or the folder's model_index.json."""
    if folder is not None:
        index = json.loads((folder / "model_index.json").read_text())
        class_name = str(index.get("_class_name", ""))
        if model.pipeline == "auto":
            if class_name not in PIPELINE_KINDS:
                raise ModelLoadError(
                    f"model.pipeline: cannot audit pipeline class {class_name!r} automatically.",
                    hint="set model.pipeline to one of stable-diffusion, lcm, sdxl.",
                )
            return PIPELINE_KINDS[class_name], class_name
    if model.pipeline == "auto":
        return "auto", "DiffusionPipeline"
    return model.pipeline, KIND_CLASSES[model.pipeline]


def load_pipeline(model: ModelSpec, *, cache_dir: Path) -> LoadedPipeline:
    """Load the pipeline the spec names, on its device and dtype, with progress bars off."""
    quiet_libraries()
    try:
        import diffusers
        import torch
    except ImportError as exc:  # pragma: no cover - dependency is declared
        raise PrerequisiteError(
            f"a required package is missing: {exc.name}.",
            hint="pip install 'auditkit' (it brings torch, diffusers and transformers).",
        ) from None
    folder = model_folder(model, cache_dir)
    kind, class_name = detect_kind(model, folder)
    device = resolve_device(model.device)
    dtype_name = resolve_dtype(model.dtype, device)
    torch_dtype = getattr(torch, dtype_name)
    cls = getattr(diffusers, class_name)
    source = str(folder) if folder is not None else model.id
    kwargs: dict[str, Any] = {dtype_keyword(): torch_dtype}
    if folder is not None:
        kwargs["local_files_only"] = True
    if model.revision:
        kwargs["revision"] = model.revision
    if kind in ("stable-diffusion",):
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if model.trust_remote_code:
        kwargs["trust_remote_code"] = True
    with load_errors_reported(
        f"model.id: could not load {model.id!r} as a diffusers pipeline",
        hint="check the folder or hub id and revision; without network access only local "
        "folders and cached hub models load.",
    ):
        pipe = cls.from_pretrained(source, **kwargs)
    if kind == "auto":
        kind = PIPELINE_KINDS.get(type(pipe).__name__, "stable-diffusion")
    if model.scheduler != "default":
        sched_cls = getattr(diffusers, SCHEDULERS[model.scheduler])
        pipe.scheduler = sched_cls.from_config(pipe.scheduler.config)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    unet = getattr(pipe, "unet", None)
    distilled = unet is not None and unet.config.get("time_cond_proj_dim") is not None
    uses_cfg = (not distilled) and model.guidance_scale > 1.0
    return LoadedPipeline(
        pipe=pipe,
        kind=kind,
        pipeline_class=type(pipe).__name__,
        device=device,
        dtype=dtype_name,
        model_dir=folder,
        uses_cfg=uses_cfg,
    )


@contextmanager
def load_errors_reported(message: str, *, hint: str) -> Iterator[None]:
    """Report what a ``from_pretrained`` call in the block raises (OSError, ValueError: a
    missing folder or file, an unknown hub id, no network) as a :class:`ModelLoadError`:
    ``message``, the error's own words, and how to fix it."""
    try:
        yield
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{message}: {exc}".strip(), hint=hint) from None


def dtype_keyword() -> str:
    """Newer diffusers call the dtype argument ``dtype`` and deprecate ``torch_dtype``."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def quiet_libraries() -> None:
    """Silence the loading progress bars and advisory warnings of diffusers and transformers."""
    import transformers

    transformers.utils.logging.set_verbosity_error()  # before diffusers imports its pipelines
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
