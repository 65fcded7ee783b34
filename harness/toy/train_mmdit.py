"""Train the toy MMDiT (:mod:`harness.toy.mmdit`) on a pool of toy-world scenes.

    python -m harness.toy.train_mmdit --components weights/toy --pool render:train:80000 --run-name mmdit
    python -m harness.toy.train_mmdit --components weights/toy --pool pool.npz --resume results/toy_mmdit_train/mmdit
    python -m harness.toy.train_mmdit ... --steps 20000 --export weights/toy_mmdit

``--pool`` says which scenes: ``render:<split>:<n>`` renders (and caches) the current toy world's
``split`` with :func:`harness.toy.data.load_or_render_pool`, or a path to an ``.npz`` file holding
``images`` (N, H, W, 3) uint8 and ``captions`` (N,) str, e.g. a pool of a newer world version;
``--components`` names the toy pipeline folder whose autoencoder, text encoder and tokenizer the
MMDiT uses (frozen). Checkpoints (transformer, its EMA, optimizer, random states; written every
few minutes and at the end, swapped in atomically) make a run resumable with ``--resume``;
a resumed run continues the same random streams.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from harness.errors import DataError, HarnessError

CHECKPOINT = "checkpoint"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.toy.train_mmdit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=Path, default=Path("weights/toy"), help="toy pipeline folder (VAE, text encoder)")
    parser.add_argument("--pool", default="render:train:80000", help="render:<split>:<n> or a .npz of images+captions")
    parser.add_argument("--pool-cache", type=Path, default=Path("results/toy_train/pools"))
    parser.add_argument("--run-name", default="mmdit")
    parser.add_argument("--out-root", type=Path, default=Path("results/toy_mmdit_train"))
    parser.add_argument("--resume", type=Path, default=None, help="run folder to continue")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20_000, help="total transformer steps (a resumed run stops here too)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--warmup-steps", type=int, default=500)
    parser.add_argument("--caption-dropout", type=float, default=0.1, help="for classifier-free guidance")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--export", type=Path, default=None, help="write the pipeline (EMA weights) here when training ends")
    return parser.parse_args(argv)


def load_pool(spec: str, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, H, W, 3), captions (N,)) of ``--pool``."""
    if spec.startswith("render:"):
        try:
            _, split, size = spec.split(":")
            count = int(size)
        except ValueError:
            raise DataError(f"--pool {spec!r}: write render:<split>:<n>, e.g. render:train:80000.") from None
        from harness.toy.data import load_or_render_pool

        pool = load_or_render_pool(split, count, cache_dir)
        return pool.images, pool.captions
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DataError(f"--pool {path}: no such file (give render:<split>:<n> or an .npz with images and captions).")
    with np.load(path, allow_pickle=False) as data:
        if "images" not in data or "captions" not in data:
            raise DataError(f"--pool {path} must hold arrays 'images' and 'captions'; it has {sorted(data.files)}.")
        images, captions = data["images"], data["captions"]
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(captions) or not len(images):
        raise DataError(f"--pool {path}: images must be (N, H, W, 3) uint8 with one caption each (got {images.shape}, "
                        f"{images.dtype}, {len(captions)} captions).")
    return images, captions


