"""``method=emerdiff``: image-resolution segmentation from a diffusion model (Namekata et al., ICLR 2024).

For each given image (an image-set record):

1. DDPM edit-friendly inversion (:mod:`harness.inversion`), so the image can be regenerated
   exactly from any step with the stored noises.
2. During the inversion's UNet call at t_f, the query vectors (``to_q`` output) of a
   low-resolution cross-attention layer are read and k-means'd into K clusters: the
   low-resolution masks M_1..M_K.
3. 2K modulated regenerations from t_m: at step t_m only, c * M_i is added to another
   cross-attention layer's output (c = +lambda, -lambda; variant "values" adds it before the
   output projection). With attention injection, every attention layer of the modulated passes
   uses the Q and K of the unmodulated pass (recorded during the inversion, which makes exactly
   the unmodulated UNet calls), so only the values carry the change. All 2K trajectories run as
   one batch (chunks of ``chunk_size``); ``one_at_a_time`` is the reference loop.
4. d_i = per-pixel L2 norm over RGB of I(-lambda) - I(+lambda); Gaussian filter; label = argmax_i d_i.

Layers are found from the tensors: the processors record every attention layer's sequence
length during the inversion, which gives its spatial grid; "auto" picks the up block whose
cross-attention grid is closest to latent/4 (16x16 for SD at 512), then the first (features)
and third (modulation) cross-attention layer in it.

Sample arrays: ``labels`` (int32 HxW, segment id per pixel, ids are per image),
``lowres_clusters`` (int32 h x w, the k-means masks), ``difference_maps`` (float16 K x H x W,
filtered; when ``save_difference_maps``), ``lowres_features`` (float16 (h*w) x D, the clustered
queries; when ``save_features``). ``image`` is the input image as segmented (resized).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.attention.explicit import finish, merge_heads, project
from harness.attention.swap import attention_modules, layer_name, swap_processors
from harness.clustering import kmeans_labels
from harness.data.image_sets import load_record_image
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.inversion import decode_latents, invert, log_once, regenerate, snap_timestep, timestep_grid
from harness.methods.base import GenerationSettings, Method
from harness.schemas.emerdiff import DIFFERENCE_NORMALIZATIONS, MODULATION_TARGETS, EmerDiffConfig
from harness.store.samples import Sample, file_sha256

log = logging.getLogger(__name__)

#: smoke mode: fewer inversion steps and clusters, same code path
SMOKE_INVERSION_STEPS = 4
SMOKE_CLUSTERS = 4


# ---------------------------------------------------------------------------------------------
# Attention processors: record, inject, modulate
# ---------------------------------------------------------------------------------------------
@dataclass
class _Modulation:
    layer: str
    step: int
    row_offsets: torch.Tensor  #: (rows, S): c * M for each batch row (CFG halves repeated)
    target: str  #: "output" | "values"


@dataclass
class _State:
    """What the processors share: where in the trajectory we are and what to do there."""

    phase: str = "invert"  #: "invert" (unmodulated pass: record) | "modulate"
    step: int = -1
    feature_step: int = -1
    record_from_step: int | None = None  #: record Q/K for injection at steps >= this (None: off)
    inject: bool = False
    modulation: _Modulation | None = None
    seq_lengths: dict[str, int] = field(default_factory=dict)  #: in first-call order
    cross_attention: dict[str, bool] = field(default_factory=dict)
    queries: dict[str, torch.Tensor] = field(default_factory=dict)  #: (S, D) at the feature step
    reference: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    cond_rows: int = 1  #: rows per call that belong to the conditional branch (the last ones)

    def on_step(self, step: int, timestep: int) -> None:
        self.step = step


class EmerDiffAttnProcessor:
    """Scaled-dot-product attention (as diffusers' AttnProcessor2_0) with EmerDiff's hooks.

    Hand-written because no diffusers processor can replay recorded Q/K or add an offset
    between the attention and its output projection.
    """

    def __init__(self, name: str, state: _State) -> None:
        self.name = name
        self.state = state

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        state = self.state
        projected = project(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        query, key, value = projected.query, projected.key, projected.value
        attention_mask, batch = projected.attention_mask, projected.batch
        is_cross = encoder_hidden_states is not None
        if self.name not in state.seq_lengths:
            state.seq_lengths[self.name] = query.shape[2]
            state.cross_attention[self.name] = is_cross
        if state.phase == "invert" and state.step == state.feature_step and is_cross:
            # The conditional rows' queries (with CFG the batch is [uncond, cond]).
            state.queries[self.name] = projected.flat_query[-state.cond_rows:].detach().float().mean(0).cpu()

        slot = (self.name, state.step)
        injected = state.phase == "modulate" and state.inject and slot in state.reference
        if state.phase == "invert" and state.record_from_step is not None and state.step >= state.record_from_step:
            state.reference[slot] = (query.detach(), key.detach())
        if injected and attention_mask is None:
            out = _injected_attention(*state.reference[slot], value)
        else:
            if injected:
                query, key = (_expand_rows(t, batch) for t in state.reference[slot])
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                 is_causal=False)
        out = merge_heads(out).to(query.dtype)
        modulation = state.modulation
        active = (state.phase == "modulate" and modulation is not None and modulation.layer == self.name
                  and modulation.step == state.step)
        offset = modulation.row_offsets[:, :, None] if active else None
        if active and modulation.target == "values":
            return finish(attn, projected, out + offset.to(out.dtype))
        return finish(attn, projected, out, offset_after_output=offset)


def _injected_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T/sqrt d) V with the recorded Q, K (R rows) and the batch's values (B rows).

    The attention maps are the same for every trajectory of the batch, so they are computed once
    for the R recorded rows (1, or 2 with CFG) and applied to all B values, instead of B times.
    """
    recorded = query.shape[0]
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) / math.sqrt(query.shape[-1])
    probabilities = scores.softmax(dim=-1).to(value.dtype)  # (R, H, S, S_k)
    batch, heads, keys, head_dim = value.shape
    per_row = batch // recorded  # rows are [uncond x B', cond x B'] (or [cond x B])
    # Fold the trajectories into the last dimension: one (S x S_k) @ (S_k x B'd) product per
    # (row, head) instead of a broadcast matmul that would copy the maps B' times.
    folded = value.reshape(recorded, per_row, heads, keys, head_dim).permute(0, 2, 3, 1, 4)
    out = torch.matmul(probabilities, folded.reshape(recorded, heads, keys, per_row * head_dim))
    out = out.reshape(recorded, heads, query.shape[2], per_row, head_dim).permute(0, 3, 1, 2, 4)
    return out.reshape(batch, heads, query.shape[2], head_dim)


