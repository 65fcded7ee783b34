
import pytest

from harness import REPO_ROOT
from harness.errors import ConfigError

EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml"))


def test_default_config_composes_with_schema_types(compose):
    cfg = compose([])
    assert cfg.model.name == "tiny_random"
    assert cfg.method.name == "generate"
    assert isinstance(cfg.seed, int)
    assert cfg.generation.steps == 30


def test_experiment_overrides_the_defaults(compose):
    cfg = compose(["experiment=smoke"])
    assert cfg.experiment == "smoke"
    assert cfg.generation.steps == 4


def test_wrong_type_fails_at_compose_time(compose):
    with pytest.raises(ConfigError, match=r"seed=abc: Value 'abc' of type 'str' could not be converted to Integer"):
        compose(["seed=abc"])


def test_misspelt_key_fails_at_compose_time(compose):
    with pytest.raises(ConfigError, match=r"^generation.stepz: no such key. Did you mean 'generation.steps'\?$"):
        compose(["generation.stepz=3"])


def test_wrong_type_in_a_group_schema_fails(compose):
    with pytest.raises(ConfigError, match="guidance_scale=strong.*Float"):
        compose(["generation.guidance_scale=strong"])


def test_unknown_group_option_lists_available_options(compose):
    with pytest.raises(ConfigError, match="^model=not_a_model: no such model .*Known: .*tiny_random"):
        compose(["model=not_a_model"])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(compose, experiment):
    cfg = compose([f"experiment={experiment}"])
    assert cfg.experiment == experiment, "an experiment file must set its own name"