def _save_checkpoint(run_dir: Path, transformer, ema, optimizer, rng: np.random.Generator,
                     generator: torch.Generator, state: dict) -> None:
    """Write to a temporary folder, then swap it in (a crash never leaves half a checkpoint)."""
    from safetensors.torch import save_file

    tmp = run_dir / (CHECKPOINT + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in transformer.state_dict().items()}, tmp / "transformer.safetensors")
    names = [n for n, _ in transformer.named_parameters()]
    save_file({n: p.contiguous() for n, p in zip(names, ema.shadow_params)}, tmp / "ema_transformer.safetensors")
    save_file({"torch_generator": generator.get_state()}, tmp / "generator.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    state = dict(state, numpy_rng=rng.bit_generator.state, ema_optimization_step=ema.optimization_step)
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    final, old = run_dir / CHECKPOINT, run_dir / (CHECKPOINT + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def train(args: argparse.Namespace, run_dir: Path) -> dict:
    """The training loop; returns the final state (step, wall time, last losses)."""
    from diffusers.training_utils import EMAModel, compute_density_for_timestep_sampling
    from safetensors.torch import load_file

    from harness.toy.mmdit import MAX_SEQUENCE_LENGTH, build_toy_mmdit

    torch.set_num_threads(args.threads)
    images, captions = load_pool(args.pool, args.pool_cache)
    pipeline = build_toy_mmdit(args.components, weights_seed=args.seed)
    transformer, vae = pipeline.transformer, pipeline.vae
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=args.learning_rate, weight_decay=0.01)
    ema = EMAModel(transformer.parameters(), decay=args.ema_decay, use_ema_warmup=True, power=2 / 3)
    rng = np.random.default_rng([args.seed, 7])
    generator = torch.Generator().manual_seed(args.seed + 7)
    state: dict = {"step": 0, "wall_s": 0.0, "pool": args.pool, "components": str(args.components)}
    checkpoint = run_dir / CHECKPOINT
    if checkpoint.exists():
        transformer.load_state_dict(load_file(checkpoint / "transformer.safetensors"))
        shadow = load_file(checkpoint / "ema_transformer.safetensors")
        ema.shadow_params = [shadow[n].clone() for n, _ in transformer.named_parameters()]
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
        generator.set_state(load_file(checkpoint / "generator.safetensors")["torch_generator"])
        state = json.loads((checkpoint / "state.json").read_text())
        rng.bit_generator.state = state.pop("numpy_rng")
        ema.optimization_step = state.pop("ema_optimization_step")
        print(f"resumed at step {state['step']}", flush=True)
    print(f"transformer parameters: {sum(p.numel() for p in transformer.parameters()) / 1e6:.2f}M, "
          f"pool {len(images)} scenes", flush=True)
    scaling, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0
    log_path = run_dir / "log.jsonl"
    last_checkpoint, window, started = time.time(), [], time.time()
    transformer.train()
    while state["step"] < args.steps:
        step = state["step"] + 1
        for group in optimizer.param_groups:
            group["lr"] = args.learning_rate * min(1.0, step / args.warmup_steps)
        index = rng.integers(0, len(images), args.batch_size)
        prompts = [("" if rng.random() < args.caption_dropout else str(captions[i])) for i in index]
        with torch.no_grad():
            pixels = torch.from_numpy(images[index]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            posterior = vae.encode(pixels).latent_dist
            latents = (posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator) - shift) * scaling
            context, _, pooled, _ = pipeline.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None,
                                                           do_classifier_free_guidance=False,
                                                           max_sequence_length=MAX_SEQUENCE_LENGTH)
        u = compute_density_for_timestep_sampling("logit_normal", args.batch_size, logit_mean=0.0, logit_std=1.0,
                                                  generator=generator)
        sigma = u.view(-1, 1, 1, 1)
        noise = torch.randn(latents.shape, generator=generator)
        noisy = (1.0 - sigma) * latents + sigma * noise
        prediction = transformer(hidden_states=noisy, timestep=u * 1000.0, encoder_hidden_states=context,
                                 pooled_projections=pooled, return_dict=False)[0]
        loss = ((prediction - (noise - latents)) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        ema.step(transformer.parameters())
        state["step"] = step
        window.append(float(loss.detach()))
        if step % 25 == 0 or step == args.steps:
            elapsed = time.time() - started
            state["wall_s"] += elapsed
            started = time.time()
            entry = {"step": step, "loss": round(float(np.mean(window)), 5), "s_per_step": round(elapsed / len(window), 3)}
            state["last_loss"] = entry["loss"]
            window = []
            with open(log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")
            print("mmdit", json.dumps(entry), flush=True)
        if time.time() - last_checkpoint > 60 * args.checkpoint_minutes or step == args.steps:
            _save_checkpoint(run_dir, transformer, ema, optimizer, rng, generator, state)
            last_checkpoint = time.time()
    if args.export is not None:
        ema.copy_to(transformer.parameters())
        transformer.eval()
        export(pipeline, args.export, state)
    return state


def export(pipeline, folder: Path, state: dict) -> Path:
    """Write the pipeline (``save_pretrained``, safetensors) and its training state beside it."""
    from harness.toy.mmdit import save_toy_mmdit

    folder = save_toy_mmdit(pipeline, folder)
    (folder / "training_state.json").write_text(json.dumps(state, indent=1) + "\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m harness.toy.train_mmdit``."""
    args = _parse(argv)
    run_dir = args.resume if args.resume is not None else args.out_root / args.run_name
    if args.resume is not None and not (run_dir / CHECKPOINT).exists():
        raise SystemExit(f"harness: error: --resume {run_dir}: no checkpoint there")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))
    try:
        train(args, run_dir)
    except HarnessError as error:
        raise SystemExit(f"harness: error: {error}") from None
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
