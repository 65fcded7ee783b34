"""Benchmark: joint-attention word maps on multi-modal diffusion transformers (SD3 / Flux).

Adds to the report:
- ``mmdit_map_overhead`` (target <= 1.10): median traced / median plain generation time on the
  toy MMDiT (:mod:`harness.toy.mmdit`; its trained weights from ``weights/toy_mmdit`` when
  present, else random transformer weights, said in ``mmdit_toy_weights``), same pipeline, one
  process, one thread, A/B in ABBA order: a CFG batch of one 32x32 image, ``TOY_STEPS`` steps, every
  joint layer traced and the word maps finished; ``..._cpu_time``: the same in process CPU time.
- ``mmdit_map_overhead_sd3_shape`` (target <= 1.10): one transformer call at the SD3-medium
  transformer's width (24 heads x 64, caption projection 1536, joint_attention_dim 4096, pooled
  2048) with random weights, at 512x512 (1,024 image tokens, 77 + 256 text tokens, CFG batch of
  two rows), traced (every layer, word maps finished) vs plain. The full 24 blocks do not fit a
  few-minute CPU measurement, so ``SD3_LAYERS`` blocks are built (said in
  ``mmdit_sd3_shape_layers``); every block is traced, so the ratio is per block.
- ``mmdit_peak_memory_ratio_4096`` (target < 1.5): peak memory torch allocates during one call of a
  narrowed Flux-dev stand-in's transformer at 4,096 image tokens (1024x1024 in Flux's layout: a
  128x128 latent packed 2x2) and 512 text tokens, traced vs plain, from the profiler's allocation
  events (weights, allocated before, not counted); ``mmdit_peak_plain_mb_4096`` /
  ``mmdit_peak_traced_mb_4096`` beside it.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from harness import REPO_ROOT
from harness.bench import torch_threads

TOY_PROMPT = "a red circle above a blue square"
TOY_WORDS = ["circle", "square"]
TOY_STEPS = 4
TOY_REPEATS = 5
SD3_LAYERS = 2
SD3_REPEATS = 2
SD3_SIZE = 512
FLUX_TOKENS_SIDE = 64  # 64 x 64 packed tokens = 4,096 (a 1024x1024 image)


def _toy_pipeline() -> tuple[Any, str]:
    from harness.toy.mmdit import build_toy_mmdit

    trained = REPO_ROOT / "weights" / "toy_mmdit"
    if (trained / "model_index.json").is_file():
        from diffusers import StableDiffusion3Pipeline

        pipeline = StableDiffusion3Pipeline.from_pretrained(trained, text_encoder_3=None, tokenizer_3=None)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline, "trained"
    return build_toy_mmdit(REPO_ROOT / "weights" / "toy"), "random"


def _toy_generate(pipeline: Any, traced: bool) -> None:
    from harness.methods.daam import generate_with_maps, word_heat_maps, word_mapper

    generator = torch.Generator("cpu").manual_seed(0)
    if traced:  # what method=daam does per batch, word maps included
        _, tracer = generate_with_maps(pipeline, [TOY_PROMPT], [generator], steps=TOY_STEPS, guidance_scale=5.0,
                                       height=32, width=32)
        word_heat_maps(tracer.token_maps()[0], word_mapper(pipeline, [TOY_PROMPT]), TOY_PROMPT, TOY_WORDS)
    else:
        pipeline(TOY_PROMPT, num_inference_steps=TOY_STEPS, guidance_scale=5.0, height=32, width=32,
                 generator=generator, output_type="np")


def _abba(call: Any, repeats: int) -> dict[str, float]:
    call(False)  # warm-up of both variants
    call(True)
    times: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for index in range(2 * repeats):
        traced = bool(index % 2) ^ bool((index // 2) % 2)  # ABBA order cancels linear drift
        started, started_cpu = time.perf_counter(), time.process_time()
        call(traced)
        times[traced].append(time.perf_counter() - started)
        cpu[traced].append(time.process_time() - started_cpu)
    return {"ratio": statistics.median(times[True]) / statistics.median(times[False]),
            "cpu_ratio": statistics.median(cpu[True]) / statistics.median(cpu[False]),
            "plain": statistics.median(times[False]), "traced": statistics.median(times[True])}


def measure_toy(repeats: int = TOY_REPEATS) -> dict[str, Any]:
    """``mmdit_map_overhead`` on the toy MMDiT (see module docstring)."""
    pipeline, weights = _toy_pipeline()
    with torch_threads(1), torch.no_grad():
        result = _abba(lambda traced: _toy_generate(pipeline, traced), repeats)
    return {"mmdit_map_overhead": result["ratio"], "mmdit_map_overhead_cpu_time": result["cpu_ratio"],
            "mmdit_toy_plain_seconds": result["plain"], "mmdit_toy_weights": weights}


def _sd3_call(transformer: Any, inputs: dict[str, torch.Tensor], traced: bool, columns: list[int]) -> None:
    from harness.attention import BatchLayout
    from harness.attention.joint import JointAttentionTracer

    if not traced:
        transformer(**inputs)
        return
    with JointAttentionTracer(transformer, columns=columns, layout=BatchLayout(("uncond", "cond"))) as tracer:
        transformer(**inputs)
    maps = tracer.token_maps()[0]
    maps[[3, 14]].mean(dim=0)  # one word's map (CLIP position 3, T5 position 77 + 2), as word_heat_maps forms it


def measure_sd3_shape(layers: int = SD3_LAYERS, repeats: int = SD3_REPEATS, size: int = SD3_SIZE,
                      threads: int = 1) -> dict[str, Any]:
    """``mmdit_map_overhead_sd3_shape`` (see module docstring)."""
    from diffusers import SD3Transformer2DModel

    from harness.models.mmdit_standins import SD3_MEDIUM_TRANSFORMER

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(**{**SD3_MEDIUM_TRANSFORMER, "num_layers": layers}).eval()
    latent = size // 8
    generator = torch.Generator().manual_seed(0)
    inputs = {"hidden_states": torch.randn(2, 16, latent, latent, generator=generator),
              "encoder_hidden_states": torch.randn(2, 77 + 256, 4096, generator=generator),
              "pooled_projections": torch.randn(2, 2048, generator=generator),
              "timestep": torch.tensor([500.0, 500.0]), "return_dict": False}
    columns = list(range(12)) + list(range(77, 77 + 11))  # a 10-word prompt's CLIP and T5 positions
    with torch_threads(threads), torch.no_grad():
        result = _abba(lambda traced: _sd3_call(transformer, inputs, traced, columns), repeats)
    return {"mmdit_map_overhead_sd3_shape": result["ratio"], "mmdit_map_overhead_sd3_shape_cpu_time": result["cpu_ratio"],
            "mmdit_sd3_shape_plain_seconds": result["plain"], "mmdit_sd3_shape_traced_seconds": result["traced"],
            "mmdit_sd3_shape_layers": layers, "mmdit_sd3_shape_image_tokens": (latent // 2) ** 2}


def _peak_allocated(call: Any) -> int:
    """Peak of the running sum of torch's CPU allocations and frees during ``call()`` (bytes)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    running = peak = 0
    for event in events:
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return peak


