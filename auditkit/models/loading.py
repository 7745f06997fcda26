"""Load a diffusers text-to-image pipeline for auditing, through its family's model adapter
(:mod:`auditkit.models.adapters`: SD 1.x/2.x, LCM, SDXL and the transformer families)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditkit.errors import ModelLoadError, PrerequisiteError
from auditkit.models.adapters import (
    ModelAdapter,
    adapters,
    for_family,
    for_folder,
    for_pipeline_class,
    pipeline_classes,
)
from auditkit.models.adapters.base import GENERIC
from auditkit.models.builtin import (
    SHIPPED_BUILTINS,
    builtin_name,
    existing_builtin_folder,
    shipped_folder,
    tiny_kind,
)
from auditkit.spec.audit import AuditSpec
from auditkit.spec.sampling import ModelSpec

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
    adapter: ModelAdapter = GENERIC
    """The family's adapter: the denoiser, the hook point's image stream, the noise."""


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
    looks_local = model.id.startswith((".", "/", "~")) or _there(path.exists)
    if not looks_local:
        return None
    if not _there(path.is_dir):
        raise ModelLoadError(
            f"model.id: the model folder {str(path)!r} does not exist.",
            hint="point model.id at a diffusers pipeline folder (one with model_index.json), "
            "relative to the spec file, or use a hub id.",
        )
    if not _there((path / "model_index.json").is_file):
        raise ModelLoadError(
            f"model.id: {str(path)!r} is not a diffusers pipeline (no model_index.json in it).",
            hint="save the pipeline with pipe.save_pretrained(folder), or name its hub id.",
        )
    return path


def _there(probe: Any) -> bool:
    """``probe()`` (a Path's ``exists``/``is_dir``/``is_file``), False where the system cannot
    even look (a name too long for the file system, a folder without permission): then the id
    names no local folder."""
    try:
        return bool(probe())
    except OSError:
        return False


def existing_model_folder(model: ModelSpec, cache_dir: Path) -> Path | None:
    """The model's local folder if it is already on disk (never builds or downloads)."""
    name = builtin_name(model.id)
    if name is not None:
        return existing_builtin_folder(name, cache_dir)
    path = Path(model.id).expanduser()
    if _there((path / "model_index.json").is_file):
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
    """(family, pipeline class name) from the spec or the folder's model_index.json."""
    if folder is not None:
        index = json.loads((folder / "model_index.json").read_text())
        class_name = str(index.get("_class_name", ""))
        if model.pipeline == "auto":
            adapter = for_pipeline_class(class_name)
            if adapter is None:
                known = ", ".join(sorted(pipeline_classes()))
                raise ModelLoadError(
                    f"model.pipeline: cannot audit pipeline class {class_name!r} automatically "
                    f"(auditkit has adapters for {known}).",
                    hint="set model.pipeline to a family 'auditkit models' lists.",
                )
            return adapter.family, class_name
        adapter = for_family(model.pipeline)
        if class_name in adapter.pipeline_classes:
            return adapter.family, class_name
        return adapter.family, adapter.pipeline_classes[0]
    if model.pipeline == "auto":
        return "auto", "DiffusionPipeline"
    return model.pipeline, for_family(model.pipeline).pipeline_classes[0]


AUTO_HOOK_FALLBACK = "unet.mid_block"
"""The hook ``auto`` stands for when the family cannot be known before loading (a hub id not
in the cache, ``model.pipeline: auto``): the U-Net's, as before the model adapters."""


def model_family(model: ModelSpec, cache_dir: Path) -> ModelAdapter | None:
    """The adapter of the model's family, known without loading it: from ``model.pipeline``,
    a builtin's name or the model folder's ``model_index.json`` (never downloads); None when
    only loading can tell."""
    if model.pipeline != "auto":
        return for_family(model.pipeline)
    name = builtin_name(model.id)
    if name is not None and name not in SHIPPED_BUILTINS:
        kind = tiny_kind(name)
        return next((a for a in adapters().values() if a.tiny == kind), None)
    return for_folder(existing_model_folder(model, cache_dir))


def resolve_hook(spec: AuditSpec, cache_dir: Path) -> AuditSpec:
    """``spec`` with a hook point it leaves out (or names ``auto``) replaced by the family's
    default for this model (its block count read from the model folder; a builtin tiny model
    is built first), so the plan, the hash and the run's spec.yaml record the module actually
    read. A U-Net model's default is the spec's own default, ``unet.mid_block``: its hash and
    plan do not change."""
    if spec.probe.hook_given:
        return spec
    adapter = model_family(spec.model, cache_dir)
    if adapter is None:
        hook = AUTO_HOOK_FALLBACK
    else:
        builtin = builtin_name(spec.model.id) is not None
        folder = (model_folder if builtin else existing_model_folder)(spec.model, cache_dir)
        hook = adapter.hook_for(folder)
    return spec.model_copy(update={"probe": spec.probe.model_copy(update={"hook": hook})})


def check_resolved_hook(spec: AuditSpec, loaded: LoadedPipeline, cache_dir: Path) -> None:
    """For a spec that left its hook point to the family: refuse the run when the hook was
    resolved before loading to one the loaded family does not default to (a hub model of
    another family, not in the cache)."""
    if model_family(spec.model, cache_dir) is not None:
        return
    if loaded.adapter.hook_for(loaded.model_dir) != AUTO_HOOK_FALLBACK:
        raise ModelLoadError(
            f"probe.hook: 'auto' was taken as {AUTO_HOOK_FALLBACK!r} before the model was "
            f"loaded, but {spec.model.id!r} is a {loaded.adapter.title} pipeline "
            f"({loaded.pipeline_class}), whose default hook is "
            f"{loaded.adapter.hook_for(loaded.model_dir)!r}.",
            hint=f"set model.pipeline: {loaded.adapter.family} (or probe.hook) in the spec.",
        )


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
    if kind != "auto":
        kwargs.update(for_family(kind).load_kwargs())
    if model.trust_remote_code:
        kwargs["trust_remote_code"] = True
    if model.allow_pickle:
        warnings.warn(
            f"model.allow_pickle is set: {model.id!r} may load pickled weights, and unpickling "
            "a file can run any code in it. Load only files you trust.",
            UserWarning,
            stacklevel=2,
        )
    else:
        kwargs["use_safetensors"] = True
    hint = (
        "check the folder or hub id and revision; without network access only local "
        "folders and cached hub models load."
    )
    if not model.allow_pickle:
        hint += (
            " Weights load only from safetensors: convert pickled weights (save the pipeline "
            "with safe_serialization=True), or set model.allow_pickle: true for a model you trust."
        )
    with load_errors_reported(
        f"model.id: could not load {model.id!r} as a diffusers pipeline", hint=hint
    ):
        pipe = cls.from_pretrained(source, **kwargs)
    adapter = for_pipeline_class(type(pipe).__name__)
    if adapter is None:
        raise ModelLoadError(
            f"model.id: {model.id!r} loaded as {type(pipe).__name__}, which no model adapter "
            "serves.",
            hint="audit a pipeline of a family 'auditkit models' lists.",
        )
    kind = adapter.family
    if model.scheduler != "default":
        sched_cls = getattr(diffusers, SCHEDULERS[model.scheduler])
        pipe.scheduler = sched_cls.from_config(pipe.scheduler.config)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    uses_cfg = adapter.uses_cfg(pipe, model.guidance_scale)
    return LoadedPipeline(
        pipe=pipe,
        kind=kind,
        pipeline_class=type(pipe).__name__,
        device=device,
        dtype=dtype_name,
        model_dir=folder,
        uses_cfg=uses_cfg,
        adapter=adapter,
    )


def compile_denoiser(loaded: LoadedPipeline) -> None:
    """``torch.compile`` the denoiser in place (``execution.compile``). The module keeps its
    submodules and their names, so the hooks find their points as before; its first batches
    (and each new batch size) compile.

    The audit's passes add and remove hooks between calls (capture, none for the guidance
    sweep, steering for the causal check). By default the compiled code does not check a
    module's hooks, so a graph traced without them would run on with hooks added later never
    called: the capture would find nothing and the steering would silently not steer. Hook
    guards make each such change compile again instead (once per hook layout)."""
    import torch._dynamo.config

    torch._dynamo.config.skip_nnmodule_hook_guards = False
    denoiser = getattr(loaded.pipe, loaded.adapter.denoiser)
    denoiser.compile()


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
