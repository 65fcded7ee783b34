"""Assemble a trained toy run into a diffusers StableDiffusionPipeline folder (weights/toy).

The text encoder was trained on compact token ids (`harness.toy.tokens`); the shipped pipeline
uses a CLIP-format tokenizer for the toy vocabulary. Export copies each embedding row to the
tokenizer's id for the same token (start, end/padding and every vocabulary word), so the
shipped encoder computes exactly what it computed in training; tokens outside the vocabulary
(character fallbacks) get the mean word embedding.

    harness toy export results/toy_train/toy weights/toy
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline
from transformers import CLIPTextModel, CLIPTokenizer

from harness.errors import HarnessError
from harness.models.clip_tokenizer import build_clip_tokenizer
from harness.toy.tokens import BOS_ID, CONTEXT_LENGTH, EOS_ID, V1, TokenSpace
from harness.toy.unet import load_ema_unet, sampling_scheduler

#: Captions the export's round trip checks, per world (by vocabulary size).
_CHECK_TEXTS = {
    V1.vocab_size: ["a small red circle to the left of a blue star on a yellow background", "", "an orange heart"],
}


def toy_tokenizer(tokens: TokenSpace = V1) -> CLIPTokenizer:
    """The CLIP-format tokenizer of a toy vocabulary (every word one token, 32-token context)."""
    return build_clip_tokenizer(tokens.vocabulary, model_max_length=CONTEXT_LENGTH)


def _id_pairs(tokenizer: CLIPTokenizer, tokens: TokenSpace = V1) -> list[tuple[int, int]]:
    """(training id, tokenizer id) for the special tokens and every vocabulary word."""
    pairs = [(BOS_ID, tokenizer.bos_token_id), (EOS_ID, tokenizer.eos_token_id)]
    for word, training_id in tokens.word_to_id.items():
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise HarnessError(f"the toy tokenizer splits {word!r} into {ids}; every toy word must be one token")
        pairs.append((training_id, ids[0]))
    if tokenizer.pad_token_id != tokenizer.eos_token_id:
        raise HarnessError("the toy text encoder was trained with end-of-text as padding (as SD 1.x)")
    return pairs


def to_tokenizer_ids(text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, tokens: TokenSpace = V1) -> CLIPTextModel:
    """A copy of a training-id text encoder whose embedding rows follow `tokenizer`'s ids."""
    config = copy.deepcopy(text_encoder.config)
    config.vocab_size = len(tokenizer)
    config.bos_token_id, config.eos_token_id, config.pad_token_id = (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    exported = CLIPTextModel(config)
    state = text_encoder.state_dict()
    key = next(k for k in state if k.endswith("token_embedding.weight"))
    old = state.pop(key)
    new = old[2:].mean(dim=0, keepdim=True).repeat(len(tokenizer), 1)
    for training_id, tokenizer_id in _id_pairs(tokenizer, tokens):
        new[tokenizer_id] = old[training_id]
    state[key] = new
    exported.load_state_dict(state)
    return exported.eval()


def to_training_ids(text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, tokens: TokenSpace = V1) -> CLIPTextModel:
    """The inverse of `to_tokenizer_ids`: a shipped encoder back in the training id space."""
    config = copy.deepcopy(text_encoder.config)
    config.vocab_size = tokens.vocab_size
    config.bos_token_id, config.eos_token_id, config.pad_token_id = BOS_ID, EOS_ID, EOS_ID
    restored = CLIPTextModel(config)
    state = text_encoder.state_dict()
    key = next(k for k in state if k.endswith("token_embedding.weight"))
    old = state.pop(key)
    new = torch.zeros(tokens.vocab_size, old.shape[1])
    for training_id, tokenizer_id in _id_pairs(tokenizer, tokens):
        new[training_id] = old[tokenizer_id]
    state[key] = new
    restored.load_state_dict(state)
    return restored.eval()


def export_pipeline(run_dir: Path, out_dir: Path, tokens: TokenSpace = V1,
                    check_texts: list[str] | None = None) -> StableDiffusionPipeline:
    """Write run_dir's autoencoder, text encoder and EMA UNet as a StableDiffusionPipeline folder
    (`tokens`: the world's token space; `check_texts`: captions of the round-trip check)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    # A decoder fine-tuned with the encoder frozen (autoencoder.finetune_decoder) decodes the same
    # latents better; use it when the run has one.
    vae_dir = run_dir / "vae_finetuned" if (run_dir / "vae_finetuned" / "config.json").exists() else run_dir / "vae"
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    tokenizer = toy_tokenizer(tokens)
    trained_encoder = CLIPTextModel.from_pretrained(run_dir / "text_encoder").eval()
    text_encoder = to_tokenizer_ids(trained_encoder, tokenizer, tokens)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=load_ema_unet(run_dir),
        scheduler=sampling_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(out_dir, safe_serialization=True)

    # Check the round trip: the shipped tokenizer + encoder reproduce the training encoder.
    reloaded = StableDiffusionPipeline.from_pretrained(out_dir, safety_checker=None, requires_safety_checker=False)
    texts = check_texts or _CHECK_TEXTS[tokens.vocab_size]
    with torch.no_grad():
        shipped = reloaded.text_encoder(reloaded.tokenizer(texts, padding="max_length", max_length=CONTEXT_LENGTH,
                                                           return_tensors="pt").input_ids).last_hidden_state
        trained = trained_encoder(input_ids=torch.from_numpy(np.stack([tokens.encode(t) for t in texts]))).last_hidden_state
    if not torch.allclose(shipped, trained, atol=1e-5):
        raise RuntimeError("exported text encoder does not reproduce the trained one")
    state_path = run_dir / "unet_checkpoint" / "state.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        (out_dir / "training_state.json").write_text(json.dumps(
            {"unet_step": state["step"], "unet_wall_s": state["wall_s"], "vae": vae_dir.name}, indent=1))
    return reloaded


def write_loss_curve(run_dirs: list[Path], png: Path) -> None:
    """Plot the UNet training loss (``unet_log.jsonl`` of each run, in training order: a run
    started with ``--init-from`` continues the step count of the one before) to ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for run_dir in run_dirs:
        log = Path(run_dir) / "unet_log.jsonl"
        if not log.is_file():
            raise FileNotFoundError(f"no UNet training log at {log}")
        rows = [json.loads(line) for line in log.read_text().splitlines() if line]
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1, label=Path(run_dir).name)
    ax.set_xlabel("UNet step (batch 32)")
    ax.set_ylabel("min-SNR-5 weighted MSE (25-step mean)")
    ax.set_yscale("log")
    ax.set_title("toy UNet training loss")
    ax.grid(alpha=0.3)
    if len(run_dirs) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """`harness toy export RUN_DIR OUT_DIR`: export and plot the loss curve."""
    parser = argparse.ArgumentParser(prog="harness toy export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--world", choices=("v1", "v2"), default="v1", help="the toy world the run trained on")
    parser.add_argument("--earlier-runs", type=Path, nargs="*", default=[],
                        help="run folders this run continued from (--init-from), oldest first, for the loss curve")
    args = parser.parse_args(argv)
    if args.world == "v2":
        from harness.toy.v2.tokens import V2

        export_pipeline(args.run_dir, args.out_dir, V2, ["three striped blue circles and a red ring on a gray background",
                                                         "", "one large dotted orange crescent"])
    else:
        export_pipeline(args.run_dir, args.out_dir)
    write_loss_curve([*args.earlier_runs, args.run_dir], args.out_dir / "loss_curve.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
