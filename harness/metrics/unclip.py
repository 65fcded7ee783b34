"""Metrics of unCLIP's embedding manipulations, on the model's own CLIP image features.

- ``unclip_variations``: ``unclip_diversity`` = mean over pairs of one input's variations of the
  cosine distance (1 - cos) of their CLIP image embeddings; ``unclip_input_similarity`` = mean
  cosine between each variation and its input.
- ``unclip_interpolation``: ``unclip_smoothness`` = mean over consecutive frames of the cosine
  distance of their embeddings (lower is smoother); ``unclip_max_step`` = the largest such jump.
- ``unclip_textdiff``: ``clip_score[step=<theta>]`` = mean cosine between the edit's image embedding
  and the target caption's text embedding (the model's own CLIP, so an optimistic judge), per step
  size; ``clip_score_gain`` = the largest step's score minus the unedited decode's (step 0, same
  noise), paired per image.

One value per input (record); aggregates are means with a 95% percentile bootstrap over inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.data.prompts import PromptRecord
from harness.metrics.base import Metric
from harness.stats import bootstrap_ci
from harness.store.rows import MetricResult
from harness.store.samples import Sample


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _aggregate(name: str, values: list[float], definition: str) -> MetricResult:
    array = np.asarray(values, dtype=float)
    low, high = bootstrap_ci(len(array), lambda index: float(array[index].mean()))
    return MetricResult(name, float(array.mean()), len(array), low, high,
                        definition=f"{definition}; mean over inputs, 95% percentile bootstrap")


class _PerRecord(Metric):
    keys: tuple[str, ...] = ()
    definitions: dict[str, str] = {}

    def reset(self) -> None:
        self.values: dict[str, list[float]] = {}

    def add(self, values: dict[str, float]) -> dict[str, float]:
        for key, value in values.items():
            self.values.setdefault(key, []).append(float(value))
        return values

    def compute(self) -> list[MetricResult]:
        if not any(self.values.values()):
            return self.nothing_to_score(f"no sample holds the arrays of method={self.name} (run that method)")
        return [_aggregate(k, v, self.definitions.get(k.split("[")[0], k)) for k, v in self.values.items() if v]


class UnclipVariationStats(_PerRecord):
    """Diversity within each set of variations and similarity to the input."""

    name = "unclip_diversity"  # the headline row (registered as metric=unclip_variations)
    definitions = {"unclip_diversity": "mean pairwise cosine distance between one input's variations (CLIP image embeddings)",
                   "unclip_input_similarity": "mean cosine similarity between each variation and its input"}

    def process(self, record: PromptRecord, sample: Sample) -> dict[str, float] | None:
        if "variation_embeds" not in sample.arrays:
            return None
        embeds = _unit(sample.arrays["variation_embeds"])
        cos = embeds @ embeds.T
        upper = cos[np.triu_indices(len(embeds), k=1)]
        values = {"unclip_input_similarity": float((embeds @ _unit(sample.arrays["input_embed"])).mean())}
        if upper.size:
            values["unclip_diversity"] = float((1 - upper).mean())
        return self.add(values)


class UnclipSmoothness(_PerRecord):
    """Feature distance between consecutive interpolation frames."""

    name = "unclip_smoothness"  # the headline row (registered as metric=unclip_interpolation)
    definitions = {"unclip_smoothness": "mean cosine distance between consecutive frames' CLIP image embeddings (lower = smoother)",
                   "unclip_max_step": "largest cosine distance between consecutive frames"}

    def process(self, record: PromptRecord, sample: Sample) -> dict[str, float] | None:
        if "frame_embeds" not in sample.arrays:
            return None
        steps = consecutive_distances(sample.arrays["frame_embeds"])
        return self.add({"unclip_smoothness": float(steps.mean()), "unclip_max_step": float(steps.max())})


def consecutive_distances(embeds: np.ndarray) -> np.ndarray:
    """1 - cos between frame k and frame k + 1, for every k."""
    unit = _unit(embeds)
    return 1.0 - (unit[:-1] * unit[1:]).sum(-1)


def textdiff_scores(sample: Sample) -> np.ndarray:
    """Cosine of each edit's image embedding with the target caption's text embedding."""
    edits = np.asarray(sample.arrays["edit_embeds"], dtype=float)
    target = np.asarray(sample.arrays["target_text_embed"], dtype=float)
    edits = edits / np.linalg.norm(edits, axis=1, keepdims=True)
    return edits @ (target / np.linalg.norm(target))


class UnclipTextdiffScore(_PerRecord):
    """CLIP score to the target caption against the text-diff step size."""

    name = "clip_score_gain"  # the headline row (registered as metric=unclip_textdiff)
    definitions = {"clip_score": "cosine between the edit's CLIP image embedding and the target caption's CLIP text embedding",
                   "clip_score_gain": "CLIP score at the largest step minus at step 0 (same image, same noise)"}

    def process(self, record: PromptRecord, sample: Sample) -> dict[str, Any] | None:
        if "edit_embeds" not in sample.arrays:
            return None
        scores = textdiff_scores(sample)
        steps = np.asarray(sample.arrays["step_sizes"], dtype=float)
        values = {f"clip_score[step={s:.2f}]": float(v) for s, v in zip(steps, scores)}
        values["clip_score_gain"] = float(scores[int(steps.argmax())] - scores[int(steps.argmin())])
        return self.add(values)

    def save_figures(self, run_dir: Path, records: list[PromptRecord], samples: Any, rows: Any = None) -> list[Path]:
        """``figures/textdiff_clip_score.png``: CLIP score to the target caption against the step size."""
        written: list[Path] = []
        scores = [textdiff_scores(samples[r.id]) for r in records if r.id in samples and "edit_embeds" in samples[r.id].arrays]
        if scores:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt

            steps = next(samples[r.id] for r in records if r.id in samples).arrays["step_sizes"]
            values = np.asarray(scores)
            figure, axis = plt.subplots(figsize=(4, 3))
            axis.plot(steps, values.T, color="0.8", linewidth=0.8)
            axis.plot(steps, values.mean(0), marker="o", color="C0", label=f"mean of {len(values)}")
            axis.set_xlabel("step size (slerp fraction towards the text diff)")
            axis.set_ylabel("CLIP score to target caption")
            axis.legend(fontsize=7)
            figure.tight_layout()
            path = Path(run_dir) / "figures" / "textdiff_clip_score.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path, dpi=120)
            plt.close(figure)
            written.append(path)
        return written
