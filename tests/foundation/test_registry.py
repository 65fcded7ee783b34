import sys

import pytest

from harness.registry import MODELS, Registry, UnknownNameError


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


def test_decorator_registration():
    registry = Registry("thing")

    @registry.register("double")
    def double(x):
        return 2 * x

    assert registry.get("double")(4) == 8


def test_builtin_catalogue_has_the_foundation_models():
    for name in ("tiny_random", "toy", "sd15", "sd2_base", "sd21_base", "sdxl_base"):
        assert name in MODELS