def measure_flux_memory(side: int = FLUX_TOKENS_SIDE, threads: int = 1) -> dict[str, Any]:
    """``mmdit_peak_memory_ratio_4096`` (see module docstring)."""
    from harness.attention import BatchLayout
    from harness.attention.joint import JointAttentionTracer
    from harness.models.mmdit_standins import build_mmdit_standin

    transformer = build_mmdit_standin("flux_dev", narrow=True).transformer
    generator = torch.Generator().manual_seed(0)
    text = 512
    ids = torch.zeros(side, side, 3)
    ids[..., 1] += torch.arange(side)[:, None]
    ids[..., 2] += torch.arange(side)[None, :]
    inputs = {"hidden_states": torch.randn(1, side * side, transformer.config.in_channels, generator=generator),
              "encoder_hidden_states": torch.randn(1, text, transformer.config.joint_attention_dim, generator=generator),
              "pooled_projections": torch.randn(1, transformer.config.pooled_projection_dim, generator=generator),
              "timestep": torch.tensor([0.5]), "guidance": torch.tensor([3.5]), "img_ids": ids.reshape(-1, 3),
              "txt_ids": torch.zeros(text, 3), "return_dict": False}
    columns = list(range(11))

    def traced() -> None:
        with JointAttentionTracer(transformer, columns=columns, layout=BatchLayout(("cond",))) as tracer:
            transformer(**inputs)
        tracer.token_maps()

    with torch_threads(threads), torch.no_grad():
        transformer(**inputs)  # warm-up
        plain_peak = _peak_allocated(lambda: transformer(**inputs))
        traced_peak = _peak_allocated(traced)
    return {"mmdit_peak_memory_ratio_4096": traced_peak / plain_peak, "mmdit_peak_plain_mb_4096": plain_peak / 2**20,
            "mmdit_peak_traced_mb_4096": traced_peak / 2**20, "mmdit_peak_image_tokens": side * side}


def run(report: dict[str, Any]) -> None:
    """Add the MMDiT figures to ``report`` (called by ``python -m harness.bench``)."""
    report.update(measure_toy())
    report.update(measure_flux_memory())
    report.update(measure_sd3_shape())


if __name__ == "__main__":  # pragma: no cover
    result: dict[str, Any] = {}
    run(result)
    for key, value in result.items():
        print(f"{key}: {value}")
