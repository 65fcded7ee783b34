"""`model=toy_v1` loads world v1's shipped model, so v1 figures stay reproducible under that name."""

from __future__ import annotations

import torch

from harness.models.loader import load_model


def test_toy_v1_loads_the_v1_weights_under_its_own_name(compose):
    v1 = load_model(compose(["model=toy_v1"]).model)
    toy = load_model(compose(["model=toy"]).model)
    assert v1.name == "toy_v1" and (v1.default_height, v1.default_width) == (32, 32)
    assert v1.fingerprint.split("-", 1)[1] == toy.fingerprint.split("-", 1)[1]  # the same bytes (sha256)
    for (name, a), (_, b) in zip(v1.pipeline.unet.state_dict().items(), toy.pipeline.unet.state_dict().items()):
        assert torch.equal(a, b), name
