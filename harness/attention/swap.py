"""Swap a diffusers model's attention processors for the length of a ``with`` block.

diffusers routes every :class:`~diffusers.models.attention_processor.Attention` call through a
processor object (``unet.attn_processors`` / ``unet.set_attn_processor``). Methods that read or
change attention (DAAM capture, EmerDiff modulation, PAG perturbation) install their own
processors on some layers and must give the model back exactly as they found it, also when the
block raises. :func:`swap_processors` does only that; :func:`cross_attention_layers` and
:func:`select_layers` name the layers a method may want.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from harness.errors import ConfigError

#: A replacement per layer: a mapping ``{layer name: processor}`` or a function
#: ``(layer name, current processor) -> new processor | None`` (None keeps the current one).
ProcessorMapping = Mapping[str, Any] | Callable[[str, Any], Any]

_SUFFIX = ".processor"


def resolve_unet(model: Any) -> Any:
    """The denoiser of a pipeline (``.unet``, else ``.transformer``), or ``model`` itself when it is a module."""
    import torch

    for attribute in ("unet", "transformer"):
        candidate = getattr(model, attribute, None)
        if isinstance(candidate, torch.nn.Module):
            return candidate
    if isinstance(model, torch.nn.Module):
        return model
    raise ConfigError(f"{type(model).__name__} is neither a diffusers pipeline with a UNet nor a torch module.")


def layer_name(processor_key: str) -> str:
    """``down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor`` -> the module name."""
    return processor_key[: -len(_SUFFIX)] if processor_key.endswith(_SUFFIX) else processor_key


@contextlib.contextmanager
def swap_processors(model: Any, mapping: ProcessorMapping) -> Iterator[dict[str, Any]]:
    """Install new attention processors on some layers; restore every original one on exit.

    ``model`` is a pipeline or a UNet; ``mapping`` names layers by module name (as returned by
    :func:`cross_attention_layers`; the ``.processor`` suffix of ``attn_processors`` keys is
    optional) or is a function of (name, current processor). Layers not named keep their own
    processor (SDPA stays SDPA). The originals are put back in a ``finally`` block, so an
    exception inside the block (or a pipeline that swaps processors itself) cannot leave the
    model modified. Yields ``{layer name: installed processor}``.
    """
    unet = resolve_unet(model)
    if not hasattr(unet, "set_attn_processor"):
        raise ConfigError(f"{type(unet).__name__} has no attn_processors/set_attn_processor; its attention "
                          "processors cannot be swapped.")
    originals = dict(unet.attn_processors)
    by_layer = {layer_name(key): key for key in originals}
    installed: dict[str, Any] = {}
    if callable(mapping) and not isinstance(mapping, Mapping):
        for name, key in by_layer.items():
            new = mapping(name, originals[key])
            if new is not None:
                installed[name] = new
    else:
        unknown = [name for name in mapping if layer_name(name) not in by_layer]
        if unknown:
            raise ConfigError(f"No attention layer named {unknown[0]!r}. Layers: {', '.join(sorted(by_layer))}")
        installed = {layer_name(name): processor for name, processor in mapping.items()}
    replacement = dict(originals)
    for name, processor in installed.items():
        replacement[by_layer[name]] = processor
    try:
        # set_attn_processor pops from the dict it gets: always hand it a copy.
        unet.set_attn_processor(dict(replacement))
        yield installed
    finally:
        unet.set_attn_processor(dict(originals))


def attention_modules(model: Any) -> dict[str, Any]:
    """Every diffusers ``Attention`` module of the model that has a processor, by module name."""
    unet = resolve_unet(model)
    return {name: module for name, module in unet.named_modules() if hasattr(module, "set_processor")}


def cross_attention_layers(model: Any) -> list[str]:
    """Module names of the cross-attention (text-conditioned) layers, in model order."""
    return [name for name, module in attention_modules(model).items() if getattr(module, "is_cross_attention", False)]


def block_of(name: str) -> str:
    """``down_blocks.1.attentions.0...`` -> ``down``; ``mid_block...`` -> ``mid``; ``up_blocks...`` -> ``up``."""
    head = name.split(".", 1)[0]
    return {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}.get(head, head)


def select_layers(model: Any, patterns: Sequence[str] | None = None, exclude: Sequence[str] = (),
                  candidates: Sequence[str] | None = None) -> list[str]:
    """Cross-attention layers whose name matches any of ``patterns`` (fnmatch; None: all) and none of ``exclude``.

    ``candidates``: the layers to choose from (default: the model's cross-attention layers; the
    joint-attention tracer passes its joint layers). Raises :class:`ConfigError` when there is
    no candidate at all, or when a pattern matches nothing (the message lists the candidates,
    so a typo is easy to fix).
    """
    candidates = list(cross_attention_layers(model) if candidates is None else candidates)
    if not candidates:
        unet = resolve_unet(model)
        raise ConfigError(f"{type(unet).__name__} has no cross-attention layers (no text conditioning), "
                          "so there are no word-to-pixel attention maps to read.")
    chosen = candidates if patterns is None else []
    for pattern in patterns or ():
        matched = [name for name in candidates if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise ConfigError(f"Layer pattern {pattern!r} matches no cross-attention layer. "
                              f"Cross-attention layers: {', '.join(candidates)}")
        chosen += [name for name in matched if name not in chosen]
    chosen = [name for name in chosen if not any(fnmatch.fnmatchcase(name, p) for p in exclude)]
    if not chosen:
        raise ConfigError(f"Layer patterns {list(patterns or [])} minus exclusions {list(exclude)} leave no layer. "
                          f"Cross-attention layers: {', '.join(candidates)}")
    return [name for name in candidates if name in chosen]  # model order
