"""What the toy world's two instruments (the evaluator and the supervised segmenter) share:
their training loop (AdamW with a one-cycle schedule over sampled batches, a log line every
100 steps, safetensors at the end) and the loading of their weights with clear errors."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from harness.errors import MissingWeightsError


def fit(model: nn.Module, batch_loss: Callable[[int], torch.Tensor], steps: int, learning_rate: float,
        name: str, out_path: Path) -> nn.Module:
    """Minimise ``batch_loss(step)`` for ``steps`` steps; save the weights to ``out_path``; return the model in eval mode."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1)
    start = time.time()
    model.train()
    for step in range(1, steps + 1):
        loss = batch_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0:
            print(name, json.dumps({"step": step, "loss": round(float(loss.detach()), 4),
                                    "elapsed_s": round(time.time() - start, 1)}), flush=True)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), out_path)
    return model.eval()


def load_weights(model: nn.Module, path: Path, name: str, retrain_command: str) -> nn.Module:
    """``model`` with the safetensors weights at ``path``, in eval mode; a missing, unreadable or
    ill-fitting file raises :class:`MissingWeightsError` naming the file and ``retrain_command``."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"toy {name} weights not found at {path}; train them with `{retrain_command}`")
    try:
        model.load_state_dict(load_file(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise MissingWeightsError(f"toy {name} weights at {path} are unreadable or do not fit the network ({error}); "
                                  f"train them again with `{retrain_command}`") from None
    return model.eval()
