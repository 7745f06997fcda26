"""What a model adapter owns: everything auditkit needs to know about one architecture family.

A family (SD 1.x/2.x, SDXL, LCM, PixArt, SD3, FLUX, ...) is one :class:`ModelAdapter` in one
module of this package: the diffusers pipeline classes it serves, the denoiser component, the
default hook point (with why), where the image stream sits in a block's output, how guidance
enters the denoiser, the starting noise a pipeline's ``latents=`` takes, the geometry ``plan``
needs to size storage, and a tiny random-weight pipeline for tests. The extraction hooks, the
runner, the causal check's steering and ``plan`` ask the adapter instead of assuming a U-Net.

Nothing here imports torch or diffusers at module level: ``auditkit --help`` and ``plan`` load
adapters cheaply; the methods that need torch import it themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

Guidance = Literal["cfg", "embedded", "distilled"]
"""How guidance reaches the denoiser: ``cfg`` doubles the batch (unconditional half first) when
the scale is above 1; ``embedded`` feeds the scale to the denoiser as an input (FLUX.1-dev), one
call of the plain batch per step; ``distilled`` (LCM) embeds it through the time conditioning."""


BLOCKS = "transformer.transformer_blocks."
"""The transformer families' block list (``{middle}``, ``{two_thirds}`` or ``{last}`` follows)."""


@dataclass(frozen=True)
class DefaultHook:
    """The hook point an audit reads when the spec leaves ``probe.hook`` out (or ``auto``):
    ``path``, where ``{middle}``, ``{two_thirds}`` and ``{last}`` stand for the block half-way
    down, two thirds of the way down and last of the denoiser's ``layers_key`` blocks, counted
    from its config (``layers``: their count in the family's
    published checkpoint, used without a config), and ``reason``, one line on why."""

    path: str
    reason: str
    layers: int = 0
    layers_key: str = "num_layers"


@dataclass(frozen=True)
class Geometry:
    """What ``plan`` needs about the denoiser, read from config files alone: h's shape per
    sample at the hook point (before any pooling), its parameter count and the latent area
    (for the time estimate), and whether guidance doubles the batch."""

    h_shape: tuple[int, ...]
    params: float
    latent_area: int
    cfg_capable: bool
    known: bool = True


