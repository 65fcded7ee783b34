"""Adding a method, a metric, a dataset and a model is one module and one config file each.

The check works on a scratch copy of the repository (harness/ and conf/ in a temporary folder):
it writes the four modules and four config files there, and nothing else (no catalogue line, no
schema module, no edit of an existing file), then runs `harness run` from the copy in a fresh
process and reads the rows back.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from harness import REPO_ROOT

FILES = {
    "harness/methods/half_bright.py": '''
        """A new method: generation, then every pixel scaled by ``factor``."""
        import numpy as np

        from harness.methods.generate import Generate


        class HalfBright(Generate):
            name = "half_bright"

            def run_batch(self, records, seeds):
                samples = super().run_batch(records, seeds)
                for sample in samples:
                    sample.meta["unscaled_mean"] = float(sample.image.mean())
                    sample.image = np.clip(np.rint(sample.image * self.cfg.factor), 0, 255).astype(np.uint8)
                return samples
        ''',
    "conf/method/half_bright.yaml": '''
        defaults:
          - half_bright_schema
          - _self_
        name: half_bright
        factor: 0.5
        ''',
    "harness/metrics/darkness.py": '''
        """A new metric: 1 - mean pixel / 255, one value per image and the mean."""
        from harness.metrics.base import Metric
        from harness.stats import mean_ci
        from harness.store.rows import MetricResult


        class Darkness(Metric):
            name = "darkness"

            def reset(self):
                self.values = []

            def process(self, record, sample):
                self.values.append(1.0 - float(sample.image.mean()) / 255)
                return {self.name: self.values[-1]}

            def compute(self):
                mean, low, high = mean_ci(self.values)
                return [MetricResult(self.name, mean, len(self.values), low, high, definition="1 - mean pixel / 255")]
        ''',
    "conf/metric/darkness.yaml": '''
        darkness: {}
        ''',
    "harness/data/three_animals.py": '''
        """A new dataset: three fixed prompts."""
        from harness.data.prompts import PromptRecord, PromptSet, validate_prompt_set


        def build_three_animals(dataset_cfg):
            records = [PromptRecord(f"animal-{i}", f"a photo of a {animal}", i, {"nouns": [animal]})
                       for i, animal in enumerate(["cat", "dog", "horse"])]
            return validate_prompt_set(PromptSet("three_animals", records, builder="three_animals"), "three_animals")
        ''',
    "conf/dataset/three_animals.yaml": '''
        defaults:
          - dataset_schema
          - _self_
        name: three_animals
        split: dev
        ''',
    "harness/models/tiny_wide.py": '''
        """A new model: the tiny random pipeline under its own name (its config picks other weights)."""
        from dataclasses import replace

        from harness.models.loader import load_tiny_random


        def load_tiny_wide(model_cfg):
            return replace(load_tiny_random(model_cfg), name="tiny_wide")
        ''',
    "conf/model/tiny_wide.yaml": '''
        defaults:
          - model_schema
          - _self_
        name: tiny_wide
        weights_seed: 7
        height: 32
        width: 32
        ''',
}


@pytest.fixture
def scratch_repo(tmp_path):
    """harness/ and conf/ copied, then the four modules and four config files written."""
    root = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("harness", "conf"):
        shutil.copytree(REPO_ROOT / folder, root / folder, ignore=ignore)
    for relative, text in FILES.items():
        assert not (root / relative).exists(), f"{relative} exists already: pick another name"
        (root / relative).write_text(textwrap.dedent(text).lstrip())
    return root


@pytest.mark.slow
def test_a_method_metric_dataset_and_model_are_one_module_and_one_config_each(scratch_repo, tmp_path):
    def run(run_dir, *extra):
        command = [sys.executable, "-c", "import sys; from harness.cli import main; sys.exit(main(sys.argv[1:]))",
                   "run", "experiment=smoke", "method=half_bright", "metric=[mean_intensity,darkness]",
                   "dataset=three_animals", "model=tiny_wide", "generation.steps=1", "generation.batch_size=3",
                   f"store.root={tmp_path / 'store'}", f"hydra.run.dir={run_dir}", *extra]
        done = subprocess.run(command, cwd=scratch_repo, capture_output=True, text=True, timeout=600,
                              env={"PYTHONPATH": str(scratch_repo), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                   "HOME": str(tmp_path)})
        assert done.returncode == 0, done.stderr[-3000:]
        return pd.read_parquet(run_dir / "rows.parquet")

    rows = run(tmp_path / "run")
    assert set(rows["method"]) == {"half_bright"} and set(rows["model"]) == {"tiny_wide"}
    assert set(rows["dataset"]) == {"three_animals"} and rows["hp.factor"].eq(0.5).all()
    per_sample = rows[rows["level"] == "sample"].pivot(index="sample_id", columns="metric", values="value")
    assert sorted(per_sample.index) == ["animal-0", "animal-1", "animal-2"]
    # the new metric agrees with the built-in one on every image: darkness = 1 - mean intensity
    pd.testing.assert_series_equal(per_sample["darkness"], 1 - per_sample["mean_intensity"], check_names=False,
                                   atol=1e-9, rtol=0)
    # the new method's option works: the same images unscaled are twice as bright (up to rounding)
    unscaled = run(tmp_path / "run1", "method.factor=1.0")
    unscaled = unscaled[unscaled["level"] == "sample"].pivot(index="sample_id", columns="metric", values="value")
    assert ((per_sample["mean_intensity"] - 0.5 * unscaled["mean_intensity"]).abs() <= 0.5 / 255).all()
