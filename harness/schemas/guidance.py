"""Hyperparameters of the guidance methods: ``plain``, ``cfg``, ``pag``, ``cfg_pag``.

The classifier-free guidance scale is ``generation.guidance_scale`` (shared by every method);
``plain`` and ``pag`` switch CFG off (scale 1), ``plain`` and ``cfg`` switch PAG off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.config import MethodConfig, add_schema

#: The self-attention perturbations the PAG methods know (see harness/methods/guidance.py).
PERTURBATIONS = ("identity", "random_mask", "additive_noise", "off_diagonal")


@dataclass
class PlainConfig(MethodConfig):
    """No guidance at all: one UNet branch per step."""

    name: str = "plain"
    #: generate from the empty prompt (unconditional generation); records then only give seeds
    unconditional: bool = False


@dataclass
class CFGConfig(PlainConfig):
    """Classifier-free guidance with ``generation.guidance_scale``."""

    name: str = "cfg"


@dataclass
class PAGConfig(PlainConfig):
    """Perturbed-attention guidance (Ahn et al., ECCV 2024) through diffusers' PAG pipelines."""

    name: str = "pag"
    #: s in eps = eps_c + s (eps_c - eps_perturbed); 0 switches PAG off
    pag_scale: float = 3.0
    #: diffusers' adaptive scale: s_t = max(0, s - pag_adaptive_scale * (1000 - t))
    pag_adaptive_scale: float = 0.0
    #: self-attention layers to perturb: diffusers' patterns (regex searched in module names), e.g. mid, up_blocks.0
    pag_applied_layers: list[str] = field(default_factory=lambda: ["mid"])
    #: identity (the paper's PAG) | random_mask | additive_noise | off_diagonal (the paper's ablation)
    perturbation: str = "identity"
    #: random_mask: probability of masking each off-diagonal entry; additive_noise: std of the
    #: Gaussian noise added to the attention logits; unused by identity and off_diagonal
    perturbation_strength: float = 0.5


@dataclass
class CFGPAGConfig(PAGConfig):
    """CFG and PAG together: batch [uncond, cond, cond-perturbed]."""

    name: str = "cfg_pag"


add_schema("method", "plain_schema", PlainConfig)
add_schema("method", "cfg_schema", CFGConfig)
add_schema("method", "pag_schema", PAGConfig)
add_schema("method", "cfg_pag_schema", CFGPAGConfig)
