"""Paper-scale figures: memory growth with the number of samples, the harness's overhead over a
bare diffusers loop, and the speedup of two Ray workers over one.

``rss_growth_ratio``: (peak RSS of ``harness run`` on 4N samples - peak RSS on N samples) / raw
bytes of the 3N extra images (H*W*3 each), tiny_random at 128x128, N = 250, 1 denoising step,
batch 8, metrics mean_intensity and seconds_per_image, each run in its own fresh process with
a fresh store (peak RSS: ``VmHWM`` of that process, see :func:`peak_rss_bytes`). About 1 when every sample stays in
memory; 0 when memory does not depend on the number of samples. tiny_random's architecture is
narrowed for this figure (RSS_ARCHITECTURE: UNet channels 8/16, VAE channels 8/16/16, so the
latent is 32x32): with the default VAE a 128x128 image costs a self-attention over 64x64
tokens, and 1,250 images would take hours on a shared 2-core machine. What a run holds per
sample does not depend on the network's width.

``harness_overhead_ratio``: wall time of ``run_experiment`` generating M = 64 images into a
fresh store (tiny_random 64x64, batch 8, OVERHEAD_STEPS = 4 steps; model build, PNG writes, scoring
with the default metrics and the rows included) / wall time of a bare diffusers loop over the
same pipeline, prompts, per-image generators and batches (model build and conversion to uint8
included). The two alternate in one process, REPEATS = 2 times each, after one warm-up of each;
medians. One torch thread.

``shard_speedup_2_workers``: wall time of ``run_experiment`` with ``executor=ray
executor.num_workers=1`` / with ``num_workers=2`` (each worker one torch thread, one CPU),
generating SPEEDUP_IMAGES = 32 images (tiny_random 64x64, batch 4, SPEEDUP_STEPS = 4 steps) into a fresh
store and scoring them in the driver. A local Ray instance is started once with 2 CPUs and
warmed up (worker processes imported) before timing; the two alternate, medians.

``store_*_bytes_per_sample``: what one DAAM sample costs on disk at SD 2's sizes: ``harness run
method=daam`` on the SD 2-base stand-in (harness.models.standins; the real latent grid, 64x64
at 512x512) over ARRAYS_IMAGES smoke prompts, 1 step, heat maps of every word (method.words_source=all); bytes of the
store's image files and arrays files per sample with ``store.arrays=keep``, and what is left
after a second store is filled with ``store.arrays=drop`` (rows equal, asserted). The
30,000-image projection is 30,000 x these bytes.

``pag_coco_shaped_peak_rss_bytes`` (about 4 minutes here):
peak RSS of ``experiment=pag_coco`` with its smoke overrides (tiny_random narrowed as above,
CFG+PAG, FID on pixels against rendered reference images) on PAG_COCO_IMAGES = 2,000 prompts at
128x128, 1 step, in a fresh process; the FID is reported too, so two code versions can be
checked to score the same.

The machines are shared: the log says what else was running is not controlled; the figures
are ratios measured in one process where possible.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO_ROOT

RSS_N = 250
RSS_SIZE = 128
RSS_ARCHITECTURE = "{unet_channels:[8,16],vae_channels:[8,16,16]}"
OVERHEAD_IMAGES = 64
OVERHEAD_SIZE = 64
OVERHEAD_BATCH = 8
OVERHEAD_STEPS = 4
SPEEDUP_IMAGES = 32
SPEEDUP_STEPS = 4
REPEATS = 2
ARRAYS_IMAGES = 8
PAG_COCO_IMAGES = 2000
ARRAYS_SIZE = 512


def compose(overrides: list[str]):
    """The run config of ``overrides`` (:func:`harness.compose.compose`, as every entry point)."""
    from harness.compose import compose as compose_config

    return compose_config(overrides)


def _quiet() -> None:
    import logging

    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.getLogger("harness").setLevel(logging.WARNING)


# ---------------------------------------------------------------------------------------------
# rss_growth_ratio


def _rss_child(size: int, images: int, out: str, experiment: str | None = None) -> None:
    """In a fresh process: one run of ``images`` samples; writes its peak RSS (bytes).

    ``experiment=pag_coco``: that experiment with its smoke overrides (the tiny stand-in, FID on
    pixels against rendered reference images) instead of the plain generation run."""
    import torch

    from harness.run import run_experiment

    _quiet()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as folder:
        if experiment:
            base = [f"experiment={experiment}", *compose([f"experiment={experiment}"]).smoke_overrides]
        else:
            base = ["model=tiny_random", "dataset=smoke_prompts", "generation.batch_size=8"]
        cfg = compose([*base, f"++model.architecture={RSS_ARCHITECTURE}", f"dataset.size={images}",
                       "generation.steps=1", f"generation.height={size}", f"generation.width={size}",
                       "figures=false", f"store.root={folder}/store"])
        started = time.perf_counter()
        outcome = run_experiment(cfg, Path(folder) / "run", cwd=REPO_ROOT)
        seconds = time.perf_counter() - started
    peak = peak_rss_bytes()
    fid = outcome.rows.query("level == 'aggregate' and metric == 'fid'")["value"].tolist() if experiment else []
    Path(out).write_text(json.dumps({"peak_rss": peak, "generated": outcome.generated, "seconds": seconds,
                                     "fid": fid}))


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes: ``VmHWM`` of ``/proc/self/status`` on Linux.

    Not ``ru_maxrss``: Linux carries that high-water mark over fork and exec, so a fresh child
    of a large parent (``make bench`` after the full-size SD 1.5 figures, about 6 GB) reports
    the parent's peak instead of its own. ``VmHWM`` belongs to the address space, which exec
    replaces. Elsewhere (no ``/proc``) ``ru_maxrss`` is the fallback (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def pag_coco_peak_rss(images: int = PAG_COCO_IMAGES, size: int = RSS_SIZE) -> dict[str, float]:
    """Peak RSS (and FID) of a ``pag_coco``-shaped run of ``images`` prompts, in a fresh process."""
    result = _child(["--rss-child", str(images), "--size", str(size), "--experiment", "pag_coco"])
    assert result["generated"] == images
    return {"pag_coco_shaped_peak_rss_bytes": result["peak_rss"], "pag_coco_shaped_images": images,
            "pag_coco_shaped_size": size, "pag_coco_shaped_seconds": result["seconds"],
            "pag_coco_shaped_fid": result["fid"][0]}


def _child(args: list[str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = handle.name
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH")] if p),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    subprocess.run([sys.executable, "-m", "harness.bench.scale", *args, "--out", out], check=True, env=env)
    try:
        return json.loads(Path(out).read_text())
    finally:
        os.unlink(out)


def rss_growth_ratio(n: int = RSS_N, size: int = RSS_SIZE) -> dict[str, float]:
    small = _child(["--rss-child", str(n), "--size", str(size)])
    large = _child(["--rss-child", str(4 * n), "--size", str(size)])
    assert small["generated"] == n and large["generated"] == 4 * n
    extra_bytes = 3 * n * size * size * 3
    return {"rss_growth_ratio": (large["peak_rss"] - small["peak_rss"]) / extra_bytes,
            "rss_peak_bytes_n": small["peak_rss"], "rss_peak_bytes_4n": large["peak_rss"],
            "rss_n": n, "rss_image_size": size, "rss_seconds_4n": large["seconds"]}


# ---------------------------------------------------------------------------------------------
# harness_overhead_ratio


def _bare_loop(images: int, size: int, batch: int, steps: int) -> float:
    import numpy as np
    import torch

    from harness.methods.base import generation_seed, to_uint8
    from harness.models.loader import load_model
    from harness.run import build_prompt_set

    cfg = compose(["model=tiny_random", "dataset=smoke_prompts", f"dataset.size={images}"])
    records = build_prompt_set(cfg).records
    started = time.perf_counter()
    pipeline = load_model(cfg.model).pipeline
    kept = []
    with torch.no_grad():
        for start in range(0, images, batch):
            chunk = records[start:start + batch]
            generators = [torch.Generator().manual_seed(generation_seed(0, r.seed)) for r in chunk]
            output = pipeline(prompt=[r.prompt for r in chunk], negative_prompt=None,
                              num_inference_steps=steps, guidance_scale=7.5, height=size, width=size,
                              generator=generators, output_type="np")
            kept.extend(to_uint8(np.asarray(output.images)))
    return time.perf_counter() - started


def _harness_run(images: int, size: int, batch: int, steps: int) -> float:
    from harness.run import run_experiment

    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as folder:
        cfg = compose(["model=tiny_random", "dataset=smoke_prompts", f"dataset.size={images}",
                       f"generation.steps={steps}", f"generation.batch_size={batch}", "generation.guidance_scale=7.5",
                       f"generation.height={size}", f"generation.width={size}", f"store.root={folder}/store"])
        started = time.perf_counter()
        outcome = run_experiment(cfg, Path(folder) / "run")
        seconds = time.perf_counter() - started
    assert outcome.generated == images
    return seconds


def harness_overhead_ratio(images: int = OVERHEAD_IMAGES, size: int = OVERHEAD_SIZE, batch: int = OVERHEAD_BATCH,
                           steps: int = OVERHEAD_STEPS, repeats: int = REPEATS) -> dict[str, float]:
    from harness.bench import torch_threads

    _quiet()
    harness_times, bare_times = [], []
    with torch_threads(1):
        _bare_loop(batch, size, batch, steps)  # warm-up of both
        _harness_run(batch, size, batch, steps)
        for _ in range(repeats):
            bare_times.append(_bare_loop(images, size, batch, steps))
            harness_times.append(_harness_run(images, size, batch, steps))
    harness_seconds, bare_seconds = statistics.median(harness_times), statistics.median(bare_times)
    return {"harness_overhead_ratio": harness_seconds / bare_seconds, "harness_run_seconds_64": harness_seconds,
            "bare_diffusers_seconds_64": bare_seconds,
            "harness_overhead_ratios_each": [h / b for h, b in zip(harness_times, bare_times, strict=True)],
            "harness_overhead_steps": steps}


# ---------------------------------------------------------------------------------------------
# shard_speedup_2_workers


def _ray_run(workers: int, images: int, steps: int) -> float:
    from harness.run import run_experiment

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as folder:
        cfg = compose(["model=tiny_random", "dataset=smoke_prompts", f"dataset.size={images}",
                       f"generation.steps={steps}", "generation.batch_size=4", "generation.height=64",
                       "generation.width=64", "executor=ray", f"executor.num_workers={workers}",
                       "executor.threads_per_worker=1", "figures=false", f"store.root={folder}/store"])
        started = time.perf_counter()
        outcome = run_experiment(cfg, Path(folder) / "run")
        seconds = time.perf_counter() - started
    assert outcome.generated == images
    return seconds


def shard_speedup_2_workers(images: int = SPEEDUP_IMAGES, steps: int = SPEEDUP_STEPS,
                            repeats: int = REPEATS) -> dict[str, float]:
    import ray

    from harness.bench import torch_threads

    _quiet()
    python_path = os.pathsep.join(p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH")] if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200_000_000,
             runtime_env={"env_vars": {"PYTHONPATH": python_path, "TQDM_DISABLE": "1"}})
    try:
        one, two = [], []
        with torch_threads(1):
            _ray_run(2, 4, 1)  # warm-up: both worker processes import the harness
            for _ in range(repeats):
                one.append(_ray_run(1, images, steps))
                two.append(_ray_run(2, images, steps))
    finally:
        ray.shutdown()
    return {"shard_speedup_2_workers": statistics.median(one) / statistics.median(two),
            "ray_1_worker_seconds": statistics.median(one), "ray_2_workers_seconds": statistics.median(two),
            "shard_speedup_images": images, "shard_speedup_steps": steps}


# ---------------------------------------------------------------------------------------------
# store_bytes_per_sample


def _store_bytes(store: Path) -> dict[str, int]:
    sizes = {"image": 0, "arrays": 0, "meta": 0}
    for path in store.glob("*/*/*"):
        kind = "image" if path.name.endswith(".png") else "arrays" if path.name.endswith(".npz") else "meta"
        sizes[kind] += path.stat().st_size
    return sizes


def store_bytes_per_sample(images: int = ARRAYS_IMAGES, size: int = ARRAYS_SIZE) -> dict[str, float]:
    from harness.models.standins import save_standin
    from harness.run import run_experiment

    _quiet()
    with tempfile.TemporaryDirectory(prefix="bench-arrays-") as folder:
        weights = save_standin("sd2_base", Path(folder) / "sd2_base")
        runs = {}
        for policy in ("keep", "drop"):
            cfg = compose(["method=daam", "method.words_source=all", "model=sd2_base", f"model.path={weights}",
                           "dataset=smoke_prompts", f"dataset.size={images}", "generation.steps=1",
                           "generation.batch_size=4", f"generation.height={size}", f"generation.width={size}",
                           "figures=false", f"store.root={folder}/{policy}", f"store.arrays={policy}"])
            outcome = run_experiment(cfg, Path(folder) / f"run-{policy}")
            assert outcome.generated == images
            runs[policy] = (outcome.rows, _store_bytes(Path(folder) / policy))
        keep_rows, keep = runs["keep"]
        drop_rows, drop = runs["drop"]
        quality = [(frame[frame["kind"] == "quality"]["value"].tolist()) for frame in (keep_rows, drop_rows)]
        assert quality[0] == quality[1], "dropping arrays changed a scored value"
        words = sum(len(meta) for meta in [json.loads(p.read_text())["meta"].get("words", [])
                                            for p in (Path(folder) / "keep").glob("*/*/meta.json")])
    return {"store_arrays_bytes_per_sample_keep": keep["arrays"] / images,
            "store_arrays_bytes_per_sample_drop": drop["arrays"] / images,
            "store_image_bytes_per_sample": keep["image"] / images,
            "store_meta_bytes_per_sample": keep["meta"] / images,
            "store_arrays_bytes_per_word_map": keep["arrays"] / max(words, 1),
            "store_bytes_images": images, "store_bytes_image_size": size}


def run(report: dict) -> None:
    report.update(rss_growth_ratio())
    report.update(harness_overhead_ratio())
    report.update(shard_speedup_2_workers())
    report.update(store_bytes_per_sample())
    report.update(pag_coco_peak_rss())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.scale")
    parser.add_argument("--rss-child", type=int, help="(internal) one run of this many samples; peak RSS to --out")
    parser.add_argument("--size", type=int, default=RSS_SIZE)
    parser.add_argument("--out")
    parser.add_argument("--experiment", help="(internal) with --rss-child: that experiment's smoke stand-in")
    parser.add_argument("--pag-coco-images", type=int, default=PAG_COCO_IMAGES)
    parser.add_argument("--figures", nargs="*", choices=["rss", "overhead", "speedup", "arrays", "pag_coco"],
                        help="measure only these (default: all), printing JSON")
    parser.add_argument("--rss-n", type=int, default=RSS_N)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    options = parser.parse_args(argv)
    if options.rss_child:
        _rss_child(options.size, options.rss_child, options.out, options.experiment)
        return 0
    report: dict = {}
    chosen = options.figures or ["rss", "overhead", "speedup", "arrays", "pag_coco"]
    if "rss" in chosen:
        report.update(rss_growth_ratio(options.rss_n, options.size))
    if "overhead" in chosen:
        report.update(harness_overhead_ratio(repeats=options.repeats))
    if "speedup" in chosen:
        report.update(shard_speedup_2_workers(repeats=options.repeats))
    if "arrays" in chosen:
        report.update(store_bytes_per_sample())
    if "pag_coco" in chosen:
        report.update(pag_coco_peak_rss(options.pag_coco_images, options.size))
    text = json.dumps(report, indent=2, sort_keys=True)
    print(text)
    if options.out:
        Path(options.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
