"""One small registry type for models, datasets, methods, metrics and baselines.

Entries are registered either as objects or as lazy ``"module:attr"`` strings, so that
importing the harness does not import torch, diffusers or spaCy until a run needs them.
Duplicate names are refused; an unknown name is answered with the known ones and the closest
matches.

Two ways to add a name, one preferred:

1. by convention (the way): module ``<package>.<name>`` (e.g. ``harness/methods/<name>.py``)
   defining the class whose ``name`` attribute is that name (for datasets: a function
   ``build_<name>`` or ``build``; for models: ``load_<name>`` or ``load``, taking the model config
   and returning a :class:`harness.models.loader.LoadedModel`), beside its config file
   ``conf/<group>/<name>.yaml``; imported on first use;
2. a catalogue line at the bottom of this file (``METHODS.register("<name>", "module:Class")``),
   only where the convention cannot say it: several entries in one module (``cfg``/``pag`` in
   ``guidance.py``) or a name that differs from its module's.

The names of the config group's files (``conf/method/*.yaml``, ...) are listed as known.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from harness.errors import ConfigError, HarnessError

T = TypeVar("T")
log = logging.getLogger(__name__)

#: The key of a metric's or baseline's config entry that marks it optional (not passed to the class).
OPTIONAL_KEY = "optional"


def import_target(target: str) -> Any:
    """The object named by ``"package.module:attribute"``: the harness's one ``module:attr``
    import (registry entries, and every config option that names code). Import errors propagate."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def load_target(spec: str, option: str, choices: str = "") -> Any:
    """:func:`import_target` for a value a user wrote in a config: a malformed or unloadable name
    is one ConfigError naming ``option`` (and ``choices``, when there are built-in names)."""
    if ":" not in str(spec) or not str(spec).partition(":")[2]:
        raise ConfigError(f"{option}={spec!r}: use {choices + ' or ' if choices else ''}'package.module:attribute'.")
    try:
        return import_target(str(spec))
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"{option}={spec!r} cannot be imported ({error}).") from None


def build_plugin(spec: Any, builtin: dict[str, str], option: str, options: dict[str, Any] | None = None,
                 shared: bool = False) -> Any:
    """An instance of a pluggable component named in a config: a built-in name (``builtin`` maps it
    to ``"module:Class"``), any ``"module:Class"``, or an object given directly (tests, notebooks),
    which is returned as is. ``option`` names the config key in error messages. ``shared``: a
    stateless component that loads a model (a judge) is built once per process for the same
    name and options (:func:`load_once`)."""
    if not isinstance(spec, str):
        return spec
    target = load_target(builtin.get(spec, spec), option, ", ".join(builtin))
    options = dict(options or {})
    if not shared:
        return target(**options)
    return load_once(("plugin", builtin.get(spec, spec), repr(sorted(options.items()))), lambda: target(**options))


def check_plugin(spec: Any, builtin: dict[str, str], option: str, options: dict[str, Any] | None = None) -> None:
    """Whether :func:`build_plugin` would succeed, found without loading weights where the component
    says how (a ``check_available(**options)`` static method that looks for its files and raises
    a HarnessError naming what is missing); a component that does not say is built (shared)."""
    if not isinstance(spec, str):
        return
    target = load_target(builtin.get(spec, spec), option, ", ".join(builtin))
    check = getattr(target, "check_available", None)
    if callable(check):
        check(**dict(options or {}))
    else:
        build_plugin(spec, builtin, option, options, shared=True)


def split_options(kind: str, name: str, options: Any) -> tuple[dict[str, Any], bool]:
    """(the class's options, whether the entry is optional) of one ``metric:``/``baseline:`` entry."""
    options = dict(options or {})
    optional = options.pop(OPTIONAL_KEY, False)
    if not isinstance(optional, bool):
        raise ConfigError(f"{kind}.{name}.{OPTIONAL_KEY} must be true or false, got {optional!r}.")
    return options, optional


