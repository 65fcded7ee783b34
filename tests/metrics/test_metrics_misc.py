"""diversity, gen_accuracy (evaluator plug-in), clip_score (local weights), and the sweep plot."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from harness.data.prompts import PromptRecord
from harness.errors import MissingWeightsError
from harness.metrics.clip_score import CLIPScore
from harness.metrics.diversity import Diversity
from harness.metrics.gen_accuracy import GenAccuracy
from harness.store.samples import Sample


def _flat(value: int) -> np.ndarray:
    return np.full((8, 8, 3), value, np.uint8)


def test_diversity_is_the_mean_pairwise_distance_per_prompt():
    metric = Diversity(features="pixels", pixel_size=1)
    metric.reset()
    # prompt A: grey levels 0, 51, 102 -> pixel features (v, v, v)/255; prompt B: a single sample
    for index, value in enumerate([0, 51, 102]):
        metric.process(PromptRecord(f"a{index}", "prompt a", index), Sample(image=_flat(value)))
    metric.process(PromptRecord("b0", "prompt b", 9), Sample(image=_flat(200)))
    [result] = metric.compute()
    step = np.sqrt(3) * 51 / 255  # distance between neighbouring grey levels
    assert result.value == pytest.approx((step + step + 2 * step) / 3)
    assert result.n == 1 and "1 single-sample" in result.definition


def test_gen_accuracy_uses_the_evaluator_module_or_fails(monkeypatch):
    module = types.ModuleType("fake_toy_evaluator")

    class Judge:
        def judge(self, image, record):
            return float(record.prompt in ("a red circle",))

    module.load_evaluator = lambda device="cpu": Judge()
    monkeypatch.setitem(sys.modules, "fake_toy_evaluator", module)
    metric = GenAccuracy(evaluator_module="fake_toy_evaluator")
    metric.reset()
    values = [metric.process(PromptRecord(str(i), p, i), Sample(image=_flat(0)))
              for i, p in enumerate(["a red circle", "a blue square", "a red circle", "a red circle"])]
    assert [v["gen_accuracy"] for v in values] == [1.0, 0.0, 1.0, 1.0]
    [result] = metric.compute()
    assert result.value == pytest.approx(0.75)

    absent = GenAccuracy(evaluator_module="harness.toy.no_such_evaluator")
    with pytest.raises(MissingWeightsError, match="harness.toy.no_such_evaluator"):
        absent.check_available()


def _tiny_clip(folder):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from harness.models.clip_tokenizer import build_clip_tokenizer
    from harness.models.tiny import TINY_VOCABULARY

    tokenizer = build_clip_tokenizer(TINY_VOCABULARY, model_max_length=16)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8)
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def test_clip_score_from_local_weights_equals_direct_computation(tmp_path):
    model, processor = _tiny_clip(tmp_path / "clip")
    image = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3)).astype(np.uint8)
    metric = CLIPScore(model_path=str(tmp_path / "clip"), model_id="not/cached")
    metric.reset()
    value = metric.process(PromptRecord("0", "a red cat", 0), Sample(image=image))["clip_score"]
    with torch.no_grad():
        inputs = processor(text=["a red cat"], images=[image], return_tensors="pt", padding=True)
        image_embedding = model.get_image_features(pixel_values=inputs["pixel_values"])
        text_embedding = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    image_embedding = getattr(image_embedding, "pooler_output", image_embedding)
    text_embedding = getattr(text_embedding, "pooler_output", text_embedding)
    expected = max(100 * torch.nn.functional.cosine_similarity(image_embedding, text_embedding).item(), 0.0)
    assert value == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_clip_score_without_weights_fails_clearly(tmp_path):
    metric = CLIPScore(model_path=str(tmp_path / "none"), model_id="nobody/no-clip")
    with pytest.raises(MissingWeightsError, match="model_path") as error:
        metric.check_available()
    assert str(tmp_path / "none") in str(error.value) and "optional" in str(error.value)


def test_plot_metric_vs_draws_one_line_per_setting(tmp_path):
    from harness.report.plots import plot_metric_vs

    rows = pd.DataFrame([
        {"metric": "fid", "level": "aggregate", "value": v, "method": "cfg_pag", "hp.pag_scale": s,
         "hp.guidance_scale": g, "ci_low": None, "ci_high": None}
        for g in (1.0, 3.0) for s, v in zip((0.0, 1.0, 3.0), (30.0 + g, 25.0 + g, 27.0 + g))])
    out = plot_metric_vs(rows, x="hp.pag_scale", metric="fid", out=tmp_path / "fid.png")
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(out).shape[0] > 100


def test_toy_evaluator_adapter_parses_prompts_and_judges(tmp_path):
    from harness.metrics.features import ToyEvaluatorAdapter

    class FakeToyModule:
        ToyEvaluator = object
        WEIGHTS_FILE = "evaluator.safetensors"

        @staticmethod
        def load_evaluator(directory):
            return "network"

        @staticmethod
        def present_pairs(network, images):
            return [{("red", "circle"), ("blue", "square")}]

    adapter = ToyEvaluatorAdapter(FakeToyModule, str(tmp_path))
    record = PromptRecord("0", "a large red circle to the left of a square on a yellow background", 0)
    assert adapter.asked_objects(record) == [("red", "circle"), (None, "square")]
    assert adapter.judge(_flat(0), record) == 1.0
    assert adapter.judge(_flat(0), PromptRecord("1", "a green circle", 1)) == 0.0
    assert adapter.judge(_flat(0), PromptRecord("2", "x", 2, {"objects": [["blue", "square"]]})) == 1.0


def test_toy_evaluator_adapter_on_the_toy_network(tmp_path):
    from safetensors.torch import save_file

    from harness.metrics.features import ToyEvaluatorAdapter, load_evaluator
    from harness.toy import evaluator as toy_evaluator

    torch.manual_seed(0)
    save_file(toy_evaluator.ToyEvaluator().state_dict(), tmp_path / toy_evaluator.WEIGHTS_FILE)
    adapter = load_evaluator("harness.toy.evaluator", weights=str(tmp_path))
    assert isinstance(adapter, ToyEvaluatorAdapter) and "sha256:" in adapter.identity()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert adapter.features(images).shape[0] == 3
    torch.testing.assert_close(adapter.class_log_probabilities(images).exp().sum(dim=1), torch.ones(3))
    with pytest.raises(MissingWeightsError, match="evaluator"):
        load_evaluator("harness.toy.evaluator", weights=str(tmp_path / "missing"))
