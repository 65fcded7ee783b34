"""Short fingerprints of every method's and baseline's output on ``tiny_random``, pinned beside their ``version``.

A sample's content address holds its method's ``version``, so a change of a method's numbers
without a version bump would let old cached samples pass for new ones. ``tests/fingerprints.json``
pins, per method and per baseline, the version and a fingerprint of its outputs in small smoke
runs (images, heat maps, difference maps, segmentations); ``test_method_fingerprints.py`` fails
with "output changed: bump <name>.version" when they drift apart.

Each producer's entry holds its ``version``, a ``fingerprint`` and ``stats``:

- ``fingerprint``: the first 12 hex digits of the SHA-256 of its outputs (samples in record order;
  uint8 arrays as they are, float arrays rounded to 4 decimals). Equal fingerprints: unchanged.
- ``stats``: per output array, the mean, standard deviation and four projections onto fixed +-1
  patterns divided by sqrt(size) (uint8 images scaled to [0, 1]). They decide when fingerprints
  differ, which float rounding on another machine (other BLAS, CPU) can cause: the outputs
  count as unchanged when every statistic is within ``TOLERANCE`` = 1e-3. Rounding noise of 1e-6
  per value moves them by about 1e-6; one uint8 pixel off by one level moves a projection by
  0.004/sqrt(pixels), 7e-5 on a 32x32 image, so a dozen such flips lined up with a pattern stay
  inside; a real change moves them further (cfg vs cfg_pag on tiny_random, whose PAG effect is
  slight: up to 0.006 and 0.034 on the two images).

The runs use one torch thread and ``torch.use_deterministic_algorithms(True)``.

Refresh after bumping a version (only the runs that produce the named producers are run, and only
their entries are rewritten)::

    PYTHONPATH=. python tests/models/method_fingerprints.py --refresh daam cfg_pag
    PYTHONPATH=. python tests/models/method_fingerprints.py --refresh --all
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from harness import REPO_ROOT

FINGERPRINT_FILE = REPO_ROOT / "tests" / "fingerprints.json"
TOLERANCE = 1e-3
DECIMALS = 4
PROJECTIONS = 4
#: the smoke runs that produce every method's and baseline's outputs (all on tiny_random); a change
#: here changes the inputs, so refresh every entry it touches (``--refresh --all``)
RUNS: list[list[str]] = [
    *[["experiment=smoke", f"method={name}", "dataset.size=2", "generation.steps=2"]
      for name in ("generate", "plain", "cfg", "pag", "cfg_pag")],
    # inputs stated here, not inherited, so an edit of an experiment's defaults does not move the pins
    ["experiment=daam_toy", "model=tiny_random", "dataset.split=test", "dataset.seed=0", "dataset.size=2",
     "generation.steps=2", "generation.guidance_scale=5.0", "generation.batch_size=2"],
    ["experiment=emerdiff_cocostuff", "model=tiny_random", "dataset=synthetic_segments", "smoke=true",
     "method.save_difference_maps=true"],
    # Mask R-CNN with random weights (no weight file here): pins its detection -> word map path
    ["experiment=smoke", "method=generate", "dataset.size=2", "generation.steps=2",
     "+baseline.maskrcnn={weights: random, min_size: 64, max_size: 64}"],
    ["experiment=daam_pos_toy", "model=tiny_random", "dataset.split=test", "dataset.seed=0", "dataset.size=2",
     "generation.steps=2", "generation.batch_size=2"],
    ["experiment=entanglement_adjective_toy", "model=tiny_random", "dataset.split=test", "dataset.seed=0",
     "dataset.size=2", "generation.steps=2", "generation.batch_size=2"],
    *[[f"experiment=unclip_{name}", "model=tiny_karlo", "dataset.size=1", "generation.steps=2"]
      for name in ("variations", "interpolation", "textdiff")],
    ["experiment=unclip_variations", "method=unclip_daam", "model=tiny_karlo", "dataset.size=1", "generation.steps=2",
     "metric=[seconds_per_image]"],
    ["experiment=concept_attention_voc_single", "model=tiny_flux", "dataset=synthetic_concepts", "dataset.size=2",
     "dataset.params.single_class=true", "generation.height=64", "generation.width=64", "method.concept_layers=null"],
]
#: baselines that need weights this machine does not have (fingerprinted where they run)
NOT_RUN_HERE = {"clipseg": "CLIPSeg weights", "detectron2": "detectron2 + weights"}


def array_stats(array: np.ndarray) -> list[float]:
    """mean, std and :data:`PROJECTIONS` fixed +-1 projections (normalised by size) of ``array``."""
    values = np.asarray(array)
    if values.dtype == np.uint8:
        values = values.astype(np.float64) / 255.0
    values = values.astype(np.float64).ravel()
    if values.size == 0:
        return [0.0] * (2 + PROJECTIONS)
    signs = np.random.default_rng(values.size).choice([-1.0, 1.0], size=(PROJECTIONS, values.size))
    # Normalised by sqrt(size): independent rounding noise stays at its per-value size, while a
    # change spread over many values adds up (a mean would dilute it by the size).
    return [float(values.mean()), float(values.std()), *(signs @ values / np.sqrt(values.size)).tolist()]


def producer_stats(samples: list[Any]) -> dict[str, list[float]]:
    """Statistics of each output (image, every array) of one producer's samples, in their given order."""
    stats: dict[str, list[float]] = {}
    for index, sample in enumerate(samples):
        if sample.image is not None:
            stats[f"{index}:image"] = array_stats(sample.image)
        for name in sorted(sample.arrays):
            stats[f"{index}:{name}"] = array_stats(sample.arrays[name])
    return stats


