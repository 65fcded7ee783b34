"""Shared fixtures: Hydra composition against conf/, and isolated output and cache folders."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import CAPTIONS, write_captions
from omegaconf import OmegaConf
from threadpoolctl import threadpool_limits

from harness.bench import torch_threads

# One thread: the tiny models' ops are too small to gain from more, and extra threads only
# contend on a shared machine (was tests/emerdiff/conftest.py's, at import).
torch.set_num_threads(1)
threadpool_limits(1)

# Tests must never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "conf"


@pytest.fixture
def compose():
    """compose(overrides) -> the run config, as `harness run` builds it (harness.compose.compose)."""
    from harness.compose import compose as compose_config

    def _compose(overrides: list[str] | None = None):
        return compose_config(list(overrides or []))

    return _compose


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    """A private sample cache for one test."""
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def _private_hash_index(tmp_path_factory, monkeypatch):
    """Weight-file digests are remembered in a per-test index, never in the user's ~/.cache."""
    monkeypatch.setenv("HARNESS_HASH_INDEX", str(tmp_path_factory.mktemp("hash_index") / "file_sha256.jsonl"))


@pytest.fixture(autouse=True)
def _fresh_shared_models(monkeypatch):
    """Models shared through harness.registry.load_once are shared within a test, not across
    tests (a test may swap a module for a stand-in under the same name)."""
    import harness.registry

    monkeypatch.setattr(harness.registry, "LOADED", {})


# ---- DAAM (one thread for the session; tiny_random pipelines)

@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models run several times faster on one thread on a shared 2-core machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny():
    from harness.models.tiny import build_tiny_random

    return build_tiny_random()


@pytest.fixture(scope="session")
def tiny_pag(tiny):
    from harness.methods.daam import pag_pipeline

    return pag_pipeline(tiny, ["mid"])


# ---- DAAM data (a COCO-format captions file)

@pytest.fixture
def captions_file(tmp_path: Path) -> Path:
    return write_captions(tmp_path / "captions_val2014.json")


@pytest.fixture
def captions_writer():
    """write_captions(path, captions=CAPTIONS) -> path, and the default CAPTIONS."""
    return SimpleNamespace(write=write_captions, captions=CAPTIONS)


# ---- EmerDiff (its tiny model, a synthetic image set, the method)

@pytest.fixture(scope="session")
def emerdiff_tiny_model():
    from harness.models.loader import LoadedModel
    from harness.models.tiny import build_tiny_random

    pipeline = build_tiny_random()
    return LoadedModel("tiny_random", pipeline, "tiny-test", torch.device("cpu"), torch.float32, 32, 32)


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory):
    from harness.data.image_sets import build_synthetic_segments

    folder = tmp_path_factory.mktemp("synthetic")
    return build_synthetic_segments(SimpleNamespace(seed=0, size=3, path=str(folder), params={}))


@pytest.fixture(scope="session")
def make_method(emerdiff_tiny_model):
    """make_method(**options) -> an EmerDiff on tiny_random with a 4-step grid and 3 clusters."""
    from harness.methods.base import GenerationSettings
    from harness.methods.emerdiff import EmerDiff
    from harness.schemas.emerdiff import EmerDiffConfig

    def _make(**options):
        settings = {"inversion_steps": 4, "clusters": 3, "kmeans_restarts": 1, "gaussian_sigma": 1.0, **options}
        return EmerDiff(EmerDiffConfig(**settings), emerdiff_tiny_model, GenerationSettings(4, 1.0, 32, 32, "", 1))

    return _make


# ---- PAG (the tiny model, settings, method configs)

TINY_MODEL_CFG = {"name": "tiny_random", "architecture": {}, "weights_seed": 0, "device": "cpu", "dtype": "float32",
                  "scheduler": None, "height": 32, "width": 32}


@pytest.fixture(scope="session")
def tiny_model():
    from harness.models.loader import load_tiny_random

    return load_tiny_random(OmegaConf.create(TINY_MODEL_CFG))


@pytest.fixture
def settings():
    from harness.methods.base import GenerationSettings

    def make(guidance_scale: float = 3.0, steps: int = 2):
        return GenerationSettings(steps=steps, guidance_scale=guidance_scale, height=32, width=32,
                                  negative_prompt="", batch_size=2)

    return make


@pytest.fixture
def method_cfg():
    """method_cfg(name, **overrides): a method config as Hydra composes it (schema defaults + overrides)."""
    from harness.schemas.guidance import CFGConfig, CFGPAGConfig, PAGConfig, PlainConfig

    def make(name: str, **overrides):
        schema = {"plain": PlainConfig, "cfg": CFGConfig, "pag": PAGConfig, "cfg_pag": CFGPAGConfig}[name]
        return OmegaConf.merge(OmegaConf.structured(schema), overrides)

    return make