def _expand_rows(recorded: torch.Tensor, rows: int) -> torch.Tensor:
    """Recorded rows ([cond] or [uncond, cond]) -> the rows of a batch of trajectories."""
    if recorded.shape[0] == rows:
        return recorded
    if recorded.shape[0] == 1:
        return recorded.expand(rows, -1, -1, -1)
    return recorded.repeat_interleave(rows // recorded.shape[0], dim=0)


# ---------------------------------------------------------------------------------------------
# Layer selection from the recorded tensor sizes
# ---------------------------------------------------------------------------------------------
def layer_grid(sequence: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """Spatial grid (h, w) of an attention layer with ``sequence`` positions on a latent of ``latent_hw``."""
    height, width = latent_hw
    factor = math.sqrt(height * width / sequence)
    grid = (max(1, round(height / factor)), max(1, round(width / factor)))
    if grid[0] * grid[1] != sequence:
        raise ConfigError(f"cannot infer the grid of an attention layer with {sequence} positions on a {height}x{width} latent")
    return grid


def resolve_layer(requested: str, index: int, state: _State, latent_hw: tuple[int, int], divisor: int,
                  what: str, notes: list[str]) -> str:
    """A module name: ``requested`` itself (checked) or, for "auto", the ``index``-th up-block
    cross-attention layer at the resolution closest to latent/``divisor``."""
    cross = [name for name in state.seq_lengths if state.cross_attention[name]]
    requested = layer_name(requested)  # tolerate the ".processor" suffix of attn_processors keys
    if requested != "auto":
        if requested not in state.seq_lengths or not state.cross_attention[requested]:
            raise ConfigError(f"method.{what}={requested!r} is not a cross-attention layer of this UNet. "
                              f"Candidates: {', '.join(cross) or '(none)'}")
        return requested
    up = [name for name in cross if name.startswith("up_blocks.")] or cross
    if not up:
        raise ConfigError("this UNet has no cross-attention layers; EmerDiff needs them.")
    target = latent_hw[0] / divisor
    heights = sorted({layer_grid(state.seq_lengths[name], latent_hw)[0] for name in up})
    # Closest in log scale; on a tie the lower resolution (the more semantic one).
    best = min(heights, key=lambda h: (abs(math.log2(h / target)), h))
    block = [name for name in up if layer_grid(state.seq_lengths[name], latent_hw)[0] == best]
    if index >= len(block):
        note = (f"method.{what}_index={index} but the {best}x{best}-grid up block has {len(block)} cross-attention "
                f"layer(s); using the last, {block[-1]}")
        log_once(log, note)
        notes.append(note)
        index = len(block) - 1
    return block[index]


# ---------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------
class EmerDiff(Method):
    """EmerDiff segmentation of the images of an image set (see the module docstring)."""

    name = "emerdiff"
    version = "1"

    def __init__(self, method_cfg: Any, model: Any, generation: GenerationSettings) -> None:
        super().__init__(method_cfg, model, generation)
        self.options = _as_config(method_cfg)
        if self.options.modulation_target not in MODULATION_TARGETS:
            raise ConfigError(f"method.modulation_target must be one of {MODULATION_TARGETS}, got {self.options.modulation_target!r}")
        if self.options.difference_normalization not in DIFFERENCE_NORMALIZATIONS:
            raise ConfigError(f"method.difference_normalization must be one of {DIFFERENCE_NORMALIZATIONS}, "
                              f"got {self.options.difference_normalization!r}")
        if self.options.clusters < 1:
            raise ConfigError(f"method.clusters must be >= 1, got {self.options.clusters}")
        if self.options.chunk_size < 1:
            raise ConfigError(f"method.chunk_size must be >= 1, got {self.options.chunk_size}")
        self.counters = {"unet_invocations": 0, "unet_rows": 0}

    def reduce_for_smoke(self) -> None:
        """Smoke mode: a 4-step grid and at most 4 clusters."""
        self.options.inversion_steps = min(self.options.inversion_steps, SMOKE_INVERSION_STEPS)
        self.options.clusters = min(self.options.clusters, SMOKE_CLUSTERS)

    def params(self) -> dict[str, Any]:
        params = asdict(self.options)
        params.pop("name", None)
        # How the trajectories are batched does not change the result.
        params.pop("chunk_size", None)
        params.pop("one_at_a_time", None)
        return params

    def extra_spec(self, record: PromptRecord) -> dict[str, Any]:
        meta = record.meta
        if "image_path" in meta and Path(meta["image_path"]).is_file():
            return {"image_sha256": file_sha256(meta["image_path"])}
        return {"image_source": {k: meta.get(k) for k in ("image_path", "renderer", "renderer_args")}}

    def image_size(self) -> tuple[int, int]:
        """(H, W) the images are segmented at: a multiple of what the VAE and UNet need."""
        size = self.options.image_size
        height, width = (size, size) if size else (self.generation.height, self.generation.width)
        multiple = self._size_multiple()
        return (max(multiple, round(height / multiple) * multiple), max(multiple, round(width / multiple) * multiple))

    def _size_multiple(self) -> int:
        pipeline = self.model.pipeline
        vae_factor = 2 ** (len(pipeline.vae.config.block_out_channels) - 1)
        return vae_factor * 2 ** (len(pipeline.unet.config.block_out_channels) - 1)

    def run_batch(self, records: list[PromptRecord], seeds: list[int]) -> list[Sample]:
        return [self.segment(record, generator, seed) for record, generator, seed
                in zip(records, self.generators(seeds), seeds, strict=True)]

    @torch.no_grad()
    def segment(self, record: PromptRecord, generator: torch.Generator, seed: int) -> Sample:
        """Segment one record's image (one sample)."""
        opts = self.options
        pipeline = self.model.pipeline
        started = time.perf_counter()
        image, notes = load_record_image(record)
        image = self._prepare_image(image, notes)
        grid = timestep_grid(pipeline, opts.inversion_steps)
        feature_step, feature_t, note_f = snap_timestep(opts.feature_timestep, grid, "method.feature_timestep")
        modulation_step, modulation_t, note_m = snap_timestep(opts.modulation_timestep, grid, "method.modulation_timestep")
        notes += [n for n in (note_f, note_m) if n]

        state = _State(feature_step=feature_step, record_from_step=modulation_step if opts.attention_injection else None,
                       cond_rows=1)
        names = list(attention_modules(pipeline.unet))
        processors = {name: EmerDiffAttnProcessor(name, state) for name in names}
        counts = {"invocations": 0, "rows": 0}
        cfg_factor = 2 if opts.guidance_scale > 1.0 else 1

        def counting(batch: int):
            def hook(step: int, timestep: int) -> None:
                state.on_step(step, timestep)
                counts["invocations"] += 1
                counts["rows"] += batch * cfg_factor
            return hook

        with swap_processors(pipeline.unet, processors):
            inversion = invert(pipeline, image, prompt=opts.prompt, num_inference_steps=opts.inversion_steps,
                               guidance_scale=opts.guidance_scale, generator=generator, on_step=counting(1))
            latent_hw = tuple(inversion.latents.shape[-2:])
            feature_layer = resolve_layer(opts.feature_layer, opts.feature_layer_index, state, latent_hw,
                                          opts.low_resolution_divisor, "feature_layer", notes)
            modulation_layer = resolve_layer(opts.modulation_layer, opts.modulation_layer_index, state, latent_hw,
                                             opts.low_resolution_divisor, "modulation_layer", notes)
            features = state.queries[feature_layer]
            feature_grid = layer_grid(features.shape[0], latent_hw)
            check_cluster_count(opts.clusters, features.shape[0], feature_layer)
            clusters = kmeans_labels(features.numpy(), opts.clusters, seed, opts.kmeans_restarts,
                                     what=f"emerdiff k-means of {feature_layer}")
            modulation_grid = layer_grid(state.seq_lengths[modulation_layer], latent_hw)
            masks = lowres_masks(clusters.reshape(feature_grid), opts.clusters, modulation_grid)
            state.phase = "modulate"
            state.inject = opts.attention_injection
            images = self._modulated_images(pipeline, inversion, state, masks, modulation_layer, modulation_step, counting)
        difference = difference_maps(images, opts.clusters, opts.gaussian_sigma)
        labels = np.argmax(normalize_differences(difference, masks, opts.difference_normalization), axis=0).astype(np.int32)

        arrays: dict[str, np.ndarray] = {"labels": labels, "lowres_clusters": clusters.reshape(feature_grid).astype(np.int32)}
        if opts.save_difference_maps:
            arrays["difference_maps"] = difference.astype(np.float16)
        if opts.save_features:
            arrays["lowres_features"] = features.numpy().astype(np.float16)
        meta = {
            "clusters": int(opts.clusters),
            "feature_layer": layer_name(feature_layer),
            "modulation_layer": layer_name(modulation_layer),
            "feature_timestep": feature_t,
            "modulation_timestep": modulation_t,
            "rerun_steps": int(opts.inversion_steps - modulation_step),
            "lowres_shape": list(feature_grid),
            "unet_calls": counts["rows"],
            "unet_invocations": counts["invocations"],
            "seconds": time.perf_counter() - started,
            "notes": notes,
        }
        self.counters["unet_invocations"] += counts["invocations"]
        self.counters["unet_rows"] += counts["rows"]
        return Sample(image=image, arrays=arrays, meta=meta)

    def save_figures(self, run_dir: str | Path, records: list[PromptRecord], samples: dict[str, Sample],
                     rows: Any = None) -> list[Path]:
        """Called by the runner (``figures=true``): see :func:`save_emerdiff_figures`."""
        return save_emerdiff_figures(run_dir, records, samples)

    def _modulated_images(self, pipeline: Any, inversion: Any, state: _State, masks: torch.Tensor,
                          modulation_layer: str, modulation_step: int, counting: Any) -> torch.Tensor:
        """Decoded images of the 2K trajectories, ordered (mask 0, +), (mask 0, -), (mask 1, +), ..."""
        opts = self.options
        strength = float(opts.modulation_strength)
        # Trajectory j: mask j // 2, sign + for even j, - for odd j.
        offsets = torch.repeat_interleave(masks, 2, dim=0)
        signs = torch.tensor([strength, -strength] * masks.shape[0])
        offsets = offsets * signs[:, None]
        chunk = 1 if opts.one_at_a_time else opts.chunk_size
        cfg_rows = 2 if opts.guidance_scale > 1.0 else 1
        device = pipeline.unet.device
        outputs = []
        for start in range(0, offsets.shape[0], chunk):
            rows = offsets[start:start + chunk]
            state.modulation = _Modulation(modulation_layer, modulation_step,
                                           rows.repeat(cfg_rows, 1).to(device), opts.modulation_target)
            latents = regenerate(pipeline, inversion, modulation_step, batch_size=rows.shape[0],
                                 on_step=counting(rows.shape[0]))
            outputs.append(decode_latents(pipeline, latents).cpu())
        state.modulation = None
        return torch.cat(outputs)

    def _prepare_image(self, image: np.ndarray, notes: list[str]) -> np.ndarray:
        height, width = self.image_size()
        if image.shape[:2] != (height, width):
            from PIL import Image

            note = f"image resized from {image.shape[1]}x{image.shape[0]} to {width}x{height} (W x H)"
            log_once(log, note)
            notes.append(note)
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))
        return image


