"""Capture cross-attention probabilities of the conditional prompt during denoising.

:class:`AttentionTracer` is a context manager over a pipeline (or a bare UNet). On entry it
wraps the chosen cross-attention layers' processors in :class:`CrossAttentionCapture` (via
:func:`~harness.attention.swap.swap_processors`, so everything is restored on exit, also after
an exception); all other layers keep their own (SDPA) processors. The wrapped processor still
computes the layer's output with the original processor, so a traced generation produces the
same image as an untraced one; it additionally computes ``softmax(Q K^T * scale)`` for the
**conditional rows only** and adds it to a running sum at the layer's native resolution.

Which rows are conditional is stated, never guessed from a fixed "second half": a
:class:`BatchLayout` lists the batch's branches in the order the pipeline stacks them
(diffusers: ``[uncond, cond]`` with CFG, ``[uncond, cond, perturbed]`` with CFG+PAG,
``[cond, perturbed]`` with PAG alone, ``[cond]`` without guidance), each branch holding one
row per image. Spatial sizes come from the UNet input tensor, so any height and width work.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from harness.attention.swap import block_of, resolve_unet, select_layers, swap_processors
from harness.errors import ConfigError

#: The layers DAAM reads by default: cross-attention of the down and up blocks (mid excluded).
DEFAULT_LAYER_PATTERNS = ("down_blocks.*", "up_blocks.*")


@dataclass(frozen=True)
class BatchLayout:
    """The order of the guidance branches in the UNet batch, and which one to keep.

    Each branch holds one row per image, branches are stacked along the batch dimension, so
    the rows of branch ``k`` of an ``N``-row batch are ``k*N/len(branches) ... (k+1)*N/len(branches)``.
    """

    branches: tuple[str, ...] = ("cond",)
    keep: str = "cond"

    def __post_init__(self) -> None:
        if self.keep not in self.branches:
            raise ConfigError(f"Batch layout {self.branches} has no branch {self.keep!r} to keep.")

    def rows(self, batch: int) -> slice:
        """The rows of the kept branch in a batch of ``batch`` rows."""
        if batch % len(self.branches):
            raise ConfigError(f"A UNet batch of {batch} rows cannot hold the {len(self.branches)} branches "
                              f"{list(self.branches)}; the batch layout does not match the pipeline call.")
        per_branch = batch // len(self.branches)
        index = self.branches.index(self.keep)
        return slice(index * per_branch, (index + 1) * per_branch)

    @classmethod
    def diffusers(cls, cfg: bool, pag: bool = False) -> BatchLayout:
        """The order diffusers' SD/SDXL (PAG) pipelines use (see ``PAGMixin._prepare_perturbed_attention_guidance``)."""
        branches = (("uncond",) if cfg else ()) + ("cond",) + (("perturbed",) if pag else ())
        return cls(branches)

    @classmethod
    def for_pipeline(cls, pipeline: Any, guidance_scale: float | None = None, pag_scale: float | None = None) -> BatchLayout:
        """The layout of ``pipeline``'s next (or current) call.

        With the scales given it mirrors the pipeline's own tests (CFG when ``guidance_scale > 1``
        and the UNet has no guidance embedding; PAG when ``pag_scale > 0`` on a PAG pipeline);
        without them it reads the pipeline's ``do_classifier_free_guidance`` /
        ``do_perturbed_attention_guidance`` properties, which are set during a call.
        """
        unet = resolve_unet(pipeline)
        if guidance_scale is None:
            cfg = bool(getattr(pipeline, "do_classifier_free_guidance", False))
        else:
            # Flux's pipelines have no CFG branch in the batch (guidance is an embedding; "true CFG" is a second call)
            cfg = (guidance_scale > 1 and getattr(unet.config, "time_cond_proj_dim", None) is None
                   and hasattr(type(pipeline), "do_classifier_free_guidance"))
        is_pag = hasattr(pipeline, "set_pag_applied_layers")
        if pag_scale is None:
            pag = is_pag and bool(getattr(pipeline, "do_perturbed_attention_guidance", False))
        else:
            pag = is_pag and pag_scale > 0
        return cls.diffusers(cfg, pag)