def check_options(kind: str, name: str, target: Any, options: dict[str, Any], *leading: Any) -> None:
    """A ConfigError listing the accepted options when ``target(*leading, **options)`` would not bind."""
    try:
        inspect.signature(target).bind(*leading, **options)
    except TypeError:
        accepted = [p for p in inspect.signature(target).parameters
                    if p not in ("self", "model", "args", "kwargs", "options")]
        raise ConfigError(f"{kind}.{name} got options {sorted(options)}; it accepts "
                          f"{accepted or 'none'} (and {OPTIONAL_KEY}: true|false).") from None


#: What :func:`load_once` holds (key -> loaded object); tests give each test an empty one.
LOADED: dict[Any, Any] = {}


def load_once(key: Any, loader: Callable[[], T]) -> T:
    """``loader()`` the first time ``key`` is asked for in this process, the same object after:
    each model or judge (CLIP, Mask R-CNN, the toy evaluator) is loaded at most once per process
    and shared by every metric, baseline and run that asks for it. ``key`` names the model and
    everything that changes what is loaded (weights path, device, options)."""
    if key not in LOADED:
        LOADED[key] = loader()
    return LOADED[key]


@dataclass
class Built:
    """What :meth:`Registry.build` made of one config entry."""

    #: the instance, or None when an optional entry could not run
    instance: Any
    options: dict[str, Any]
    optional: bool
    #: why an optional entry did not run (None when it did)
    skipped_reason: str | None = None


