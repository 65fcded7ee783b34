"""docs/extending.md's promise: a new method (or metric, baseline, dataset) is one module and one
config file; no catalogue line, no schema module. The explicit ways keep working beside it."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from harness import REPO_ROOT
from harness.config import MethodConfig, infer_schema
from harness.errors import HarnessError
from harness.registry import BASELINES, METHODS, METRICS, Registry

REPO_CONF = REPO_ROOT / "conf"

METHOD_MODULE = '''
"""A new method: generation, then the image's colours inverted (strength 1) or left (0)."""
import numpy as np

from harness.methods.generate import Generate


class InvertColours(Generate):
    name = "invert_colours"
    version = "1"

    def run_batch(self, records, seeds):
        samples = super().run_batch(records, seeds)
        for sample in samples:
            inverted = 255 - sample.image.astype(np.int16)
            mixed = self.cfg.strength * inverted + (1 - self.cfg.strength) * sample.image
            sample.image = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
            sample.meta["plain_mean"] = float((255 - inverted).mean())
        return samples
'''

METHOD_CONFIG = '''
# Generation with the colours inverted.
defaults:
  - invert_colours_schema
  - _self_
name: invert_colours
strength: 1.0
note: inverted
'''

METRIC_MODULE = '''
from harness.metrics.base import Metric
from harness.stats import mean_ci
from harness.store.rows import MetricResult


class Brightness(Metric):
    name = "brightness"

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def reset(self):
        self.values = []

    def process(self, record, sample):
        self.values.append(self.scale * float(sample.image.mean()) / 255)
        return {self.name: self.values[-1]}

    def compute(self):
        mean, low, high = mean_ci(self.values)
        return [MetricResult(self.name, mean, len(self.values), low, high, definition="mean pixel / 255")]
'''


@pytest.fixture
def extension(tmp_path, monkeypatch):
    """A package of new modules standing in for harness/methods and harness/metrics, and a copy of conf/."""
    package = tmp_path / "ext"
    for sub, name, text in [("methods", "invert_colours", METHOD_MODULE), ("metrics", "brightness", METRIC_MODULE)]:
        (package / sub).mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
        (package / sub / "__init__.py").write_text("")
        (package / sub / f"{name}.py").write_text(textwrap.dedent(text))
    conf = tmp_path / "conf"
    shutil.copytree(REPO_CONF, conf)
    (conf / "method" / "invert_colours.yaml").write_text(textwrap.dedent(METHOD_CONFIG))
    (conf / "metric" / "brightness.yaml").write_text("brightness:\n  scale: 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(METHODS, "package", "ext.methods")
    monkeypatch.setattr(METRICS, "package", "ext.metrics")
    yield conf
    for name in ("invert_colours", "brightness"):
        METHODS.unregister(name)
        METRICS.unregister(name)
    for module in [m for m in sys.modules if m == "ext" or m.startswith("ext.")]:
        del sys.modules[module]


def _compose(conf: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from harness.config import register_configs

    register_configs(conf)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.slow
def test_a_new_method_and_metric_are_one_module_and_one_config_each(extension, tmp_path):
    from harness.run import run_experiment

    common = ["experiment=smoke", "method=invert_colours", "metric=[mean_intensity,brightness]",
              "dataset.size=2", "generation.steps=1", f"store.root={tmp_path / 'cache'}"]
    cfg = _compose(extension, common)
    assert cfg.method.strength == 1.0 and cfg.method.note == "inverted"
    with pytest.raises(ConfigCompositionException, match="strenght"):  # a misspelt key fails at compose time
        _compose(extension, [*common, "method.strenght=0.5"])
    with pytest.raises(ConfigCompositionException, match="strength"):  # and so does a value of the wrong type
        _compose(extension, [*common, "method.strength=abc"])

    outcome = run_experiment(cfg, tmp_path / "run")
    rows = outcome.rows[outcome.rows["level"] == "aggregate"].set_index("metric")
    assert set(rows["method"]) == {"invert_colours"} and rows.loc["brightness", "hp.strength"] == 1.0
    assert rows.loc["brightness", "value"] == pytest.approx(rows.loc["mean_intensity", "value"], rel=1e-6)
    kept = run_experiment(_compose(extension, [*common, "method.strength=0.0"]), tmp_path / "run0")
    brightness = kept.rows[kept.rows["level"] == "aggregate"].set_index("metric").loc["brightness", "value"]
    assert brightness == pytest.approx(1 - rows.loc["brightness", "value"], abs=1e-6)  # inverted vs not
    assert "invert_colours" in METHODS.names() and "brightness" in METRICS


def test_explicit_registration_and_declared_schemas_still_work():
    registry = Registry("thing", package="harness.metrics")
    registry.register("explicit", "harness.metrics.image_stats:MeanIntensity")
    assert registry.get("explicit").name == "mean_intensity"
    assert registry.get("diversity").__name__ == "Diversity"  # by convention: harness/metrics/diversity.py
    with pytest.raises(HarnessError, match="harness.metrics.base defines no class with name = 'base'"):
        registry.get("base")
    with pytest.raises(HarnessError, match="no module harness.metrics.nothing_here"):
        registry.get("nothing_here")
    assert BASELINES.get("detectron2").__name__ == "Detectron2Segmenter"  # a catalogue line


def test_inferred_schema_types_follow_the_defaults():
    schema = infer_schema("demo_schema", MethodConfig, {"defaults": ["demo_schema"], "name": "demo", "k": 3,
                                                        "scale": 0.5, "on": True, "mode": "a", "layers": ["x"],
                                                        "extra": None})
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    cfg = OmegaConf.structured(schema)
    assert (cfg.k, cfg.scale, cfg.on, cfg.mode, list(cfg.layers), cfg.extra) == (3, 0.5, True, "a", ["x"], None)
    cfg.extra = 7  # null: any type
    with pytest.raises(ValidationError):
        cfg.k = "three"
    with pytest.raises(ValidationError):
        cfg.on = "maybe"
