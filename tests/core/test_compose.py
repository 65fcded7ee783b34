"""One meaning per config: the CLI, the Python API, the tests and the bench compose through
:func:`harness.compose.compose`, and the run applies ``selection.chosen`` itself."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

import harness.run
from harness import cli
from harness.compose import compose, resolve_run_config
from harness.errors import ConfigError

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize(("overrides", "message"), [
    (["experiment=daam_tyo"], "experiment=daam_tyo: no such experiment (conf/experiment/daam_tyo.yaml). "
                              "Did you mean 'daam_toy'?"),
    (["method=pgg"], "method=pgg: no such method (conf/method/pgg.yaml). Did you mean 'pag'?"),
    (["metric=[mioo]"], "metric=mioo: no such metric (conf/metric/mioo.yaml). Did you mean 'miou'?"),
    (["generation.stpes=4"], "generation.stpes: no such key. Did you mean 'generation.steps'?"),
    # Hydra alone accepts a `+` append to a typed node without a word: the schema check refuses it
    (["+generation.stpes=4"], "generation.stpes: no such key in GenerationConfig. Did you mean 'generation.steps'?"),
    (["+model.pathh=x"], "model.pathh: no such key in ModelConfig. Did you mean 'model.path'?"),
    (["experiment=pag_toy", "+method.pag_scal=2"],
     "method.pag_scal: no such key in CFGPAGConfig. Did you mean 'method.pag_scale'?"),
    # the metric group's schema is each metric's signature
    (["experiment=daam_toy", "+metric.miou.treshold=0.3"],
     "metric.miou.treshold: miou takes no option 'treshold'. Did you mean 'metric.miou.threshold'?"),
    (["+metric.mioo={}"], "metric.mioo: no such metric. Did you mean 'miou'?"),
])
def test_typos_stop_with_one_line_and_the_closest_match(overrides, message):
    with pytest.raises(ConfigError) as caught:
        compose(overrides)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_every_metric_option_file_passes_its_schema_and_a_wrong_option_fails():
    metrics = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "metric").glob("*.yaml"))
    assert len(metrics) >= 26
    cfg = compose([f"metric=[{','.join(metrics)}]"])
    assert sorted(cfg.metric) == sorted(OmegaConf.to_container(cfg.metric))  # composed and checked
    for name in metrics:
        with pytest.raises(ConfigError, match=rf"^metric\.{name}\.no_such_option: {name} takes no option"):
            compose([f"metric=[{name}]", f"+metric.{name}.no_such_option=1"])


def test_selection_is_applied_by_the_run_from_python_as_from_the_cli():
    cfg = compose(["experiment=pag_toy"])
    chosen = {e["key"]: e["value"] for e in OmegaConf.to_container(cfg.selection.chosen)}
    assert chosen["method.pag_scale"] == 1.5 and cfg.method.pag_scale == 3.0  # composed, not yet resolved
    assert resolve_run_config(cfg).method.pag_scale == 1.5
    # a value the user sets wins over the chosen one
    assert resolve_run_config(compose(["experiment=pag_toy", "method.pag_scale=2.5"])).method.pag_scale == 2.5


def test_smoke_applies_the_experiments_smoke_overrides():
    base = compose(["experiment=unclip_variations"])
    assert base.model.name != "tiny_karlo" and "model=tiny_karlo" in base.smoke_overrides
    smoke = compose(["experiment=unclip_variations", "smoke=true"])
    assert smoke.model.name == "tiny_karlo"
    # the user's own override still wins over a smoke override
    assert compose(["experiment=unclip_variations", "smoke=true", "dataset.size=1"]).dataset.size == 1


def _cli_config(monkeypatch, tmp_path, overrides: list[str]):
    """The config ``harness run OVERRIDES`` hands to the run, resolved as the run resolves it."""
    seen = []

    def record(cfg, run_dir, cwd=None):
        seen.append(resolve_run_config(cfg))
        return harness.run.RunOutcome(pd.DataFrame(), Path(run_dir), 0, 0)

    monkeypatch.setattr(harness.run, "run_experiment", record)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", *overrides, f"hydra.run.dir={tmp_path / 'run'}", "hydra.mode=RUN"]) == 0
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_the_config_from_run_experiment_equals_the_clis(monkeypatch, tmp_path, experiment):
    overrides = [f"experiment={experiment}"]
    from_cli = _cli_config(monkeypatch, tmp_path, overrides)
    from_api = resolve_run_config(compose(overrides))
    assert OmegaConf.to_container(from_cli) == OmegaConf.to_container(from_api)


def test_the_smoke_config_from_run_experiment_equals_the_clis(monkeypatch, tmp_path):
    overrides = ["experiment=unclip_variations", "smoke=true"]
    from_cli = _cli_config(monkeypatch, tmp_path, overrides)
    assert from_cli.model.name == "tiny_karlo"
    assert OmegaConf.to_container(from_cli) == OmegaConf.to_container(resolve_run_config(compose(overrides)))


def test_run_dir_of_a_sweep_experiment_becomes_its_sweep_folder(capsys):
    args = cli.prepare_run_arguments(["experiment=daam_toy", "hydra.run.dir=out/x"])
    assert "hydra.sweep.dir=out/x" in args
    assert "hydra.sweep.dir=out/x" in " ".join(cli.prepare_run_arguments(["-m", "experiment=smoke", "seed=0,1",
                                                                          "hydra.run.dir=out/x"]))
    assert "is a sweep" in capsys.readouterr().out
    # a single run keeps hydra.run.dir as it is
    assert cli.prepare_run_arguments(["experiment=smoke", "hydra.run.dir=out/x"]) == ["experiment=smoke",
                                                                                      "hydra.run.dir=out/x"]


def test_baseline_names_and_options_are_checked_at_compose_time():
    assert "toy_segmenter" in compose(["experiment=daam_toy"]).baseline
    with pytest.raises(ConfigError, match=r"^baseline\.toy_segmentr: no such baseline\. Did you mean 'toy_segmenter'\?$"):
        compose(["experiment=daam_toy", "+baseline.toy_segmentr={}"])
    with pytest.raises(ConfigError, match=r"^baseline\.kmeans_oracle_hungarian\.cluster: .*Did you mean "
                                          r"'baseline\.kmeans_oracle_hungarian\.clusters'\?$"):
        compose(["experiment=daam_toy", "+baseline.kmeans_oracle_hungarian.cluster=3"])


def test_the_users_overrides_win_over_smoke_overrides_they_touch():
    from harness.compose import with_smoke_overrides

    smoke = ["model=tiny_random", "model.scheduler=null", "~metric.inception_score", "dataset.size=2"]
    assert with_smoke_overrides(["experiment=x", "model=sd15", "metric.inception_score.splits=1", "smoke=true"],
                                smoke) == ["experiment=x", "dataset.size=2", "model=sd15",
                                           "metric.inception_score.splits=1", "smoke=true"]
    # a key inside the model group keeps the real model (a stand-in folder run in smoke mode)
    assert with_smoke_overrides(["experiment=x", "model.path=/w", "smoke=true"], smoke)[1:3] == [
        "model.scheduler=null", "~metric.inception_score"]
    cfg = compose(["experiment=daam_coco", "smoke=true", "model.path=/nowhere"])
    assert cfg.model.name == "sd2_base" and cfg.model.path == "/nowhere" and cfg.generation.height == 32