class UnknownNameError(HarnessError, KeyError):
    """A name that is not registered. Its message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of lazily imported entries.

    >>> METHODS = Registry("method")
    >>> METHODS.register("daam", "harness.methods.daam:DAAM")
    """

    def __init__(self, kind: str, package: str | None = None, conf_group: str | None = None) -> None:
        self.kind = kind
        #: where a name without a catalogue line is looked for: module ``<package>.<name>``
        self.package = package
        #: the conf/ group whose option files name entries (listed by :meth:`names`)
        self.conf_group = conf_group
        self._entries: dict[str, str | T] = {}

    def register(self, name: str, target: str | T) -> str | T:
        """Register ``target`` under ``name``: a ``"package.module:attribute"`` string, imported on
        first use (the catalogue), or an object (a test's stand-in)."""
        if name in self._entries:
            existing = self._entries[name]
            # Re-registering the very same lazy target (module reloads) is harmless.
            if existing == target or (not isinstance(existing, str) and _qualname(existing) == _qualname(target)):
                return target
            raise ValueError(f"{self.kind} {name!r} is already registered (to {_describe(existing)})")
        self._entries[name] = target
        return target

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a stand-in take it out again); unknown names are ignored."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """Return the entry for ``name``, importing it on first use."""
        if name not in self._entries:
            self._discover(name)
        if name not in self._entries:
            raise UnknownNameError(self._unknown_message(name))
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = import_target(entry)
            self._entries[name] = entry
        return entry

    def build(self, name: str, entry: Any, *leading: Any, check: Callable[[Any], None] | None = None) -> Built:
        """Instantiate config entry ``name`` (its options, or null) as ``cls(*leading, **options)``,
        then run ``check`` on it: the one way metrics and baselines are built from a config.

        A wrong option is a ConfigError. Any other HarnessError (a missing weight file or
        package) propagates, unless the entry says ``optional: true``: then the result has no
        instance and the reason (logged; the runner turns it into rows that say so).
        """
        target = self.get(name)
        options, optional = split_options(self.kind, name, entry)
        check_options(self.kind, name, target, options, *leading)
        try:
            instance = target(*leading, **options)
            if check is not None:
                check(instance)
        except ConfigError:
            raise  # a wrong option is a mistake to fix, optional or not
        except HarnessError as error:
            if not optional:
                raise
            log.warning("%s %s skipped (optional): %s", self.kind, name, error)
            return Built(None, options, optional, str(error))
        return Built(instance, options, optional)

    def _module_name(self, name: str) -> str | None:
        if not self.package or not name.isidentifier():
            return None
        module_name = f"{self.package}.{name}"
        try:
            return module_name if importlib.util.find_spec(module_name) is not None else None
        except ModuleNotFoundError:
            return None

    def _discover(self, name: str) -> None:
        """Register ``name`` from its conventional module, if there is one (see the module docstring)."""
        module_name = self._module_name(name)
        if module_name is None:
            return
        module = importlib.import_module(module_name)
        if name in self._entries:  # the module registered itself
            return
        defined_here = [obj for obj in vars(module).values()
                        if isinstance(obj, type) and obj.__module__ == module.__name__
                        and getattr(obj, "name", None) == name]
        if len(defined_here) == 1:
            self._entries[name] = defined_here[0]
            return
        for attribute in (f"build_{name}", "build", f"load_{name}", "load"):
            if callable(getattr(module, attribute, None)):
                self._entries[name] = getattr(module, attribute)
                return

    def _unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        where = ""
        if self.package and name.isidentifier():
            module = self._module_name(name)
            where = (f" ({module} defines no class with name = {name!r}, and registers nothing under it.)" if module
                     else f" (No catalogue entry in harness/registry.py and no module {self.package}.{name}.)")
        return f"Unknown {self.kind} {name!r}.{hint}{where} Known {self.kind}s: {', '.join(known) or '(none)'}."

    def _conf_names(self) -> set[str]:
        if not self.conf_group:
            return set()
        from harness import REPO_ROOT

        return {path.stem for path in (REPO_ROOT / "conf" / self.conf_group).glob("*.yaml")
                if self._module_name(path.stem) is not None}

    def names(self) -> list[str]:
        """The registered names and those of config files with a conventional module, sorted."""
        return sorted(set(self._entries) | self._conf_names())

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name not in self._entries:
            self._discover(name)
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _describe(entry: Any) -> str:
    return entry if isinstance(entry, str) else _qualname(entry)


MODELS: Registry = Registry("model", package="harness.models", conf_group="model")
DATASETS: Registry = Registry("dataset", package="harness.data", conf_group="dataset")
METHODS: Registry = Registry("method", package="harness.methods", conf_group="method")
METRICS: Registry = Registry("metric", package="harness.metrics", conf_group="metric")
BASELINES: Registry = Registry("baseline", package="harness.baselines")
#: Renderers a data file may name (an image set's ``renderer``): data names a registered entry, never code.
RENDERERS: Registry = Registry("renderer")

# The catalogue: every built-in entry, as lazy "module:attr" strings (nothing is imported here).
MODELS.register("tiny_random", "harness.models.loader:load_tiny_random")
for _name in ("toy", "toy_v1", "sd15", "sd2_base", "sd21_base", "sdxl_base", "sd3_medium", "sd35_medium", "flux_schnell",
              "flux_dev", "toy_mmdit"):
    MODELS.register(_name, "harness.models.loader:load_pretrained")
DATASETS.register("smoke_prompts", "harness.data.prompts:build_smoke_prompts")
DATASETS.register("prompt_manifest", "harness.data.prompts:load_prompt_manifest")
METHODS.register("generate", "harness.methods.generate:Generate")
METHODS.register("daam", "harness.methods.daam:DAAM")
METHODS.register("plain", "harness.methods.guidance:Plain")
METHODS.register("cfg", "harness.methods.guidance:CFG")
METHODS.register("pag", "harness.methods.guidance:PAG")
METHODS.register("cfg_pag", "harness.methods.guidance:CFGPAG")
METHODS.register("guider", "harness.methods.guiders:GuiderSampling")
METHODS.register("concept_attention", "harness.methods.concept_attention:ConceptAttention")
# ConceptAttention's zero-shot segmentation protocol (issue 26) and the in-process MMDiT stand-ins.
DATASETS.register("imagenet_segmentation", "harness.data.concept_sets:build_imagenet_segmentation")
DATASETS.register("voc_concepts", "harness.data.concept_sets:build_voc_concepts")
DATASETS.register("synthetic_concepts", "harness.data.concept_sets:build_synthetic_concepts")
METRICS.register("concept_segmentation", "harness.metrics.concept_segmentation:ConceptSegmentation")
for _name in ("tiny_sd3", "tiny_flux"):
    MODELS.register(_name, "harness.models.loader:load_tiny_mmdit")
METRICS.register("mean_intensity", "harness.metrics.image_stats:MeanIntensity")
METRICS.register("seconds_per_image", "harness.metrics.cost:SecondsPerImage")
METRICS.register("fid", "harness.metrics.fid:FID")
METRICS.register("kid", "harness.metrics.feature_sets:KID")
METRICS.register("prdc", "harness.metrics.feature_sets:PRDC")
METRICS.register("cmmd", "harness.metrics.feature_sets:CMMD")
METRICS.register("fd_dinov2", "harness.metrics.feature_sets:FDDINOv2")
METRICS.register("inception_score", "harness.metrics.inception_score:InceptionScore")
METRICS.register("clip_score", "harness.metrics.clip_score:CLIPScore")
METRICS.register("diversity", "harness.metrics.diversity:Diversity")
METRICS.register("gen_accuracy", "harness.metrics.gen_accuracy:GenAccuracy")
# EmerDiff (issue 4): image sets, method, unsupervised-segmentation metrics, baselines.
DATASETS.register("synthetic_segments", "harness.data.image_sets:build_synthetic_segments")
DATASETS.register("ade20k_style", "harness.data.image_sets:build_ade20k_style")
DATASETS.register("cocostuff27", "harness.data.image_sets:build_cocostuff27")
METHODS.register("emerdiff", "harness.methods.emerdiff:EmerDiff")
METRICS.register("miou_hungarian", "harness.metrics.unsupervised_seg:MiouHungarian")
METRICS.register("pixel_accuracy", "harness.metrics.unsupervised_seg:PixelAccuracy")
BASELINES.register("emerdiff_naive_upsampling", "harness.baselines.emerdiff_baselines:NaiveUpsampling")
BASELINES.register("kmeans_colours", "harness.baselines.emerdiff_baselines:KMeansColours")
# DAAM (issue 3, data/metrics/baselines): COCO-Gen/Unreal-Gen, noun mIoU, segmentation baselines.
DATASETS.register("coco_gen", "harness.data.coco_gen:build_coco_gen")
DATASETS.register("unreal_gen", "harness.data.coco_gen:build_unreal_gen")
METRICS.register("miou", "harness.metrics.miou:NounMIoU")
METRICS.register("miou80", "harness.metrics.miou:Coco80NounMIoU")
# toy-world model quality (experiment=toy_quality)
METRICS.register("gen_accuracy_single", "harness.metrics.toy_quality:GenAccuracySingle")
METRICS.register("gen_accuracy_pair", "harness.metrics.toy_quality:GenAccuracyPair")
METRICS.register("noun_attention_miou", "harness.metrics.toy_quality:NounAttentionMIoU")
METRICS.register("colour_attention_miou", "harness.metrics.toy_quality:ColourAttentionMIoU")
METRICS.register("evaluator_accuracy", "harness.metrics.toy_quality:EvaluatorAccuracy")
METRICS.register("annotator_miou", "harness.metrics.toy_quality:AnnotatorMIoU")
BASELINES.register("whole_image", "harness.baselines.trivial:WholeImage")
BASELINES.register("centre_blob", "harness.baselines.trivial:CentreBlob")
BASELINES.register("kmeans_oracle_hungarian", "harness.baselines.kmeans:KMeansOracleHungarian")
BASELINES.register("kmeans_dataset_hungarian", "harness.baselines.kmeans:KMeansDatasetHungarian")
BASELINES.register("maskrcnn", "harness.baselines.maskrcnn:MaskRCNN")
BASELINES.register("toy_segmenter", "harness.baselines.toy_segmenter:ToySegmenter")
BASELINES.register("clipseg", "harness.baselines.clipseg:ClipSeg")
BASELINES.register("detectron2", "harness.baselines.detectron2_adapter:Detectron2Segmenter")
# Toy world datasets (prompt sets and rendered scenes with exact labels).
DATASETS.register("toy_gen", "harness.data.toy_sets:build_toy_gen")
DATASETS.register("toy_unreal", "harness.data.toy_sets:build_toy_unreal")
DATASETS.register("toy_scenes", "harness.data.toy_sets:build_toy_scenes")
DATASETS.register("toy2_gen", "harness.data.toy2_sets:build_toy2_gen")
DATASETS.register("toy2_scenes", "harness.data.toy2_sets:build_toy2_scenes")
RENDERERS.register("toy_scene", "harness.data.toy_sets:render_toy_scene")
RENDERERS.register("toy2_scene", "harness.data.toy2_sets:render_toy2_scene")
# DAAM analyses (issue 15): part of speech, visuosyntactic relations, cohyponym and adjectival entanglement.
DATASETS.register("toy_cohyponym_pairs", "harness.analysis.datasets:build_toy_cohyponym_pairs")
DATASETS.register("coco_cohyponym_pairs", "harness.analysis.datasets:build_coco_cohyponym_pairs")
DATASETS.register("toy_adjective_swaps", "harness.analysis.datasets:build_toy_adjective_swaps")
DATASETS.register("coco_adjective_swaps", "harness.analysis.datasets:build_coco_adjective_swaps")
METHODS.register("daam_words", "harness.methods.daam_analyses:DAAMWords")
METHODS.register("daam_swap", "harness.methods.daam_analyses:DAAMSwap")
METRICS.register("daam_pos", "harness.metrics.daam_analyses:DaamPOS")
METRICS.register("daam_syntax", "harness.metrics.daam_analyses:DaamSyntax")
METRICS.register("cohyponym_entanglement", "harness.metrics.daam_analyses:CohyponymEntanglement")
METRICS.register("adjective_entanglement", "harness.metrics.daam_analyses:AdjectiveEntanglement")
# DALL-EVAL skills and bias (issue 16).
DATASETS.register("skills_toy_gen", "harness.dalleval.skills_toy:build_skills_toy_gen")
DATASETS.register("skills_toy_unreal", "harness.dalleval.skills_toy:build_skills_toy_unreal")
METRICS.register("skill_accuracy", "harness.metrics.skills:SkillAccuracy")
DATASETS.register("bias_toy", "harness.dalleval.bias_toy:build_bias_toy")
METRICS.register("bias_skew", "harness.metrics.bias:BiasSkew")
# unCLIP (issue 16): models, manipulations, their metrics and toy inputs.
for _name in ("karlo", "sd21_unclip"):
    MODELS.register(_name, "harness.models.unclip:load_unclip")
for _name in ("tiny_karlo", "tiny_sd21_unclip"):
    MODELS.register(_name, "harness.models.unclip:load_tiny_unclip")
METHODS.register("unclip_variations", "harness.methods.unclip:UnclipVariations")
METHODS.register("unclip_interpolation", "harness.methods.unclip:UnclipInterpolation")
METHODS.register("unclip_textdiff", "harness.methods.unclip:UnclipTextdiff")
METRICS.register("unclip_variations", "harness.metrics.unclip:UnclipVariationStats")
METRICS.register("unclip_interpolation", "harness.metrics.unclip:UnclipSmoothness")
METRICS.register("unclip_textdiff", "harness.metrics.unclip:UnclipTextdiffScore")
DATASETS.register("unclip_toy", "harness.dalleval.unclip_toy:build_unclip_toy")
DATASETS.register("skills_jsonl", "harness.dalleval.skills_jsonl:build_skills_jsonl")
DATASETS.register("bias_professions", "harness.dalleval.professions:build_bias_professions")
METHODS.register("unclip_daam", "harness.methods.unclip:UnclipDAAM")
