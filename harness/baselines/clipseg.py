"""``clipseg``: CLIPSeg (Lüddecke and Ecker, CVPR 2022), an open-vocabulary text-prompted segmenter.

Each word is a text query on the image (``prompt_template``, default ``"{word}"``, as the DAAM
reference's ``compute_mask.py`` does); the logits' sigmoid is the word's map. With
``binarize=0.5`` (default, the reference's setting) the stored map is the 0/1 mask
``sigmoid > 0.5``; with ``binarize=None`` the probabilities are stored and the metric's
min-max normalisation and threshold apply. Maps are at CLIPSeg's output resolution (352x352 for
``CIDAS/clipseg-rd64-refined``); the metric upsamples them to the ground-truth size.

Weights are loaded offline only (``local_files_only=True``): from ``path`` (a folder written by
``save_pretrained`` holding the model and its processor) or from the Hugging Face cache
(``model_id``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.baselines.segmentation import WordMapBaseline, image_of, words_of
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, MissingWeightsError
from harness.store.samples import Sample

DEFAULT_MODEL_ID = "CIDAS/clipseg-rd64-refined"


def load_clipseg(path: str | None, model_id: str) -> tuple[Any, Any]:
    """(processor, model) from ``path`` or the offline cache; :class:`MissingWeightsError` when absent."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    source = path or model_id
    try:
        processor = CLIPSegProcessor.from_pretrained(source, local_files_only=True)
        network = CLIPSegForImageSegmentation.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as error:
        try:
            from huggingface_hub.constants import HF_HUB_CACHE
        except ImportError:  # pragma: no cover
            HF_HUB_CACHE = "~/.cache/huggingface/hub"
        where = f"the folder {path}" if path else f"the Hugging Face cache {HF_HUB_CACHE} (model id {model_id}, local_files_only=True)"
        raise MissingWeightsError(
            f"CLIPSeg weights were not found in {where} ({type(error).__name__}). Provide them: on a machine with "
            f"network access run `huggingface-cli download {model_id}` and copy the cache folder here, or save "
            f"`CLIPSegProcessor` and `CLIPSegForImageSegmentation.from_pretrained('{model_id}')` with "
            "save_pretrained(DIR) and set baseline.clipseg.path=DIR."
        ) from None
    return processor, network.eval()


class ClipSeg(WordMapBaseline):
    """Open-vocabulary baseline: one CLIPSeg query per word (see the module docstring)."""

    name = "clipseg"
    version = "1"

    def __init__(self, model=None, path: str | None = None, model_id: str = DEFAULT_MODEL_ID,
                 binarize: float | None = 0.5, prompt_template: str = "{word}", batch_size: int = 8,
                 device: str | None = None) -> None:
        if "{word}" not in prompt_template:
            raise ConfigError(f"baseline.clipseg.prompt_template must contain {{word}}, got {prompt_template!r}.")
        if binarize is not None and not 0.0 < float(binarize) < 1.0:
            raise ConfigError(f"baseline.clipseg.binarize must be in (0, 1) or null, got {binarize}.")
        super().__init__(model, path=path, model_id=model_id, binarize=None if binarize is None else float(binarize),
                         prompt_template=prompt_template)
        import torch

        self.binarize = None if binarize is None else float(binarize)
        self.prompt_template = prompt_template
        self.batch_size = max(1, int(batch_size))
        self.processor, self.network = load_clipseg(path, model_id)
        self.device = torch.device(device) if device else getattr(model, "device", None) or torch.device("cpu")
        self.network.to(self.device)

    def probabilities(self, image: np.ndarray, queries: list[str]) -> np.ndarray:
        """(len(queries), h, w) sigmoid maps for one uint8 RGB image."""
        import torch
        from PIL import Image

        pil = Image.fromarray(image)
        out = []
        for start in range(0, len(queries), self.batch_size):
            chunk = queries[start:start + self.batch_size]
            inputs = self.processor(text=chunk, images=[pil] * len(chunk), padding=True, return_tensors="pt")
            inputs = {key: value.to(self.device) for key, value in inputs.items()}
            with torch.inference_mode():
                logits = self.network(**inputs).logits
            # CLIPSeg squeezes the batch axis for a single query in some versions: restore it.
            out.append(torch.sigmoid(logits.float()).reshape(len(chunk), *logits.shape[-2:]).cpu().numpy())
        return np.concatenate(out, axis=0)

    def predict(self, record: PromptRecord, sample: Sample) -> Sample:
        words = words_of(record, sample)
        probabilities = self.probabilities(image_of(record, sample), [self.prompt_template.format(word=w) for w in words])
        maps = {}
        for word, probability in zip(words, probabilities, strict=True):
            maps[word] = (probability > self.binarize).astype(np.float32) if self.binarize is not None else probability
        return self.prediction(record, sample, maps)
