"""The one way auditkit reads a model's internals: a scoped, validated forward hook.

``capture_h`` resolves and validates the hook point before the first forward pass, tags every
capture with its denoising step, timestep and guidance half, detaches and reduces it on the
device, and removes its hooks in ``finally``. ``steer_h``, its one counterpart that writes, adds
a fixed direction to the same hook point's output for the causal check, validated and removed
the same way. :func:`auditkit.extract.feed.feed_latents` changes what the denoiser reads
instead, so that a ``capture_h`` opened with it reads h of real images.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from auditkit.errors import SpecError
from auditkit.models.adapters.base import GENERIC, ModelAdapter


@dataclass
class Capture:
    """h of one denoiser call for one guidance half: ``tensor`` is [batch, ...] on device."""

    step: int
    timestep: float
    half: Literal["cond", "uncond", "single"]
    tensor: torch.Tensor


@dataclass
class HookSession:
    """What a ``capture_h`` block collected, plus counts of denoiser calls."""

    expected_batch: int
    captures: list[Capture] = field(default_factory=list)
    denoiser_calls: int = 0
    denoiser_samples: int = 0
    timesteps: list[float] = field(default_factory=list)
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    summed_steps: list[int] = field(default_factory=list)

    def mean(self, half: str, dtype: torch.dtype) -> torch.Tensor | None:
        """The mean of h over the ``mean_over`` steps for one half (None when not asked for),
        accumulated in float32 on the device and cast once."""
        total = self.sums.get(half, self.sums.get("single"))
        if total is None or not self.summed_steps:
            return None
        return (total / len(self.summed_steps)).to(dtype)

    def by_step(self, half: str) -> list[Capture]:
        """Captures of one half (``single`` counts as both), ordered by step."""
        chosen = [c for c in self.captures if c.half in (half, "single")]
        return sorted(chosen, key=lambda c: c.step)


class SamplingDone(Exception):
    """Raised from the hook point once every capture of a pipeline call has read the last step
    it keeps (:class:`StopWhenRead`): the rest of the call (the later blocks of that step, any
    later step) would compute nothing that is kept. The caller ends the call there."""


@dataclass
class StopWhenRead:
    """Shared by the captures of one pipeline call that decodes no image: ``pending`` of them
    have not yet read their last kept step; the last one to read it raises
    :class:`SamplingDone`. A capture that cannot tell its last step (the scheduler lists
    another number of timesteps than the spec's steps: a sampler that calls the denoiser
    twice per step) turns it off for the call, which then runs to its end."""

    pending: int
    enabled: bool = True

    def check_schedule(self, components: dict[str, Any], steps: int) -> None:
        """Off unless the pipeline's scheduler lists exactly ``steps`` timesteps (one denoiser
        call per step), read at the call's first denoiser call."""
        timesteps = getattr(components.get("scheduler"), "timesteps", None)
        if timesteps is None or len(timesteps) != steps:
            self.enabled = False

    def read_last(self) -> None:
        self.pending -= 1
        if self.enabled and self.pending <= 0:
            raise SamplingDone


def hook_candidates(components: dict[str, Any]) -> list[str]:
    """Every dotted module path below the pipeline's torch components."""
    names: list[str] = []
    for comp_name, comp in components.items():
        if isinstance(comp, nn.Module):
            for sub, _ in comp.named_modules():
                names.append(f"{comp_name}.{sub}" if sub else comp_name)
    return names


def resolve_hook_point(components: dict[str, Any], path: str) -> tuple[nn.Module, nn.Module]:
    """Return (denoiser component, hooked module) for ``path``, or a located SpecError."""
    head, _, rest = path.partition(".")
    root = components.get(head)
    module: nn.Module | None = None
    if isinstance(root, nn.Module):
        try:
            module = root.get_submodule(rest) if rest else root
        except AttributeError:
            module = None
    if root is None or module is None or not isinstance(root, nn.Module):
        candidates = hook_candidates(components)
        close = difflib.get_close_matches(path, candidates, n=3, cutoff=0.6)
        hint = (
            f"did you mean {', '.join(repr(c) for c in close)}?"
            if close
            else "run 'auditkit hooks SPEC' to list the modules of this pipeline."
        )
        raise SpecError(
            [f"probe.hook: the pipeline has no module {path!r}; {hint}"],
            source="probe",
            hint="set probe.hook to a dotted module path such as 'unet.mid_block'.",
        )
    return root, module


def _timestep_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
    value = kwargs.get("timestep", args[1] if len(args) > 1 else None)
    if isinstance(value, torch.Tensor):
        return float(value.flatten()[0].item())
    return float(value) if value is not None else float("nan")