def exact_hex(samples: list[Any]) -> str:
    """First 12 hex digits of the SHA-256 of the outputs: uint8 arrays as they are, floats rounded
    to :data:`DECIMALS` decimals (so the last bits of float noise do not count)."""
    digest = hashlib.sha256()
    for sample in samples:
        outputs = ([("image", sample.image)] if sample.image is not None else []) + sorted(sample.arrays.items())
        for name, array in outputs:
            array = np.asarray(array)
            if array.dtype.kind == "f":
                array = np.round(array.astype(np.float64), DECIMALS) + 0.0  # + 0.0: no negative zero
            digest.update(name.encode() + str(array.shape).encode() + np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:12]


def differences(pinned: dict[str, list[float]], current: dict[str, list[float]]) -> list[str]:
    """Outputs whose statistics differ by more than :data:`TOLERANCE` (or appear / disappear)."""
    changed = sorted(set(pinned) ^ set(current))
    for name in sorted(set(pinned) & set(current)):
        if len(pinned[name]) != len(current[name]) or not np.allclose(pinned[name], current[name], rtol=0, atol=TOLERANCE):
            changed.append(name)
    return changed


def _compose(overrides: list[str]):
    """The run config of ``overrides`` (harness.compose, as every entry point), without the
    experiment's ``selection.chosen``: the pins state their inputs, so a new selection on dev
    does not move them."""
    from omegaconf import open_dict

    from harness.compose import compose

    cfg = compose(overrides)
    with open_dict(cfg):
        cfg.selection.pop("chosen", None)
    return cfg


def producers_of(overrides: list[str]) -> set[str]:
    """The method and baselines one fingerprint run produces (from its composed config, nothing run)."""
    cfg = _compose(overrides)
    return {str(cfg.method.name), *(str(name) for name in (cfg.get("baseline") or {}))}


def compute_all(workdir: str | Path, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{producer: {"kind", "version", "fingerprint", "stats"}}`` for every method and baseline the
    smoke runs exercise; with ``names``, only the runs that produce one of them are run."""
    import torch

    from harness.registry import BASELINES, METHODS
    from harness.run import run_experiment
    from harness.store.samples import SampleStore

    workdir = Path(workdir)
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    results: dict[str, dict[str, Any]] = {}
    try:
        for number, overrides in enumerate(RUNS):
            if names is not None and not producers_of(overrides) & set(names):
                continue
            store_root = workdir / f"store{number}"
            cfg = _compose([*overrides, f"store.root={store_root}", "model.device=cpu", "figures=false"])
            run_experiment(cfg, workdir / f"run{number}")
            store = SampleStore(store_root)
            by_producer: dict[tuple[str, str], list[tuple[str, Any]]] = {}
            record_of: dict[str, str] = {}
            entries = []
            for meta_path in store.root.glob("??/*/meta.json"):
                doc = json.loads(meta_path.read_text())
                entries.append((doc["key"], doc["spec"] or {}))
                if "method" in (doc["spec"] or {}):
                    record_of[doc["key"]] = doc["meta"].get("record_id", "")
            for key, spec in entries:
                if "baseline" in spec:
                    producer = ("baseline", spec["baseline"])
                    order = record_of.get(spec["of"], "")
                else:
                    producer = ("method", spec["method"])
                    order = record_of.get(key, "")
                by_producer.setdefault(producer, []).append((order, store.get(key)))
            for (kind, name), items in by_producer.items():
                version = (METHODS if kind == "method" else BASELINES).get(name).version
                ordered = [sample for _, sample in sorted(items, key=lambda item: item[0])]
                results[name] = {"kind": kind, "version": str(version), "fingerprint": exact_hex(ordered),
                                 "stats": producer_stats(ordered)}
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.set_num_threads(previous_threads)
    return results


def load_pinned() -> dict[str, dict[str, Any]]:
    return json.loads(FINGERPRINT_FILE.read_text()) if FINGERPRINT_FILE.is_file() else {}


def write_pinned(pinned: dict[str, dict[str, Any]]) -> None:
    text = json.dumps(dict(sorted(pinned.items())), indent=1, sort_keys=True) + "\n"
    temporary = FINGERPRINT_FILE.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, FINGERPRINT_FILE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check or refresh tests/fingerprints.json.")
    parser.add_argument("names", nargs="*", help="methods/baselines to refresh (after bumping their version)")
    parser.add_argument("--refresh", action="store_true", help="rewrite the named entries (or all with --all)")
    parser.add_argument("--all", action="store_true")
    options = parser.parse_args(argv)
    only = options.names if options.refresh and not options.all else None
    if options.refresh and not options.all and not options.names:
        parser.error("--refresh needs the names to refresh (or --all)")
    with tempfile.TemporaryDirectory() as workdir:
        current = compute_all(workdir, only)  # --refresh NAME: only the runs that produce NAME
    pinned = load_pinned()
    if options.refresh:
        names = sorted(current) if options.all else options.names
        unknown = [n for n in names if n not in current]
        if unknown:
            print(f"not produced by the fingerprint runs: {unknown}; known: {sorted(current)}", file=sys.stderr)
            return 2
        if options.all:
            pinned = {}  # entries of producers no longer run are dropped
        for name in names:
            pinned[name] = current[name]
        write_pinned(pinned)
        print(f"refreshed {names} in {FINGERPRINT_FILE}")
        return 0
    status = 0
    for name, entry in sorted(current.items()):
        old = pinned.get(name)
        changed = ([] if old["fingerprint"] == entry["fingerprint"] else differences(old["stats"], entry["stats"])) \
            if old else ["(not pinned)"]
        print(f"{name}: version {entry['version']} fingerprint {entry['fingerprint']} "
              + ("ok" if not changed else f"CHANGED {changed[:4]}"))
        status |= bool(changed)
    return status


if __name__ == "__main__":
    sys.exit(main())