class CrossAttentionCapture:
    """Attention processor: the wrapped processor's output, plus the conditional rows' attention probabilities.

    The probabilities are recomputed from ``to_q``/``to_k`` for the kept rows only (the fused
    SDPA kernel does not return them), in float32, following diffusers' ``AttnProcessor``
    step by step (spatial/group norm, cross norm, q/k norm, mask, ``attn.scale``).
    """

    def __init__(self, name: str, inner: Any, tracer: AttentionTracer) -> None:
        self.name = name
        self.inner = inner
        self.tracer = tracer
        #: per (input shapes, dtype): whether the one-pass path reproduced the inner processor bit for bit
        self._one_pass_checked: dict[tuple, bool] = {}

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        wanted = encoder_hidden_states is not None and self.tracer.capturing and self.tracer.wants(self.name)
        if wanted and not args and not kwargs and temb is None and attention_mask is None and self._one_pass_applies(attn, hidden_states):
            output = self._one_pass(attn, hidden_states, encoder_hidden_states)
            if output is not None:
                return output
        if temb is not None:
            kwargs["temb"] = temb
        output = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        if wanted:
            with torch.no_grad():
                self._capture(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        return output

    # -- one pass (CPU, SDPA): the layer's output and the kept rows' probabilities together ---------
    def _one_pass_applies(self, attn: Any, hidden_states: torch.Tensor) -> bool:
        """The plain SDPA case this path reproduces exactly: diffusers' AttnProcessor2_0 on the CPU,
        3-d input, no norms/mask/residual, default scale, no autograd."""
        from diffusers.models.attention_processor import AttnProcessor2_0

        return (type(self.inner) is AttnProcessor2_0 and hidden_states.device.type == "cpu" and hidden_states.ndim == 3
                and not torch.is_grad_enabled() and not attn.training and attn.spatial_norm is None
                and attn.group_norm is None and not attn.norm_cross and getattr(attn, "norm_q", None) is None
                and getattr(attn, "norm_k", None) is None and not attn.residual_connection
                and attn.rescale_output_factor == 1.0)

    def _one_pass(self, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor) -> torch.Tensor | None:
        """Output of AttnProcessor2_0 computed by the CPU flash-attention kernel that
        ``F.scaled_dot_product_attention`` dispatches to, which also returns each query's
        log-sum-exp over the keys. The kept rows' probabilities of the first ``max_tokens`` keys
        are then ``exp(q k^T * scale - logsumexp)``: the normaliser comes free with the output, so
        neither ``to_q`` nor the full (positions x 77) softmax is computed a second time.

        The first call per input shape also runs the inner processor and compares the outputs
        bit for bit; if they differ (another torch build or kernel), this path is switched off
        for that shape and None is returned (the caller then takes the two-pass path).
        """
        batch, positions, _ = hidden_states.shape
        query = attn.to_q(hidden_states)
        key = attn.to_k(context)
        value = attn.to_v(context)
        heads = attn.heads
        head_dim = key.shape[-1] // heads
        if abs(attn.scale - head_dim ** -0.5) > 1e-12 * attn.scale:
            return None  # SDPA uses the default scale; a custom one would not match the normaliser
        query = query.view(batch, -1, heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, heads, head_dim).transpose(1, 2)
        attended, logsumexp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, False)
        output = attended.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(query.dtype)
        output = attn.to_out[1](attn.to_out[0](output))
        output = output / attn.rescale_output_factor
        shape_key = (tuple(hidden_states.shape), tuple(context.shape), hidden_states.dtype)
        checked = self._one_pass_checked.get(shape_key)
        if checked is None:
            expected = self.inner(attn, hidden_states, context)
            checked = self._one_pass_checked[shape_key] = bool(torch.equal(expected, output))
            if not checked:
                return None
        elif not checked:
            return None
        self._capture(attn, hidden_states, context, None, None, computed=(query, key, logsumexp))
        return output

    def _capture(self, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor,
                 attention_mask: torch.Tensor | None, temb: torch.Tensor | None,
                 computed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> None:
        """Add the kept rows' probabilities of this call to the tracer; ``computed``: (query, key,
        log-sum-exp) of every row from :meth:`_one_pass`, else they are computed here."""
        batch = hidden_states.shape[0]
        rows = self.tracer.rows(batch)
        if computed is not None:
            query, key, logsumexp = computed
            kept = key.shape[2] if self.tracer.max_tokens is None else min(self.tracer.max_tokens, key.shape[2])
            scores = torch.matmul(query[rows].float(), key[rows, :, :kept].float().transpose(-1, -2).mul(attn.scale))
            probabilities = scores.sub_(logsumexp[rows].float().unsqueeze(-1)).exp_()  # (rows, heads, positions, kept)
            self.tracer.add(self.name, probabilities, None)
            return
        x = hidden_states[rows]
        context = context[rows]
        spatial = None
        if attn.spatial_norm is not None:
            x = attn.spatial_norm(x, temb[rows] if temb is not None else temb)
        if x.ndim == 4:
            b, channels, height, width = x.shape
            spatial = (height, width)
            x = x.view(b, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(x)
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.to_k(context)
        b, heads = query.shape[0], attn.heads
        head_dim = key.shape[-1] // heads
        query = query.view(b, -1, heads, head_dim).transpose(1, 2)
        key = key.view(b, -1, heads, head_dim).transpose(1, 2)
        if getattr(attn, "norm_q", None) is not None:
            query = attn.norm_q(query)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)
        # The scale goes on the keys (tokens x head_dim), not on the scores (positions x tokens):
        # one pass over a far smaller tensor.
        scores = torch.matmul(query.float(), key.float().transpose(-1, -2).mul(attn.scale))
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, key.shape[2], batch)
            scores = scores + mask.view(batch, heads, -1, mask.shape[-1])[rows].float()
        probabilities = scores.softmax(dim=-1)  # (rows, heads, positions, tokens)
        self.tracer.add(self.name, probabilities, spatial)


