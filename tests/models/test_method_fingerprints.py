"""A method's (or baseline's) version cannot drift from its numbers: outputs on tiny_random are pinned
in tests/fingerprints.json beside the version (see method_fingerprints.py for the fingerprint and
its tolerance, and for how to refresh the file after bumping a version)."""

from __future__ import annotations

import pytest

from harness.registry import BASELINES, METHODS

from .method_fingerprints import NOT_RUN_HERE, compute_all, differences, load_pinned

REFRESH = "PYTHONPATH=. python tests/models/method_fingerprints.py --refresh {name}"


@pytest.fixture(scope="module")
def current(tmp_path_factory):
    return compute_all(tmp_path_factory.mktemp("fingerprints"))


def check(name: str, pinned: dict, entry: dict) -> str | None:
    """Why ``entry`` (this code's output) disagrees with the pinned one, or None."""
    if entry["version"] != pinned["version"]:
        return (f"{name}.version is {entry['version']} but tests/fingerprints.json pins version {pinned['version']}: "
                f"refresh it with `{REFRESH.format(name=name)}`")
    if entry["fingerprint"] == pinned["fingerprint"]:
        return None
    changed = differences(pinned["stats"], entry["stats"])
    if changed:
        return (f"output changed: bump {name}.version (outputs {changed[:4]} differ from the pinned ones at version "
                f"{pinned['version']}), then `{REFRESH.format(name=name)}`")
    return None  # float rounding of another machine, inside the tolerance


@pytest.mark.slow
def test_every_output_matches_its_pinned_version(current):
    pinned = load_pinned()
    problems = [f"{name} is not pinned: `{REFRESH.format(name=name)}`" for name in sorted(set(current) - set(pinned))]
    problems += [reason for name in sorted(set(current) & set(pinned))
                 if (reason := check(name, pinned[name], current[name]))]
    assert not problems, "\n".join(problems)


def test_every_method_and_baseline_is_pinned():
    pinned = load_pinned()
    assert set(METHODS.names()) <= set(pinned), sorted(set(METHODS.names()) - set(pinned))
    assert set(BASELINES.names()) - set(NOT_RUN_HERE) <= set(pinned)
    for name, entry in pinned.items():
        registry = METHODS if entry["kind"] == "method" else BASELINES
        assert registry.get(name).version == entry["version"], name


def test_the_check_catches_a_change_and_a_version_bump():
    pinned = load_pinned()
    # cfg and cfg_pag differ only by PAG's slight effect on tiny_random: a change of that size fails.
    cfg_as_if_changed = {**pinned["cfg"], "fingerprint": pinned["cfg_pag"]["fingerprint"], "stats": pinned["cfg_pag"]["stats"]}
    assert check("cfg", pinned["cfg"], cfg_as_if_changed).startswith("output changed: bump cfg.version")
    bumped = {**cfg_as_if_changed, "version": "99"}
    assert "refresh it with" in check("cfg", pinned["cfg"], bumped)
    # Rounding noise on another machine (fingerprint differs, statistics within 1e-6) passes.
    noisy = {**pinned["daam"], "fingerprint": "0" * 12,
             "stats": {k: [v + 1e-6 for v in values] for k, values in pinned["daam"]["stats"].items()}}
    assert check("daam", pinned["daam"], noisy) is None


def test_refresh_of_one_name_reruns_only_the_runs_that_produce_it():
    from .method_fingerprints import RUNS, producers_of

    produced = [producers_of(overrides) for overrides in RUNS]
    daam_run = next(i for i, run in enumerate(RUNS) if run[0] == "experiment=daam_toy")
    assert [i for i, names in enumerate(produced) if "daam" in names] == [daam_run]  # the daam_toy run alone
    maskrcnn_run = next(i for i, run in enumerate(RUNS) if any("baseline.maskrcnn" in o for o in run))
    assert [i for i, names in enumerate(produced) if "maskrcnn" in names] == [maskrcnn_run]
    # every pinned producer comes from some run, so every entry can be refreshed on its own
    assert set(load_pinned()) <= set().union(*produced)