def _reduce(
    tensor: torch.Tensor, spatial_pool: str, dtype: torch.dtype, tokens: str = "pooled"
) -> torch.Tensor:
    tensor = tensor.detach()
    if spatial_pool == "mean":
        if tensor.ndim == 4:  # [B, C, H, W]
            tensor = tensor.mean(dim=(2, 3))
        elif tensor.ndim == 3:  # [B, tokens, D]
            tensor = tensor.mean(dim=1)
    elif tensor.ndim == 3 and tokens == "pooled":  # image tokens: their mean (METHOD.md)
        tensor = tensor.mean(dim=1)
    return tensor.to(dtype)


@contextmanager
def capture_h(
    components: dict[str, Any],
    hook: str,
    *,
    expected_batch: int,
    keep_steps: set[int] | None = None,
    halves: tuple[str, ...] = ("cond",),
    spatial_pool: str = "none",
    store_dtype: torch.dtype = torch.float32,
    adapter: ModelAdapter = GENERIC,
    tokens: str = "pooled",
    mean_over: set[int] | None = None,
    stop: tuple[StopWhenRead, int, int] | None = None,
) -> Iterator[HookSession]:
    """Capture the output of module ``hook`` during one pipeline call of ``expected_batch`` items.

    ``keep_steps`` (None: all) are captured one by one; ``mean_over`` (None: none) are summed
    on the device, in float32, into :meth:`HookSession.mean`, so a unit can store the mean over
    every step and its own h at a few.

    ``stop`` (shared, the sampling's steps, the last step this capture reads): once that step is
    read, the capture tells the :class:`StopWhenRead`, which ends the call when every capture of
    it has read its last step.

    With classifier-free guidance the denoiser sees 2 x ``expected_batch`` samples, the
    unconditional half first; those are split and tagged. Only ``halves`` are kept. The
    ``adapter`` of the model's family says where the image stream of a block's output is (an
    MMDiT block returns its text tokens too) and how the denoiser receives its latent.
    """
    denoiser, module = resolve_hook_point(components, hook)
    session = HookSession(expected_batch=expected_batch)
    state = {"step": -1, "timestep": float("nan"), "seen": 0}

    def before_denoiser(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        state["step"] += 1
        state["seen"] = 0
        if stop is not None and state["step"] == 0:
            stop[0].check_schedule(components, stop[1])
        state["timestep"] = _timestep_of(args, kwargs)
        session.timesteps.append(state["timestep"])
        session.denoiser_calls += 1
        batch = adapter.latent_batch(args, kwargs)
        if batch is not None:
            session.denoiser_samples += batch

    def after_module(_mod: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        _count_run(state, hook)
        step = int(state["step"])
        summed = mean_over is not None and step in mean_over
        if not summed and keep_steps is not None and step not in keep_steps:
            return
        out = _tensor_of(adapter.image_tensor(output), hook)
        n = expected_batch
        if out.shape[0] == 2 * n:
            parts = {"uncond": out[:n], "cond": out[n:]}
        elif out.shape[0] == n:
            parts = {"single": out}
        else:
            raise RuntimeError(
                f"hook point {hook!r} saw batch {out.shape[0]}, expected {n} or {2 * n}"
            )
        for half, tensor in parts.items():
            if half != "single" and half not in halves:
                continue
            if summed:
                full = _reduce(tensor, spatial_pool, torch.float32, tokens)
                previous = session.sums.get(half)
                session.sums[half] = full.clone() if previous is None else previous + full
            if keep_steps is None or step in keep_steps:
                reduced = _reduce(tensor, spatial_pool, store_dtype, tokens)
                session.captures.append(
                    Capture(step, float(state["timestep"]), half, reduced)  # type: ignore[arg-type]
                )
        if summed and (not session.summed_steps or session.summed_steps[-1] != step):
            session.summed_steps.append(step)
        if stop is not None and step == stop[2]:
            stop[0].read_last()

    with _hooked(denoiser, before_denoiser, module, after_module, with_kwargs=True):
        yield session


@dataclass
class SteerSession:
    """What a ``steer_h`` block did: denoiser calls seen and hook-point outputs changed."""

    denoiser_calls: int = 0
    steered_calls: int = 0


@contextmanager
def steer_h(
    components: dict[str, Any],
    hook: str,
    direction: torch.Tensor,
    alpha: float | torch.Tensor,
    *,
    expected_batch: int | None = None,
    adapter: ModelAdapter = GENERIC,
) -> Iterator[SteerSession]:
    """Add ``alpha * direction`` to the output of module ``hook`` at every denoiser call.

    The causal check's intervention (METHOD.md): ``direction`` has the shape of one sample of
    the hook point's output (e.g. [C, H, W] for a U-Net block) and is added to every sample,
    at every denoising step, in both classifier-free-guidance halves. ``alpha`` is one number
    for the whole batch or one per sample ([expected_batch]); under guidance the per-sample
    values are repeated for the two halves (unconditional first, as the pipeline stacks them).
    The hook point is validated like :func:`capture_h`'s before the first forward pass, a
    module that runs more than once per denoiser call is refused (it would be steered twice),
    and the hook is removed in ``finally``. Other hooks registered after this one (a
    ``capture_h`` opened inside the block) see the steered output.
    """
    denoiser, module = resolve_hook_point(components, hook)
    alphas = torch.as_tensor(alpha, dtype=torch.float32).reshape(-1)
    if alphas.numel() != 1 and alphas.numel() != expected_batch:
        raise ValueError(
            f"alpha has {alphas.numel()} values; give one, or one per sample "
            f"(expected_batch={expected_batch})"
        )
    session = SteerSession()
    state = {"seen": 0}

    def before_denoiser(_mod: nn.Module, _args: tuple[Any, ...]) -> None:
        state["seen"] = 0
        session.denoiser_calls += 1

    def after_module(_mod: nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
        _count_run(state, hook)
        out = _tensor_of(adapter.image_tensor(output), hook)
        shape = _broadcast(direction, tuple(out.shape[1:]))
        if shape is None:
            raise RuntimeError(
                f"cannot steer {hook!r}: its output per sample has shape "
                f"{list(out.shape[1:])}, the direction {list(direction.shape)}"
            )
        scale = alphas
        if alphas.numel() > 1:
            if out.shape[0] == 2 * alphas.numel():
                scale = alphas.repeat(2)
            elif out.shape[0] != alphas.numel():
                raise RuntimeError(
                    f"hook point {hook!r} saw batch {out.shape[0]}, expected "
                    f"{alphas.numel()} or {2 * alphas.numel()}"
                )
        shift = scale.to(out.device).view(-1, *([1] * shape.ndim)) * shape.to(out.device)
        steered = out + shift.to(out.dtype)
        session.steered_calls += 1
        return adapter.with_image_tensor(output, steered)

    with _hooked(denoiser, before_denoiser, module, after_module, with_kwargs=False):
        yield session


@contextmanager
def _hooked(
    denoiser: nn.Module,
    before_denoiser: Callable[..., Any],
    module: nn.Module,
    after_module: Callable[..., Any],
    *,
    with_kwargs: bool,
) -> Iterator[None]:
    """``before_denoiser`` runs before every denoiser call (given its keyword arguments too
    when ``with_kwargs``), ``after_module`` on the hook point's output, for the block; both
    hooks are removed in ``finally``."""
    handles = [
        denoiser.register_forward_pre_hook(
            run_eagerly(denoiser, before_denoiser), with_kwargs=with_kwargs
        ),
        module.register_forward_hook(run_eagerly(denoiser, after_module)),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_eagerly(denoiser: nn.Module, hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook`` as it must be registered on (a module of) ``denoiser``. On a compiled denoiser
    (``execution.compile``) the hook runs outside the compiled graph, which breaks there:
    traced into the graph, its bookkeeping (a list that grows by one capture per step) would
    compile the whole denoiser again at every step, until torch gives up compiling it. An
    uncompiled denoiser gets the hook itself."""
    if getattr(denoiser, "_compiled_call_impl", None) is None:
        return hook
    return torch.compiler.disable(hook)


def _count_run(state: dict[str, Any], hook: str) -> None:
    """Count one run of the hook point in the current denoiser call; a second is refused (it
    would be captured or steered twice)."""
    state["seen"] += 1
    if state["seen"] > 1:
        raise RuntimeError(
            f"hook point {hook!r} ran more than once in one denoiser call; "
            "choose a module that runs once per step"
        )


def _broadcast(direction: torch.Tensor, per_sample: tuple[int, ...]) -> torch.Tensor | None:
    """``direction`` shaped to add to one sample of the hook point's output: as it is when the
    shapes match; a pooled direction (one value per channel or feature, as h is stored with
    pooling) spread over every position: [C] -> [C, 1, 1] for a feature map [C, H, W], [D] ->
    [1, D] for image tokens [T, D]; None when it fits neither."""
    shape = tuple(direction.shape)
    if shape == per_sample:
        return direction
    if len(shape) == 1 and len(per_sample) == 3 and per_sample[0] == shape[0]:
        return direction.view(-1, 1, 1)
    if len(shape) == 1 and len(per_sample) == 2 and per_sample[1] == shape[0]:
        return direction.view(1, -1)
    return None


def _tensor_of(output: Any, hook: str) -> torch.Tensor:
    """The tensor a hook point returned (the first item of a tuple or list output)."""
    out = output[0] if isinstance(output, tuple | list) else output
    if not isinstance(out, torch.Tensor):
        raise RuntimeError(f"hook point {hook!r} returned {type(out).__name__}, not a tensor")
    return out
