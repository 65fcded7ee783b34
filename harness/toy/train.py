"""Train the toy text-to-image model: autoencoder, toy CLIP text encoder, then the UNet.

    harness toy train --run-name toy                 # start (or run missing stages)
    harness toy train --resume results/toy_train/toy # continue the UNet from its checkpoint
    harness toy train --resume results/toy_train/toy --export weights/toy

Stages run in order and are skipped when their output exists in the run folder:
`vae/` (AutoencoderKL), `text_encoder/` (pretrained toy CLIP, then frozen), `unet_checkpoint/`
(UNet, its EMA, optimizer and generator states; written every few minutes and at the end).
Everything is seeded; a resumed run continues the same random streams.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from diffusers.training_utils import EMAModel, compute_snr
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel

from harness.errors import HarnessError
from harness.toy.autoencoder import images_to_tensor, train_autoencoder
from harness.toy.data import load_or_render_pool
from harness.toy.probe import teacher_forced_probe
from harness.toy.text_encoder import pretrain_text_encoder
from harness.toy.tokens import V1, TokenSpace
from harness.toy.unet import CHECKPOINT, build_unet, training_scheduler


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="harness toy train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=("v1", "v2"), default="v1",
                        help="toy world to train on: v1 (32x32 flat shapes) or v2 (64x64 textured, counted, occluding)")
    parser.add_argument("--run-name", default="toy", help="folder under --out-root for this run")
    parser.add_argument("--out-root", default="results/toy_train", type=Path)
    parser.add_argument("--resume", type=Path, default=None, help="run folder to continue")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="a shipped pipeline folder (weights/toy) to start a new run from: its autoencoder, "
                             "text encoder and UNet weights (fresh optimizer)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool-size", type=int, default=80_000, help="number of pre-rendered training scenes")
    parser.add_argument("--vae-steps", type=int, default=600)
    parser.add_argument("--text-steps", type=int, default=250)
    parser.add_argument("--vae-object-weight", type=float, default=4.0,
                        help="world v2: weight of object pixels in the autoencoder's reconstruction loss")
    parser.add_argument("--padding-weight", type=float, default=1.0,
                        help="text-encoder pretraining: weight of the uninformative-padding loss (0 = off)")
    parser.add_argument("--unet-steps", type=int, default=6000, help="total UNet steps (a resumed run stops here too)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--decay-steps", type=int, default=0,
                        help="decay the learning rate linearly to 10%% over the last N UNet steps (0 = constant)")
    parser.add_argument("--caption-dropout", type=float, default=0.1, help="for classifier-free guidance")
    parser.add_argument("--adjective-dropout", type=float, default=0.25,
                        help="probability of removing each object's size/colour word from a training caption")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--probe-every", type=int, default=500, help="UNet steps between attention probes (0 = never)")
    parser.add_argument("--export", type=Path, default=None, help="export the pipeline here when training ends")
    return parser.parse_args(argv)


class _LatentCache:
    """VAE posterior (mean, std) of pool images, encoded on first use."""

    def __init__(self, vae: AutoencoderKL, images: np.ndarray):
        self.vae, self.images = vae, images
        n = len(images)
        self.mean = np.zeros((n, 4, 16, 16), np.float32)
        self.std = np.zeros((n, 4, 16, 16), np.float32)
        self.done = np.zeros(n, bool)

    @torch.no_grad()
    def get(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        todo = np.unique(index[~self.done[index]])
        if len(todo):
            posterior = self.vae.encode(images_to_tensor(self.images[todo])).latent_dist
            self.mean[todo], self.std[todo] = posterior.mean.numpy(), posterior.std.numpy()
            self.done[todo] = True
        return torch.from_numpy(self.mean[index]), torch.from_numpy(self.std[index])


def _save_checkpoint(run_dir: Path, unet, ema: EMAModel, optimizer, rng: np.random.Generator,
                     generator: torch.Generator, state: dict) -> None:
    """Write the checkpoint to a temporary folder, then swap it in (a crash never leaves half of one)."""
    tmp = run_dir / (CHECKPOINT + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, tmp / "unet.safetensors")
    names = [n for n, _ in unet.named_parameters()]
    save_file({n: p.contiguous() for n, p in zip(names, ema.shadow_params)}, tmp / "ema_unet.safetensors")
    save_file({"torch_generator": generator.get_state()}, tmp / "generator.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    state = dict(state, numpy_rng=rng.bit_generator.state, ema_optimization_step=ema.optimization_step)
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    final = run_dir / CHECKPOINT
    old = run_dir / (CHECKPOINT + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def learning_rate_at(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, constant, then (with --decay-steps) a linear decay to 10% at --unet-steps."""
    factor = min(1.0, step / args.warmup_steps)
    decay_steps = getattr(args, "decay_steps", 0)
    if decay_steps > 0:
        remaining = max(0, args.unet_steps - step)
        factor *= 0.1 + 0.9 * min(1.0, remaining / decay_steps)
    return args.learning_rate * factor


