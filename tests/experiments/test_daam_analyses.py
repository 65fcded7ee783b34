"""The paper-setting experiments state their settings and, without weights, stop with the clear message."""

import json

import pytest

from harness.errors import DataError, MissingWeightsError


def test_paper_settings(compose):
    syntax = compose(["experiment=daam_syntax_coco"])
    assert syntax.model.name == "sd21_base" and syntax.generation.steps == 30
    assert dict(syntax.metric.daam_syntax) == {"threshold": 0.15, "scale": "raw", "top": 10}
    pos = compose(["experiment=daam_pos_coco"])
    assert dict(pos.metric.daam_pos.rating_task) == {"pairs": 2800, "tags": 14, "seed": 0, "name": "daam_pos_coco"}
    for name in ("daam_pos_toy", "daam_syntax_toy", "entanglement_cohyponym_toy", "entanglement_adjective_toy"):
        toy = compose([f"experiment={name}"])
        assert toy.model.name == "toy" and toy.dataset.split == "test"


@pytest.mark.parametrize("experiment", ["entanglement_cohyponym_coco", "entanglement_adjective_coco"])
def test_entanglement_coco_without_weights_stops_with_the_missing_weights_message(compose, tmp_path, experiment):
    from harness.run import run_experiment

    cfg = compose([f"experiment={experiment}", "dataset.size=2", f"store.root={tmp_path / 'cache'}",
                   "model.device=cpu", "metric.cohyponym_entanglement.judge=none"
                   if experiment.startswith("entanglement_cohyponym") else "metric.adjective_entanglement.features=pixels"])
    with pytest.raises(MissingWeightsError) as caught:
        run_experiment(cfg, tmp_path / "run")
    assert "stabilityai/stable-diffusion-2-base" in str(caught.value)


def test_daam_syntax_coco_without_captions_names_the_file(compose, tmp_path):
    from harness.run import run_experiment

    cfg = compose(["experiment=daam_syntax_coco", f"dataset.path={tmp_path / 'captions_val2014.json'}",
                   f"store.root={tmp_path / 'cache'}"])
    with pytest.raises(DataError) as caught:
        run_experiment(cfg, tmp_path / "run")
    assert "captions_val2014.json" in str(caught.value)


def test_daam_syntax_coco_without_weights(compose, tmp_path):
    from harness.run import run_experiment

    captions = tmp_path / "captions_val2014.json"
    captions.write_text(json.dumps({"annotations": [{"id": 1, "image_id": 1, "caption": "A dog on a red couch."}]}))
    cfg = compose(["experiment=daam_syntax_coco", f"dataset.path={captions}", "dataset.size=1",
                   f"store.root={tmp_path / 'cache'}", "model.device=cpu"])
    with pytest.raises(MissingWeightsError) as caught:
        run_experiment(cfg, tmp_path / "run")
    assert "stable-diffusion-2-1-base" in str(caught.value)


def test_toy_analyses_share_the_tau_daam_pos_toy_selects_on_dev(compose):
    from omegaconf import OmegaConf

    from harness import REPO_ROOT

    declared = OmegaConf.load(REPO_ROOT / "conf" / "experiment" / "daam_pos_toy.yaml")
    chosen = {entry["key"]: entry["value"] for entry in declared.selection.get("chosen") or []}
    tau = chosen.get("metric.daam_pos.threshold", declared.metric.daam_pos.threshold)
    assert declared.selection.split == "dev"
    assert compose(["experiment=daam_syntax_toy"]).metric.daam_syntax.threshold == tau
    assert compose(["experiment=entanglement_cohyponym_toy"]).metric.cohyponym_entanglement.threshold == tau
    assert compose(["experiment=entanglement_adjective_toy"]).metric.adjective_entanglement.threshold == tau