class ModelAdapter:
    """One architecture family. Subclasses set the class attributes and override what differs."""

    family: str
    """The spec's ``model.pipeline`` name for the family (``stable-diffusion``, ``pixart``, ...)."""
    title: str
    """How the README and messages name it (``SD 1.x / 2.x``, ``PixArt-α / Σ``, ...)."""
    pipeline_classes: tuple[str, ...]
    """The diffusers pipeline classes it serves; the first is the one it loads by default."""
    denoiser: str = "transformer"
    """The pipeline component that denoises (``unet`` or ``transformer``)."""
    hook: DefaultHook
    """The default hook point and why (:meth:`hook_for`; the README's supported-models table
    shows it)."""
    guidance: Guidance = "cfg"
    image_stream: int | None = None
    """Where the image tokens sit in a block's tuple output (SD3's and FLUX's blocks return
    ``(text, image)``: 1); None: the output (or its first item) is the image stream."""
    tiny: str | None = None
    """The builtin tiny pipeline of the family (``builtin:tiny-<tiny>``), None without one."""
    scales_model_input: bool = False
    """Whether the family's pipeline passes its latent through ``scheduler.scale_model_input``
    before the denoiser (the U-Net families but LCM, PixArt): a latent fed in its place must be
    scaled the same way (:meth:`fed_latent`)."""

    def hook_for(self, folder: Path | None) -> str:
        """The default hook point of this model: :attr:`hook` with its block indices from
        ``folder``'s denoiser config (the published depth when there is none)."""
        layers = self._layers(folder)
        return self.hook.path.format(
            middle=layers // 2, two_thirds=(2 * layers) // 3, last=max(layers - 1, 0)
        )

    def _layers(self, folder: Path | None) -> int:
        """How many blocks the hook's block list has: from the denoiser's config, else the
        published checkpoint's count."""
        config = read_config(folder, self.denoiser) or {}
        return int(config.get(self.hook.layers_key, self.hook.layers) or 0)

    def sweep_hooks(self, folder: Path | None) -> list[str]:
        """The hook points a layer sweep reads, shallow to deep (every block of the
        denoiser's block list, from its config; the published depth without one)."""
        return [BLOCKS + str(i) for i in range(self._layers(folder))]

    # --- a tiny pipeline for tests ----------------------------------------------------------

    def tiny_config(self, words: tuple[str, ...]) -> dict[str, Any]:
        """Every component's config of the family's tiny pipeline (JSON-able: the build is
        fingerprinted by it)."""
        raise NotImplementedError(f"{type(self).__name__} has no tiny pipeline")

    def tiny_pipeline(
        self, config: dict[str, Any], seed: int, words: tuple[str, ...], workdir: Path
    ) -> Any:
        """The tiny random-weight pipeline of ``config`` (each component seeded from ``seed``;
        ``workdir``: a scratch folder for tokenizer files)."""
        raise NotImplementedError(f"{type(self).__name__} has no tiny pipeline")

    # --- loading and sampling ---------------------------------------------------------------

    def load_kwargs(self) -> dict[str, Any]:
        """Extra ``from_pretrained`` keyword arguments (SD: no safety checker)."""
        return {}

    def call_kwargs(self, pipe: Any) -> dict[str, Any]:
        """Extra keyword arguments of every pipeline call (e.g. no resolution binning)."""
        return {}

    def uses_cfg(self, pipe: Any, guidance_scale: float) -> bool:
        """Whether the denoiser sees a doubled (unconditional, conditional) batch."""
        return self.guidance == "cfg" and guidance_scale > 1.0

    def noise(self, pipe: Any, seed: int, resolution: int) -> tuple[torch.Tensor, torch.Generator]:
        """One unit's starting latent in the shape the pipeline's ``latents=`` takes per sample
        (float32), from its own seeded CPU generator, left positioned just after that draw so
        the scheduler's own noise continues the same stream."""
        import torch

        denoiser = getattr(pipe, self.denoiser)
        channels = int(denoiser.config.in_channels)
        side = resolution // int(pipe.vae_scale_factor)
        generator = torch.Generator("cpu").manual_seed(int(seed))
        noise = torch.randn((channels, side, side), generator=generator, dtype=torch.float32)
        return noise, generator

    # --- reading images (image-grounded axes) ------------------------------------------------

    def encode_images(self, pipe: Any, pixels: torch.Tensor) -> torch.Tensor:
        """Images ([N, 3, H, W] float in [-1, 1]) as clean latents in the form the pipeline's
        ``latents=`` takes per sample, float32: the VAE's latent mean, scaled as the pipeline
        unscales it before decoding. This is Stable Diffusion's convention (``z *
        scaling_factor``; with ``latents_mean`` and ``latents_std`` in the VAE's config, as
        SDXL-family VAEs may have, ``(z - mean) * scaling_factor / std``)."""
        import torch

        z = self._vae_mean(pipe, pixels)
        config = pipe.vae.config
        mean, std = config.get("latents_mean"), config.get("latents_std")
        if mean is not None and std is not None:
            shape = (1, -1, *([1] * (z.ndim - 2)))
            mean_t = torch.tensor(mean, dtype=z.dtype, device=z.device).view(shape)
            std_t = torch.tensor(std, dtype=z.dtype, device=z.device).view(shape)
            return (z - mean_t) * float(config.scaling_factor) / std_t
        return z * float(config.scaling_factor)

    def _vae_mean(self, pipe: Any, pixels: torch.Tensor) -> torch.Tensor:
        """The VAE encoder's latent mean (float32) of ``pixels`` (a deep-compression
        autoencoder, SANA's, returns its latent itself); a VAE that asks to be upcast
        (``force_upcast``, SDXL's) encodes in float32 and is cast back afterwards."""
        import torch

        vae = pipe.vae
        dtype = vae.dtype
        upcast = dtype == torch.float16 and bool(vae.config.get("force_upcast", False))
        if upcast:
            vae.to(dtype=torch.float32)
        try:
            x = pixels.to(device=vae.device, dtype=torch.float32 if upcast else dtype)
            encoded = vae.encode(x)
            dist = getattr(encoded, "latent_dist", None)
            z = dist.mean if dist is not None else encoded.latent
        finally:
            if upcast:
                vae.to(dtype=dtype)
        return z.float()

    def noised(
        self, scheduler: Any, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """``clean`` latents noised to ``timesteps`` (one per sample) with ``noise``, by the
        scheduler itself: ``add_noise`` (the DDPM-family schedulers, and DPM-Solver's flow
        sigmas), else ``scale_noise`` (flow matching)."""
        if hasattr(scheduler, "add_noise"):
            return scheduler.add_noise(clean, noise, timesteps)
        return scheduler.scale_noise(clean, timesteps, noise)

    def fed_latent(
        self, scheduler: Any, clean: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor
    ) -> torch.Tensor:
        """What the denoiser is given in place of the pipeline's own latent at ``timestep``:
        ``clean`` noised to it (:meth:`noised`), scaled as the pipeline scales its latent
        (:attr:`scales_model_input`)."""
        import torch

        t = torch.as_tensor(timestep).reshape(1).repeat(clean.shape[0])
        latent = self.noised(scheduler, clean, noise, t.to(clean.device))
        if self.scales_model_input and hasattr(scheduler, "scale_model_input"):
            latent = scheduler.scale_model_input(latent, timestep)
        return latent

    # --- the hook point ---------------------------------------------------------------------

    def _latent_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | int | None:
        """Where the denoiser's latent input is: a keyword (``sample``, ``hidden_states``), the
        first positional argument (0), or None."""
        for key in ("sample", "hidden_states"):
            if key in kwargs:
                return key
        return 0 if args else None

    def latent_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The denoiser's latent input of one call (None when unseen)."""
        key = self._latent_key(args, kwargs)
        if key is None:
            return None
        return kwargs[key] if isinstance(key, str) else args[key]

    def with_latent_input(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], latent: Any
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The denoiser call's arguments with its latent input replaced by ``latent``."""
        key = self._latent_key(args, kwargs)
        if key is None:
            raise RuntimeError("the denoiser was called without a latent input to replace")
        if isinstance(key, str):
            return args, {**kwargs, key: latent}
        return (latent, *args[1:]), kwargs

    def latent_batch(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
        """The batch the denoiser was called with (its latent input), None when unseen."""
        shape = getattr(self.latent_input(args, kwargs), "shape", None)
        return int(shape[0]) if shape else None

    def image_tensor(self, output: Any) -> Any:
        """The image stream of a hook point's output (a tensor, or an item of a tuple)."""
        if isinstance(output, tuple | list):
            index = self.image_stream if self.image_stream is not None else 0
            return output[index] if len(output) > index else output[0]
        return output

    def with_image_tensor(self, output: Any, tensor: Any) -> Any:
        """``output`` with its image stream replaced by ``tensor`` (for steering)."""
        if isinstance(output, tuple | list):
            index = self.image_stream if self.image_stream is not None else 0
            index = index if len(output) > index else 0
            items = list(output)
            items[index] = tensor
            return tuple(items) if isinstance(output, tuple) else items
        return tensor

    # --- geometry for plan ------------------------------------------------------------------

    def geometry(self, folder: Path | None, resolution: int, hook: str) -> Geometry | None:
        """h's shape at ``hook`` and the denoiser's size from the model folder's config files,
        or None when they cannot tell (the plan then assumes an SD 1.5-sized U-Net)."""
        return None


class TransformerAdapter(ModelAdapter):
    """What the DiT-style families share: h is the image tokens of a block, [tokens, D], with
    tokens = (side / patch)^2 of the latent and D = heads x head dim."""

    def geometry(self, folder: Path | None, resolution: int, hook: str) -> Geometry | None:
        config = read_config(folder, self.denoiser)
        if config is None or folder is None:
            return None
        latent = resolution // vae_scale(folder)
        patch = int(config.get("patch_size") or 1)
        tokens = (latent // patch) ** 2
        width = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
        return Geometry(
            h_shape=(tokens, width),
            params=float(safetensors_params(folder / self.denoiser)),
            latent_area=latent * latent,
            cfg_capable=self.guidance == "cfg",
        )


class FlowAdapter(TransformerAdapter):
    """The rectified-flow families (SD3, FLUX), whose tiny pipelines share their parts: the
    denoiser config :attr:`tiny_transformer`, the rest :attr:`tiny_flow`
    (:func:`~auditkit.models.adapters._tiny_parts.flow_config`), and their text encoders
    (:meth:`text_parts`)."""

    transformer_class: str
    tiny_transformer: dict[str, Any]
    tiny_flow: dict[str, Any]

    def encode_images(self, pipe: Any, pixels: torch.Tensor) -> torch.Tensor:
        """The SD3 / FLUX convention: ``(z - shift_factor) * scaling_factor``."""
        config = pipe.vae.config
        shift = float(config.get("shift_factor") or 0.0)
        return (self._vae_mean(pipe, pixels) - shift) * float(config.scaling_factor)

    def noised(
        self, scheduler: Any, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """Flow matching: ``scale_noise``, (1 - sigma) * clean + sigma * noise."""
        return scheduler.scale_noise(clean, timesteps, noise)

    def tiny_config(self, words: tuple[str, ...]) -> dict[str, Any]:
        from auditkit.models.adapters import _tiny_parts as parts

        return parts.flow_config(words, self.tiny_transformer, **self.tiny_flow)

    def tiny_pipeline(
        self, config: dict[str, Any], seed: int, words: tuple[str, ...], workdir: Path
    ) -> Any:
        from auditkit.models.adapters import _tiny_parts as parts

        clip = parts.clip_tokenizer(words, parts.CLIP_LENGTH, workdir / "clip")
        text = self.text_parts(config, seed, words, clip)
        return parts.flow_pipeline(
            self.pipeline_classes[0], self.transformer_class, config, seed, **text
        )

    def text_parts(
        self, config: dict[str, Any], seed: int, words: tuple[str, ...], clip: Any
    ) -> dict[str, Any]:
        """The tiny pipeline's text encoders and tokenizers, by component name."""
        raise NotImplementedError


GENERIC = ModelAdapter()
"""The conventions of a pipeline no adapter serves (a test's stand-in): the latent input is
``sample``, ``hidden_states`` or the first argument; a tuple output's image stream is its first
item; noise of [in_channels, side, side] from ``pipe.<denoiser>`` (a transformer)."""


def read_config(folder: Path | None, component: str) -> dict[str, Any] | None:
    """``folder/component/config.json`` as a dict, None when absent."""
    if folder is None:
        return None
    path = folder / component / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def vae_scale(folder: Path | None, default: int = 8) -> int:
    """The VAE's downsampling factor from its config (2 ** (levels - 1)), or ``default``."""
    config = read_config(folder, "vae")
    if config is None:
        return default
    levels = config.get("block_out_channels") or config.get("encoder_block_out_channels")
    return 2 ** (len(levels) - 1) if levels else default


def safetensors_params(folder: Path) -> int:
    """Parameter count from the safetensors headers of a component folder (no data read)."""
    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in entry.get("shape", []):
                count *= int(dim)
            total += count
    return total