@dataclass
class _LayerSum:
    total: torch.Tensor  #: (images, heads kept, h*w, tokens), summed over UNet calls
    size: tuple[int, int]  #: (h, w) of the layer's map
    factor: int  #: latent size / map size
    calls: int = 0
    current: torch.Tensor | None = None  #: this UNet call's map (per-step mode only)


@dataclass
class StepMaps:
    """Per-UNet-call token maps: ``maps[s]`` is (images, tokens, H, W) of call ``s`` at ``timesteps[s]``."""

    maps: list[torch.Tensor] = field(default_factory=list)
    timesteps: list[float] = field(default_factory=list)
    call_indices: list[int] = field(default_factory=list)


class AttentionTracer:
    """Context manager collecting cross-attention maps of the conditional prompt(s).

    Args:
        model: a diffusers pipeline or UNet.
        layers: fnmatch patterns over cross-attention module names (default: down and up blocks;
            ``None`` or ``["*"]``: every cross-attention layer, mid block included).
        exclude_layers: patterns removed from the selection.
        factors: keep only maps whose size is latent size / factor (e.g. ``[1, 2, 4]``); None: any.
        exclude_factors: drop maps of these factors (the reference drops 8: the 8x8 maps of a 64x64 latent).
        heads: indices of the heads to keep (None: all).
        step_window: ``(start, stop)`` over UNet call indices (0-based, stop exclusive; None: all calls).
        per_step: also keep each call's aggregated map (memory grows with the number of calls).
        layout: the batch layout, or ``"auto"`` (read from the pipeline during its call).
        upsample: interpolation mode to the latent grid (``bicubic`` as in the reference).
        clamp: clamp upsampled maps at >= 0 (bicubic undershoots).
        max_tokens: keep only the first ``max_tokens`` text positions (start token, the prompt's
            tokens, end token); the softmax is still over all positions. Saves memory: a short
            prompt needs a few of CLIP's 77 positions. None: keep all.
    """

    def __init__(self, model: Any, layers: Sequence[str] | None = DEFAULT_LAYER_PATTERNS,
                 exclude_layers: Sequence[str] = (), factors: Sequence[int] | None = None,
                 exclude_factors: Sequence[int] = (8,), heads: Sequence[int] | None = None,
                 step_window: Sequence[int] | None = None, per_step: bool = False,
                 layout: BatchLayout | str = "auto", upsample: str = "bicubic", clamp: bool = True,
                 max_tokens: int | None = None) -> None:
        self.model = model
        self.unet = resolve_unet(model)
        self.layer_names = self._select_layers(list(layers) if layers is not None else None, exclude_layers)
        self.factors = None if factors is None else {int(f) for f in factors}
        self.exclude_factors = {int(f) for f in exclude_factors}
        self.heads = None if heads is None else [int(h) for h in heads]
        if step_window is not None:
            if len(step_window) != 2 or step_window[0] < 0 or (step_window[1] is not None and step_window[1] <= step_window[0]):
                raise ConfigError(f"step_window must be [start, stop) with 0 <= start < stop, got {list(step_window)}")
        self.step_window = None if step_window is None else (int(step_window[0]), step_window[1])
        self.per_step = per_step
        if layout != "auto" and not isinstance(layout, BatchLayout):
            raise ConfigError(f"layout must be a BatchLayout or 'auto', got {layout!r}")
        if layout == "auto" and self.unet is model:
            raise ConfigError("A tracer over a bare UNet needs an explicit BatchLayout (which rows are conditional).")
        self.layout = layout
        self.upsample = upsample
        self.clamp = clamp
        if max_tokens is not None and max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}")
        self.max_tokens = max_tokens
        self.reset()
        self._stack: contextlib.ExitStack | None = None

    def _select_layers(self, patterns: list[str] | None, exclude: Sequence[str]) -> list[str]:
        """The layers to trace (cross-attention here; joint attention in :mod:`harness.attention.joint`)."""
        return select_layers(self.model, patterns, exclude)

    def _read_input(self, args: tuple, kwargs: dict) -> tuple[int, tuple[int, int]]:
        """(batch rows, latent height and width) of a denoiser call."""
        sample = args[0] if args else kwargs["sample"]
        return int(sample.shape[0]), (int(sample.shape[-2]), int(sample.shape[-1]))

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything captured so far (the processors stay installed)."""
        self.sums: dict[str, _LayerSum] = {}
        self.steps = StepMaps()
        self.call_index = -1
        self.capturing = False
        self.latent_size: tuple[int, int] | None = None
        self.seen_sizes: dict[str, tuple[int, int, int]] = {}
        self._timestep: float | None = None
        self._rows: slice | None = None
        self._layout_now: BatchLayout | None = None

    def __enter__(self) -> AttentionTracer:
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(swap_processors(
                self.unet, lambda name, current: CrossAttentionCapture(name, current, self) if name in self.layer_names else None))
            pre = self.unet.register_forward_pre_hook(self._before_unet, with_kwargs=True)
            stack.callback(pre.remove)
            post = self.unet.register_forward_hook(self._after_unet)
            stack.callback(post.remove)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc_info: Any) -> None:
        stack, self._stack = self._stack, None
        self.capturing = False
        if stack is not None:
            stack.close()

    # -- hooks -------------------------------------------------------------------------------
    def _before_unet(self, module: Any, args: tuple, kwargs: dict) -> None:
        batch, self.latent_size = self._read_input(args, kwargs)
        timestep = args[1] if len(args) > 1 else kwargs.get("timestep")
        self.call_index += 1
        self._timestep = float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)
        window = self.step_window
        self.capturing = window is None or (window[0] <= self.call_index and (window[1] is None or self.call_index < window[1]))
        layout = self.layout if isinstance(self.layout, BatchLayout) else BatchLayout.for_pipeline(self.model)
        self._layout_now = layout
        self._rows = layout.rows(batch)

    def _after_unet(self, module: Any, args: tuple, output: Any) -> None:
        if self.capturing and self.per_step:
            current = {name: s for name, s in self.sums.items() if s.current is not None}
            if current:
                self.steps.maps.append(self._aggregate({name: s.current for name, s in current.items()}))
                self.steps.timesteps.append(self._timestep)
                self.steps.call_indices.append(self.call_index)
            for layer in current.values():
                layer.total += layer.current
                layer.current = None
        self.capturing = False

    @property
    def branches(self) -> int:
        """Guidance branches of the last UNet batch (1 without guidance, 2 with CFG, 3 with CFG+PAG)."""
        return len(self._layout_now.branches) if self._layout_now is not None else 0

    def rows(self, batch: int) -> slice:
        """The conditional rows of the current UNet batch."""
        if self._rows is None or self._layout_now is None:
            raise RuntimeError("attention captured outside a UNet call")
        return self._layout_now.rows(batch)

    def _spatial_size(self, name: str, positions: int) -> tuple[int, int, int]:
        height, width = self.latent_size
        factor = 1
        while factor <= max(height, width):
            h, w = math.ceil(height / factor), math.ceil(width / factor)
            if h * w == positions:
                return h, w, factor
            factor *= 2
        raise RuntimeError(f"layer {name}: {positions} positions match no downsampling of the {height}x{width} latent")

    def wants(self, name: str) -> bool:
        """False once layer ``name``'s map size is known to be excluded (its maps are not computed)."""
        seen = self.seen_sizes.get(name)
        return seen is None or not self._excluded(seen[2])

    def _excluded(self, factor: int) -> bool:
        """Maps at latent size / ``factor`` are left out (``factors`` / ``exclude_factors``)."""
        return (self.factors is not None and factor not in self.factors) or factor in self.exclude_factors

    def add(self, name: str, probabilities: torch.Tensor, spatial: tuple[int, int] | None = None) -> None:
        """Add one call's probabilities ``(images, heads, h*w, tokens)`` of layer ``name``."""
        if spatial is None:
            h, w, factor = self._spatial_size(name, probabilities.shape[2])
        else:
            h, w = spatial
            factor = max(1, round(self.latent_size[0] / h)) if self.latent_size else 1
        self.seen_sizes[name] = (h, w, factor)
        if self._excluded(factor):
            return
        if self.heads is not None:
            if max(self.heads) >= probabilities.shape[1]:
                raise ConfigError(f"heads={self.heads} asked for, but layer {name} has {probabilities.shape[1]} heads")
            probabilities = probabilities[:, self.heads]
        if self.max_tokens is not None:
            probabilities = probabilities[..., : self.max_tokens]
        layer = self.sums.get(name)
        if layer is None or layer.total.shape != probabilities.shape:
            if layer is not None:
                raise ConfigError(f"layer {name}: map shape changed from {tuple(layer.total.shape)} to "
                                  f"{tuple(probabilities.shape)} within one trace; use one tracer per image size/batch")
            layer = self.sums[name] = _LayerSum(torch.zeros_like(probabilities, dtype=torch.float32), (h, w), factor)
        layer.calls += 1
        if self.per_step:
            layer.current = probabilities.float() if layer.current is None else layer.current + probabilities
        else:
            layer.total += probabilities

    # -- results -----------------------------------------------------------------------------
    def _aggregate(self, totals: dict[str, torch.Tensor]) -> torch.Tensor:
        maps = []
        for name, total in totals.items():
            h, w = self.sums[name].size
            images, heads, _, tokens = total.shape
            maps.append(total.permute(0, 1, 3, 2).reshape(images, heads, tokens, h, w))
        return aggregate_layer_maps(maps, self.latent_size, self.upsample, self.clamp)

    def token_maps(self) -> torch.Tensor:
        """Summed over time, upsampled to the latent grid, clamped, averaged over (layer, head): (images, tokens, H, W)."""
        if not self.sums:
            seen = ", ".join(f"{n} ({h}x{w}, factor {f})" for n, (h, w, f) in self.seen_sizes.items())
            raise ConfigError("No attention map was captured. "
                              + (f"The layers seen were all excluded by factors/exclude_factors: {seen}." if seen
                                 else "No selected layer ran inside the step window (was the pipeline called inside the tracer?)."))
        return self._aggregate({name: layer.total for name, layer in self.sums.items()})

    def layers_used(self) -> list[dict[str, Any]]:
        """The layers that contributed, with their map size and block."""
        return [{"name": name, "block": block_of(name), "size": list(layer.size), "factor": layer.factor,
                 "heads": int(layer.total.shape[1]), "calls": layer.calls} for name, layer in self.sums.items()]