def train_unet(args: argparse.Namespace, run_dir: Path, pool, vae: AutoencoderKL, text_encoder: CLIPTextModel,
               tokens: TokenSpace = V1, probe=teacher_forced_probe) -> None:
    """The diffusion stage: epsilon prediction on VAE latents, frozen text encoder, EMA, min-SNR weights.

    `tokens` is the world's token space; `probe(unet, text_encoder, vae, scheduler) -> dict` runs
    every `--probe-every` steps (None: never)."""
    torch.manual_seed(args.seed)
    unet = build_unet()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.learning_rate, weight_decay=0.01)
    ema = EMAModel(unet.parameters(), decay=args.ema_decay, use_ema_warmup=True, power=2 / 3)
    rng = np.random.default_rng([args.seed, 3])
    generator = torch.Generator().manual_seed(args.seed + 3)
    state = {"step": 0, "wall_s": 0.0}
    checkpoint = run_dir / CHECKPOINT
    if not checkpoint.exists() and args.init_from is not None:
        weights = args.init_from / "unet" / "diffusion_pytorch_model.safetensors"
        if not weights.exists():
            raise HarnessError(f"--init-from: no UNet weights at {weights}")
        unet.load_state_dict(load_file(weights))
        ema = EMAModel(unet.parameters(), decay=args.ema_decay, use_ema_warmup=True, power=2 / 3)
        shipped_state = args.init_from / "training_state.json"
        if shipped_state.exists():
            state["step"] = int(json.loads(shipped_state.read_text()).get("unet_step", 0))
        print(f"UNet initialised from {weights} (step {state['step']}, fresh optimizer)", flush=True)
    if checkpoint.exists():
        unet.load_state_dict(load_file(checkpoint / "unet.safetensors"))
        shadow = load_file(checkpoint / "ema_unet.safetensors")
        ema.shadow_params = [shadow[n].clone() for n, _ in unet.named_parameters()]
        if (checkpoint / "optimizer.pt").exists():
            optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
        else:  # a checkpoint shipped without its optimizer state (kept small in the repository)
            print("checkpoint has no optimizer state: fresh AdamW moments", flush=True)
        generator.set_state(load_file(checkpoint / "generator.safetensors")["torch_generator"])
        state = json.loads((checkpoint / "state.json").read_text())
        rng.bit_generator.state = state.pop("numpy_rng")
        ema.optimization_step = state.pop("ema_optimization_step")
        print(f"resumed UNet at step {state['step']}", flush=True)
    print(f"UNet parameters: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M", flush=True)

    scheduler = training_scheduler()
    latents_cache = _LatentCache(vae, pool.images)
    scaling = vae.config.scaling_factor
    empty_ids = torch.from_numpy(tokens.encode(""))
    log_path, probe_path = run_dir / "unet_log.jsonl", run_dir / "probe_log.jsonl"
    last_checkpoint = time.time()
    window: list[float] = []
    step_start = time.time()
    unet.train()
    while state["step"] < args.unet_steps:
        step = state["step"] + 1
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, args)
        index = rng.integers(0, len(pool), args.batch_size)
        mean, std = latents_cache.get(index)
        latents = (mean + std * torch.randn(mean.shape, generator=generator)) * scaling
        if args.adjective_dropout > 0:
            ids = torch.from_numpy(np.stack([tokens.encode(tokens.drop_adjectives(str(pool.captions[i]), args.adjective_dropout, rng))
                                             for i in index]))
        else:
            ids = torch.from_numpy(pool.token_ids[index])
        dropped = torch.from_numpy(rng.random(args.batch_size) < args.caption_dropout)
        ids[dropped] = empty_ids
        with torch.no_grad():
            states = text_encoder(input_ids=ids).last_hidden_state
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch_size,), generator=generator)
        prediction = unet(scheduler.add_noise(latents, noise, timesteps), timesteps, states).sample
        # Min-SNR-5 weighting (Hang et al. 2023): faster convergence for epsilon prediction.
        snr = compute_snr(scheduler, timesteps)
        weights = torch.clamp(snr, max=5.0) / snr
        loss = (weights * ((prediction - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        ema.step(unet.parameters())
        state["step"] = step
        window.append(float(loss.detach()))
        if step % 25 == 0:
            elapsed = time.time() - step_start
            state["wall_s"] += elapsed
            step_start = time.time()
            entry = {"step": step, "loss": round(float(np.mean(window)), 5), "s_per_step": round(elapsed / len(window), 3),
                     "wall_s": round(state["wall_s"], 1)}
            window = []
            with open(log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")
            print("unet", json.dumps(entry), flush=True)
        if probe is not None and args.probe_every and step % args.probe_every == 0:
            ema.store(unet.parameters())
            ema.copy_to(unet.parameters())
            unet.eval()
            result = {"step": step, **probe(unet, text_encoder, vae, scheduler)}
            unet.train()
            ema.restore(unet.parameters())
            with open(probe_path, "a") as f:
                f.write(json.dumps(result) + "\n")
            print("probe", json.dumps(result), flush=True)
        if time.time() - last_checkpoint > 60 * args.checkpoint_minutes or step == args.unet_steps:
            _save_checkpoint(run_dir, unet, ema, optimizer, rng, generator, state)
            last_checkpoint = time.time()
            print(f"checkpoint at step {step}", flush=True)


def _import_shipped_components(pipeline_dir: Path, run_dir: Path) -> None:
    """Copy a shipped pipeline's autoencoder and text encoder (back in training ids) into a run."""
    from transformers import CLIPTokenizer

    from harness.toy.export import to_training_ids

    if not (pipeline_dir / "model_index.json").exists():
        raise HarnessError(f"--init-from: {pipeline_dir} is not a pipeline folder (no model_index.json)")
    if not (run_dir / "vae" / "diffusion_pytorch_model.safetensors").exists():
        AutoencoderKL.from_pretrained(pipeline_dir / "vae").save_pretrained(run_dir / "vae", safe_serialization=True)
    if not (run_dir / "text_encoder" / "model.safetensors").exists():
        shipped = CLIPTextModel.from_pretrained(pipeline_dir / "text_encoder")
        tokenizer = CLIPTokenizer.from_pretrained(pipeline_dir / "tokenizer")
        to_training_ids(shipped, tokenizer).save_pretrained(run_dir / "text_encoder", safe_serialization=True)


def _v2_tokens() -> TokenSpace:
    from harness.toy.v2.tokens import V2

    return V2


def _prepare_v2(args: argparse.Namespace, run_dir: Path):
    """World v2's pool, autoencoder and text encoder (each stage skipped when its output exists)."""
    from harness.toy.v2.data import load_or_render_pool_v2
    from harness.toy.v2.model import build_autoencoder, pretrain_text_encoder_v2

    pool = load_or_render_pool_v2("train", args.pool_size, args.out_root / "data", workers=args.threads)
    if not (run_dir / "vae" / "diffusion_pytorch_model.safetensors").exists():
        train_autoencoder(pool, run_dir / "vae", steps=args.vae_steps, seed=args.seed, build=build_autoencoder,
                          object_weight=args.vae_object_weight)
    vae = AutoencoderKL.from_pretrained(run_dir / "vae").eval().requires_grad_(False)
    if not (run_dir / "text_encoder" / "model.safetensors").exists():
        pretrain_text_encoder_v2(pool, run_dir / "text_encoder", steps=args.text_steps, seed=args.seed,
                                 padding_weight=args.padding_weight)
    text_encoder = CLIPTextModel.from_pretrained(run_dir / "text_encoder").eval().requires_grad_(False)
    return pool, vae, text_encoder


def main(argv: list[str] | None = None) -> int:
    """Entry point of `harness toy train` / `harness toy train`."""
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    run_dir = args.resume if args.resume is not None else args.out_root / args.run_name
    if args.resume is None and (run_dir / CHECKPOINT).exists():
        raise HarnessError(f"{run_dir} already holds a checkpoint; continue it with --resume {run_dir}")
    if args.resume is not None and not run_dir.exists():
        raise HarnessError(f"cannot resume: {run_dir} does not exist")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))

    if args.init_from is not None:
        _import_shipped_components(args.init_from, run_dir)
    if args.world == "v2":
        pool, vae, text_encoder = _prepare_v2(args, run_dir)
        train_unet(args, run_dir, pool, vae, text_encoder, tokens=_v2_tokens(), probe=None)
        return 0
    pool = load_or_render_pool("train", args.pool_size, args.out_root / "data", workers=args.threads)
    if not (run_dir / "vae" / "diffusion_pytorch_model.safetensors").exists():
        train_autoencoder(pool, run_dir / "vae", steps=args.vae_steps, seed=args.seed)
    vae = AutoencoderKL.from_pretrained(run_dir / "vae").eval().requires_grad_(False)
    if not (run_dir / "text_encoder" / "model.safetensors").exists():
        pretrain_text_encoder(pool, run_dir / "text_encoder", steps=args.text_steps, seed=args.seed,
                              padding_weight=args.padding_weight)
    text_encoder = CLIPTextModel.from_pretrained(run_dir / "text_encoder").eval().requires_grad_(False)
    train_unet(args, run_dir, pool, vae, text_encoder)
    if args.export is not None:
        from harness.toy.export import export_pipeline

        export_pipeline(run_dir, args.export)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
