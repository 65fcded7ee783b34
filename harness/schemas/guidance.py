"""Hyperparameters of the guidance methods: ``plain``, ``cfg``, ``pag``, ``cfg_pag``, ``guider``.

The classifier-free guidance scale is ``generation.guidance_scale`` (shared by every method);
``plain`` and ``pag`` switch CFG off (scale 1), ``plain`` and ``cfg`` switch PAG off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class GuiderConfig(PlainConfig):
    """Any guider of ``diffusers.guiders`` by class name (harness/methods/guiders.py)."""

    name: str = "guider"
    #: a class of diffusers.guiders, e.g. ClassifierFreeGuidance, PerturbedAttentionGuidance,
    #: SmoothedEnergyGuidance, AdaptiveProjectedGuidance, TangentialClassifierFreeGuidance ...
    guider: str = "ClassifierFreeGuidance"
    #: the guider's own constructor arguments, passed through (guidance_scale defaults to
    #: generation.guidance_scale), e.g. {perturbed_guidance_scale: 3.0}
    params: dict[str, Any] = field(default_factory=dict)
    #: the guidance interval, as fractions of the steps (every guider has one)
    start: float = 0.0
    stop: float = 1.0
    #: hook-based guiders (PAG, SEG, SLG, AutoGuidance): the transformer blocks they perturb,
    #: '<module list>.<index>'; the default is the UNet mid block's (the PAG paper's layer)
    layers: list[str] = field(default_factory=lambda: ["mid_block.attentions.0.transformer_blocks.0"])
    #: equal cost: network calls per image; the steps become the most that fit (declared rule,
    #: harness.methods.guiders.steps_for_budget); null = generation.steps
    budget_calls: int | None = None


add_schema("method", "guider_schema", GuiderConfig)