def _as_config(method_cfg: Any) -> EmerDiffConfig:
    """A mutable copy of the method config as the schema dataclass."""
    from omegaconf import OmegaConf

    if method_cfg is None:
        return EmerDiffConfig()
    if OmegaConf.is_config(method_cfg):
        values = OmegaConf.to_container(method_cfg, resolve=True)
    elif isinstance(method_cfg, dict):
        values = dict(method_cfg)
    else:
        values = asdict(method_cfg)
    known = set(EmerDiffConfig.__dataclass_fields__)
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown emerdiff options {sorted(unknown)}; known: {sorted(known)}")
    return EmerDiffConfig(**values)


def check_cluster_count(clusters: int, positions: int, layer: str = "") -> None:
    """A ConfigError when K exceeds the low-resolution positions of the feature layer."""
    if clusters > positions:
        raise ConfigError(f"method.clusters={clusters} is larger than the {positions} low-resolution positions of "
                          f"{layer or 'the feature layer'}; use at most {positions} clusters.")


def lowres_masks(clusters: np.ndarray, count: int, grid: tuple[int, int]) -> torch.Tensor:
    """Binary masks (count, h*w) on ``grid`` from a cluster map (nearest resize when the grids differ)."""
    one_hot = torch.from_numpy(np.eye(count, dtype=np.float32)[clusters]).permute(2, 0, 1)[None]
    if tuple(clusters.shape) != tuple(grid):
        one_hot = F.interpolate(one_hot, size=grid, mode="nearest")
    return one_hot[0].reshape(count, -1)


