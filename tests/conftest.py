"""Shared fixtures: Hydra composition against conf/, and isolated output and cache folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
