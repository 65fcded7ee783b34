"""A benchmark and evaluation harness for attention-based interpretability and guidance
in text-to-image diffusion models."""

from pathlib import Path

__version__ = "0.1.0"

#: The repository root (the harness is installed editable; configs and shipped weights live here).
REPO_ROOT = Path(__file__).resolve().parents[1]
