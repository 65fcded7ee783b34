import sys

import pytest

from harness import REPO_ROOT
from harness.registry import BASELINES, DATASETS, METHODS, METRICS, MODELS, Registry, UnknownNameError


def test_duplicate_names_are_refused():
    registry = Registry("thing")
    registry.register("a", "json:dumps")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", "json:loads")


def test_unknown_name_lists_known_names_and_close_matches():
    registry = Registry("method")
    registry.register("daam", "json:dumps")
    registry.register("emerdiff", "json:loads")
    with pytest.raises(UnknownNameError) as caught:
        registry.get("daaam")
    message = str(caught.value)
    assert "Did you mean 'daam'" in message
    assert "Known methods: daam, emerdiff" in message


def test_entries_are_imported_lazily():
    registry = Registry("thing")
    registry.register("colorsys", "colorsys:rgb_to_hsv")
    sys.modules.pop("colorsys", None)
    assert "colorsys" not in sys.modules
    function = registry.get("colorsys")
    assert "colorsys" in sys.modules
    assert function(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)


def test_an_object_can_stand_in_for_a_name():
    registry = Registry("thing")

    def double(x):
        return 2 * x

    registry.register("double", double)
    assert registry.get("double")(4) == 8
    registry.unregister("double")
    with pytest.raises(UnknownNameError):
        registry.get("double")


GROUPS = {"model": MODELS, "dataset": DATASETS, "method": METHODS, "metric": METRICS}


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_config_file_has_an_entry_and_every_entry_a_config_file(group):
    """conf/<group>/<name>.yaml and the registry name the same things: a config file whose name
    nothing registers, or an entry nobody can select, fails here."""
    conf_names = {path.stem for path in (REPO_ROOT / "conf" / group).glob("*.yaml")}
    assert set(GROUPS[group].names()) == conf_names


@pytest.mark.parametrize("registry", [MODELS, DATASETS, METHODS, METRICS, BASELINES], ids=lambda r: r.kind)
def test_every_entry_resolves_to_what_its_name_says(registry):
    """Each name imports (no dangling "module:attr"), and a method's or baseline's class carries
    the name it is registered under (its rows and cache keys use that name)."""
    for name in registry.names():
        entry = registry.get(name)
        assert callable(entry), name
        if registry in (METHODS, BASELINES):
            assert entry.name == name, f"{registry.kind} {name!r} resolves to {entry.__qualname__} named {entry.name!r}"