def aggregate_layer_maps(maps: Sequence[torch.Tensor], size: tuple[int, int], mode: str = "bicubic",
                         clamp: bool = True) -> torch.Tensor:
    """Mean over (layer, head) of maps upsampled to ``size``.

    ``maps``: one tensor per layer, shaped (images, heads, tokens, h, w) (layers may differ in
    heads and size). Each head's map is interpolated to ``size`` (bicubic by default, as the
    reference), clamped at >= 0 when ``clamp`` (bicubic overshoots below zero), and the result
    is the mean over all (layer, head) pairs: (images, tokens, H, W).
    """
    total: torch.Tensor | None = None
    count = 0
    for layer_map in maps:
        images, heads, tokens, h, w = layer_map.shape
        flat = layer_map.reshape(images * heads * tokens, 1, h, w).float()
        if (h, w) != tuple(size):
            kwargs = {} if mode == "nearest" else {"align_corners": False}
            flat = F.interpolate(flat, size=tuple(size), mode=mode, **kwargs)
        if clamp:
            flat = flat.clamp(min=0)
        summed = flat.reshape(images, heads, tokens, *size).sum(dim=1)
        total = summed if total is None else total + summed
        count += heads
    if total is None:
        raise ConfigError("no attention maps to aggregate")
    return total / count
