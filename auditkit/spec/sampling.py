"""How the audited pipeline is sampled (:class:`ModelSpec`) and where h is read from it
(:class:`ProbeSpec`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from auditkit.spec.base import (
    FrozenModel,
    Name,
    NonEmptyStr,
    check_device,
    check_distinct,
    check_model_id,
)


class ModelSpec(FrozenModel):
    """Which diffusion pipeline to audit and how to sample it."""

    id: NonEmptyStr = Field(
        description=(
            "Hub id (e.g. 'SimianLuo/LCM_Dreamshaper_v7'), a local diffusers folder (relative "
            "paths are resolved against the spec's folder and may not leave it; an absolute "
            "path may name any folder), or 'builtin:tiny-sd' for the tiny random-weight "
            "pipeline auditkit builds from configs (meaningless numbers)."
        )
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    pipeline: Name = Field(
        "auto",
        description=(
            "Model family ('auto' reads model_index.json): stable-diffusion, lcm, sdxl, or "
            "another family a model adapter declares (see 'auditkit models')."
        ),
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights and compute dtype; 'auto' is float16 on CUDA, else float32."
    )
    device: str = Field(
        "auto", description="'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'."
    )
    scheduler: Literal["default", "ddim", "euler", "dpm-solver", "pndm", "lcm"] = Field(
        "default", description="Scheduler to sample with; 'default' keeps the pipeline's own."
    )
    steps: int = Field(4, ge=1, le=1000, description="Denoising steps per image.")
    guidance_scale: float = Field(
        8.0, ge=0.0, description="Classifier-free guidance scale (LCM: the distilled w)."
    )
    resolution: int = Field(
        512, ge=8, le=4096, description="Image height and width in pixels (multiple of 8)."
    )
    trust_remote_code: bool = Field(
        False, description="Allow custom pipeline code from the model repository."
    )
    allow_pickle: bool = Field(
        False,
        description=(
            "Also load weights stored as pickle (.bin, .ckpt, .pt). Off: weights load only "
            "from safetensors, because unpickling a file can run any code in it. On: auditkit "
            "warns each time it loads."
        ),
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return check_device(value, ("auto", "cpu", "cuda", "cuda:N", "mps"))

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_model_id(value)

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: int) -> int:
        if value % 8:
            raise ValueError("must be a multiple of 8")
        return value


class ProbeSpec(FrozenModel):
    """Where h is read and how it is reduced."""

    hook: NonEmptyStr = Field(
        "unet.mid_block",
        description=(
            "Dotted module path, starting with a pipeline component, whose forward output is h. "
            "Left out (or 'auto'), the model family's default: the U-Net's mid block, a middle "
            "transformer block for DiT-style models (see 'auditkit models')."
        ),
    )

    @property
    def hook_given(self) -> bool:
        """Whether the spec names the hook point (not left out, not ``auto``)."""
        return "hook" in self.model_fields_set and self.hook != "auto"

    steps: Literal["all"] | list[Annotated[int, Field(ge=0)]] = Field(
        "all", description="Which denoising steps (0-based) to keep: 'all' or a list."
    )
    aggregation: Literal["mean", "per_step"] = Field(
        "mean",
        description=(
            "'mean' averages h over the kept steps; 'per_step' keeps the trajectory "
            "(concatenated steps) as the latent."
        ),
    )
    spatial_pool: Literal["none", "mean"] = Field(
        "none", description="'mean' averages h over spatial positions (or tokens) on device."
    )
    tokens: Literal["pooled", "full"] = Field(
        "pooled", description="A transformer block's image tokens: their mean, or 'full': all."
    )
    guidance_half: Literal["cond", "uncond"] = Field(
        "cond", description="Which half of a classifier-free-guidance batch is the prompt's h."
    )
    store_dtype: Literal["auto", "float32", "float16"] = Field(
        "auto",
        description=(
            "Dtype of stored activations. 'auto': float32 when every kept step fits "
            "unit_budget_mb, else float16."
        ),
    )
    per_step_h: Literal["auto", "all"] | list[Annotated[int, Field(ge=0)]] = Field(
        "auto",
        description=(
            "Which kept steps' own h are stored for the step analyses (lean by step, step "
            "agreement): 'all', a list of steps, or 'auto': all when they fit unit_budget_mb, "
            "else as many evenly spaced steps as fit beside the mean over the kept steps, "
            "which is then accumulated on the device and stored too."
        ),
    )
    unit_budget_mb: float = Field(
        0.5,
        gt=0,
        description="Stored bytes per unit (MiB) that store_dtype and per_step_h 'auto' aim at.",
    )

    @property
    def dtype_stored(self) -> str:
        """The dtype stored: ``store_dtype``, with an unresolved 'auto' as float32."""
        return "float32" if self.store_dtype == "auto" else self.store_dtype

    @property
    def step_h_stored(self) -> Literal["all"] | list[int]:
        """The kept steps whose own h is stored: ``per_step_h``, with an unresolved 'auto' as
        all (the spec is resolved against the model's h size before planning)."""
        return "all" if self.per_step_h == "auto" else self.per_step_h

    @field_validator("steps", "per_step_h")
    @classmethod
    def _steps(cls, value: Literal["all"] | list[int]) -> Literal["all"] | list[int]:
        if isinstance(value, list):
            if not value:
                raise ValueError("must list at least one step, or be 'all'")
            check_distinct(value, "lists a step twice")
        return value


__all__ = ["ModelSpec", "ProbeSpec"]
