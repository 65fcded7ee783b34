"""The shared training loop and weight loading of the toy instruments (harness/toy/fit.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.errors import MissingWeightsError
from harness.toy.fit import fit, load_weights


def test_fit_lowers_the_loss_and_saves_weights_that_load_back(tmp_path, capsys):
    torch.manual_seed(0)
    inputs = torch.randn(64, 3)
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5]])
    model = nn.Linear(3, 1)
    losses = []

    def batch_loss(step: int) -> torch.Tensor:
        loss = ((model(inputs) - targets) ** 2).mean()
        losses.append(float(loss.detach()))
        return loss

    trained = fit(model, batch_loss, steps=200, learning_rate=0.05, name="linear", out_path=tmp_path / "w" / "m.safetensors")
    assert len(losses) == 200 and losses[-1] < 0.01 * losses[0]
    assert not trained.training
    assert '"step": 200' in capsys.readouterr().out
    reloaded = load_weights(nn.Linear(3, 1), tmp_path / "w" / "m.safetensors", "linear", "retrain it")
    assert torch.equal(reloaded.weight, trained.weight) and torch.equal(reloaded.bias, trained.bias)


def test_load_weights_names_the_file_and_the_retrain_command(tmp_path):
    with pytest.raises(MissingWeightsError, match="not found at .*absent.safetensors.*make toy-model"):
        load_weights(nn.Linear(3, 1), tmp_path / "absent.safetensors", "thing", "make toy-model")
    fit(nn.Linear(3, 2), lambda step: torch.zeros((), requires_grad=True), 1, 0.1, "x", tmp_path / "two.safetensors")
    with pytest.raises(MissingWeightsError, match="do not fit the network"):
        load_weights(nn.Linear(3, 1), tmp_path / "two.safetensors", "thing", "make toy-model")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(MissingWeightsError, match="unreadable"):
        load_weights(nn.Linear(3, 1), tmp_path / "junk.safetensors", "thing", "make toy-model")


def test_instrument_training_writes_the_weights_their_loaders_read(tmp_path):
    from harness.toy.data import render_pool
    from harness.toy.evaluator import load_evaluator, train_evaluator
    from harness.toy.segmenter import load_segmenter, train_segmenter

    pool = render_pool("judge_train", 16, workers=1)
    for train, load in ((train_evaluator, load_evaluator), (train_segmenter, load_segmenter)):
        model = train(pool, tmp_path / train.__name__, steps=2, batch_size=4)
        reloaded = load(tmp_path / train.__name__)
        for name, tensor in model.state_dict().items():
            assert torch.equal(reloaded.state_dict()[name], tensor), name