def difference_maps(images: torch.Tensor, clusters: int, sigma: float) -> np.ndarray:
    """Per mask: ||I(+lambda) - I(-lambda)||_2 over RGB per pixel, Gaussian-filtered (K, H, W)."""
    from scipy.ndimage import gaussian_filter

    plus, minus = images[0::2], images[1::2]
    maps = torch.linalg.vector_norm(minus - plus, dim=1).numpy().astype(np.float64)
    if sigma > 0:
        maps = np.stack([gaussian_filter(m, sigma=sigma) for m in maps])
    return maps


def normalize_differences(maps: np.ndarray, masks: torch.Tensor, how: str) -> np.ndarray:
    """The (K, H, W) difference maps made comparable across masks before the argmax (see
    ``DIFFERENCE_NORMALIZATIONS``); ``masks``: the (K, positions) binary low-resolution masks."""
    if how == "none":
        return maps
    if how == "area":
        area = masks.sum(dim=1).numpy().astype(np.float64)
        return maps / np.maximum(area, 1.0)[:, None, None]
    if how == "max":
        peak = maps.reshape(maps.shape[0], -1).max(axis=1)
        return maps / np.maximum(peak, 1e-12)[:, None, None]
    raise ConfigError(f"method.difference_normalization must be one of {DIFFERENCE_NORMALIZATIONS}, got {how!r}")


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def save_emerdiff_figures(run_dir: str | Path, records: list[PromptRecord], samples: dict[str, Sample] | list[Sample]) -> list[Path]:
    """Per image a PNG: input, low-resolution clusters, final segmentation, one difference map.

    ``samples`` is keyed by record id (as the runner keeps them) or aligned with ``records``.
    The difference map shown is that of the largest low-resolution cluster. Returns the paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(run_dir) / "figures" / "emerdiff"
    folder.mkdir(parents=True, exist_ok=True)
    by_id = samples if isinstance(samples, Mapping) else {r.id: s for r, s in zip(records, samples, strict=True)}
    paths = []
    for record in records:
        sample = by_id.get(record.id)
        if sample is None or "labels" not in sample.arrays:
            continue
        clusters = sample.arrays.get("lowres_clusters")
        figure, axes = plt.subplots(1, 4, figsize=(12, 3.2))
        # One colour per segment id in both panels (segment i is low-resolution mask i).
        ids = {"cmap": "tab20", "interpolation": "nearest", "vmin": 0,
               "vmax": max(19, int(sample.meta.get("clusters", 20)) - 1)}
        panels = [("image", sample.image, {}),
                  ("low-res clusters", clusters, ids),
                  ("segmentation", sample.arrays["labels"], ids)]
        if "difference_maps" in sample.arrays and clusters is not None:
            largest = int(np.bincount(clusters.ravel()).argmax())
            panels.append((f"difference map (mask {largest})",
                           sample.arrays["difference_maps"][largest].astype(np.float32), {"cmap": "magma"}))
        else:
            panels.append(("difference map (not stored)", None, {}))
        for axis, (title, data, style) in zip(axes, panels):
            if data is not None:
                axis.imshow(data, **style)
            axis.set_title(title, fontsize=9)
            axis.axis("off")
        figure.suptitle(record.id, fontsize=10)
        figure.tight_layout()
        path = folder / f"{record.id}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths
