"""The toy v2 instruments by name, their validation, and the evaluator plug-in.

Instruments (each its own network, weights under `weights/toy_v2/<name>/`):

=============  ==============================  ===================  ===================================
name           what it is                      stream               loader
=============  ==============================  ===================  ===================================
`judge`        per-instance detector + caption  `judge_train`        `harness.toy.v2.judge:load_judge`
               check
`features`     SimCLR features, d = 64          `features_train`     `harness.toy.v2.features:load_features`
`annotator`    semantic + instance masks        `annotator_train`    `harness.toy.v2.annotator:load_annotator`
`segmenter`    supervised segmenter baseline    `segmenter_train`    `harness.toy.v2.segmenter:load_segmenter`
=============  ==============================  ===================  ===================================

`load_instrument(name)` loads one; `load_evaluator(device)` is the plug-in of
`harness.metrics.features` (`evaluator_module="harness.toy.v2.instruments"`): FID/KID features from
the feature network, judged accuracy and IS class probabilities from the judge.

Validation (`python -m harness.toy.v2.instruments validate`): every instrument against the exact
truth of `seen` and `unseen` test renders (`harness.toy.splits.eval_indices`), and, given a toy
v2 diffusers folder (`--model`), on *near-truth generations*: the same renders passed through
`StableDiffusionImg2ImgPipeline` with their own captions at low strengths, the render's labels
taken as the truth. Proportions carry 95% Wilson intervals, mIoU a percentile bootstrap over
images. Writes `instruments.json`, `instruments.md` and, with a model, `near_truth_grid.png`
(50 generations, each captioned with every instrument's verdict).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.overlap import confusion_matrix
from harness.stats import bootstrap_ci, proportion_ci
from harness.toy.splits import eval_indices
from harness.toy.v2 import annotator as annotator_module
from harness.toy.v2 import features as features_module
from harness.toy.v2 import judge as judge_module
from harness.toy.v2 import segmenter as segmenter_module
from harness.toy.v2.instrument_common import SEMANTIC_CLASSES, InstrumentPool, truth_pool
from harness.toy.v2.splits import scene_for_index
from harness.toy.v2.world import MAX_COUNT, OBJECT_COLOURS, SHAPES, SIZES, TEXTURES, Scene, caption

LOADERS = {
    "judge": judge_module.load_judge,
    "features": features_module.load_features,
    "annotator": annotator_module.load_annotator,
    "segmenter": segmenter_module.load_segmenter,
}
INSTRUMENTS = tuple(LOADERS)


def load_instrument(name: str, directory: str | Path | None = None) -> torch.nn.Module:
    """Instrument `name` (one of INSTRUMENTS) from `directory` (default `weights/toy_v2/<name>`)."""
    if name not in LOADERS:
        raise HarnessError(f"unknown toy v2 instrument {name!r}; choose one of {', '.join(INSTRUMENTS)}")
    return LOADERS[name](directory)


# ----------------------------------------------------------------------------- evaluator plug-in


class ToyV2Evaluator:
    """The plug-in interface of `harness.metrics.features` for world v2: `features` from the
    feature network (d = 64); `judge` from the judge (1.0 when `judge_caption` finds the prompt
    right); `class_log_probabilities` from the judge's strongest centre per shape, normalised
    over the seven shapes (a distribution over shapes, for IS)."""

    def __init__(self, device: str = "cpu", weights_root: str | Path | None = None) -> None:
        root = Path(weights_root) if weights_root else None
        self.device = torch.device(device)
        # The judge's decoding runs on the CPU (peaks and a caption check per image): it stays there.
        self.judge_network = judge_module.load_judge(root / "judge" if root else None)
        self.feature_network = features_module.load_features(root / "features" if root else None).to(self.device)
        self.num_features = features_module.FEATURE_DIM

    def identity(self) -> str:
        from harness.store.samples import file_sha256

        parts = []
        for name, network in (("judge", self.judge_network), ("features", self.feature_network)):
            parts.append(f"{name} sha256:{file_sha256(network.weights_path)[:16]}")
        return "harness.toy.v2.instruments " + ", ".join(parts)

    @staticmethod
    def _float(images: torch.Tensor) -> torch.Tensor:
        return images.float().div(127.5).sub(1.0)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 64) features of uint8 (N, 3, 64, 64) images."""
        return self.feature_network(self._float(images).to(self.device)).cpu()

    @torch.no_grad()
    def class_log_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        heat = self.judge_network(self._float(images))["heat"].amax(dim=(2, 3))
        return torch.log_softmax(heat, dim=1)

    def judge(self, image: Any, record: Any) -> float:
        detections = judge_module.detect(self.judge_network, np.asarray(image, dtype=np.uint8)[None])[0]
        return float(judge_module.judge_caption(record.prompt, detections).correct)


def load_evaluator(device: str = "cpu") -> ToyV2Evaluator:
    """The v2 evaluator plug-in (see :class:`ToyV2Evaluator`); missing weights raise MissingWeightsError."""
    return ToyV2Evaluator(device)


# ----------------------------------------------------------------------------- validation


@dataclass
class EvalSet:
    """Images with the exact truth of the scenes they show."""

    name: str  # e.g. "seen/renders" or "unseen/img2img@0.2"
    images: np.ndarray
    truth: InstrumentPool
    scenes: list[Scene]


def asked_from_scene(scene: Scene) -> judge_module.AskedCaption:
    """What a scene's caption asks, read from the scene (equal to `parse_caption(caption(scene).text)`)."""
    return judge_module.parse_caption(caption(scene).text)


def wrong_caption(scene: Scene, index: int) -> judge_module.AskedCaption:
    """A caption that is false of `scene`: one group's count, colour or texture changed (which
    one and how is a function of `index`), the changed attribute spoken."""
    asked = asked_from_scene(scene)
    groups = list(asked.groups)
    g = index % len(groups)
    group = groups[g]
    kind = ("count", "colour", "texture")[(index // 3) % 3]
    truth = scene.groups[g]
    if kind == "count":
        changed = {"count": group.count + 1 if group.count < MAX_COUNT else group.count - 1}
    elif kind == "colour":
        others = [c for c in OBJECT_COLOURS if c != truth.colour]
        changed = {"colour": others[index % len(others)]}
    else:
        others = [t for t in TEXTURES if t != truth.texture]
        changed = {"texture": others[index % len(others)]}
    groups[g] = judge_module.AskedGroup(**{**group.__dict__, **changed})
    return judge_module.AskedCaption(tuple(groups), asked.relations, asked.background)


def _proportion(successes: int, total: int) -> dict[str, Any]:
    low, high = proportion_ci(int(successes), int(total))
    return {"value": successes / total if total else None, "low": low, "high": high, "n": int(total)}


def _miou(confusions: np.ndarray) -> float:
    matrix = confusions.sum(0)
    intersection = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - intersection
    present = union > 0
    return float((intersection[present] / union[present]).mean())


def _miou_row(predicted: np.ndarray, truth: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    n_classes = len(SEMANTIC_CLASSES)
    confusions = np.stack([confusion_matrix(p, t, n_classes, n_classes) for p, t in zip(predicted, truth)])
    low, high = bootstrap_ci(len(confusions), lambda idx: _miou(confusions[idx]), resamples=1000)
    return {"value": _miou(confusions), "low": low, "high": high, "n": len(confusions)}, confusions


def _instance_recall(annotations: list, truth: InstrumentPool) -> tuple[int, int, list[bool]]:
    """Truth instances matched (IoU >= 0.5) by a predicted instance of the right class."""
    from harness.overlap import mask_iou

    hits, total, per_image = 0, 0, []
    for annotation, labels, shapes in zip(annotations, truth.instance_labels, truth.shape):
        ok = True
        for k in np.nonzero(shapes >= 0)[0]:
            mask = labels == k + 1
            if not mask.any():
                continue
            total += 1
            found = any(cls == shapes[k] + 1 and mask_iou(annotation.instances == j + 1, mask) >= 0.5
                        for j, cls in enumerate(annotation.instance_class))
            hits += found
            ok &= found
        per_image.append(ok)
    return hits, total, per_image


def evaluate_set(eval_set: EvalSet, instruments: dict[str, Any], probe: Any = None,
                 source_features: np.ndarray | None = None) -> tuple[dict[str, dict], list[dict[str, bool]]]:
    """Every instrument's agreement with the truth on one set: {metric: row} and, per image, a
    dict of pass/fail verdicts (for the grid)."""
    images, truth, scenes = eval_set.images, eval_set.truth, eval_set.scenes
    rows: dict[str, dict] = {}
    per_image: list[dict[str, bool]] = [{} for _ in scenes]
    if "judge" in instruments:
        detections = judge_module.detect(instruments["judge"], images)
        accept, exact, counts, bindings, rejects = [], [], [], [], []
        for i, (scene, found) in enumerate(zip(scenes, detections)):
            verdict = judge_module.judge_caption(asked_from_scene(scene), found)
            accept.append(verdict.correct)
            counts += verdict.count_correct
            bindings += verdict.binding_correct
            rejects.append(not judge_module.judge_caption(wrong_caption(scene, i), found).correct)
            true_set = [(SHAPES[s], OBJECT_COLOURS[c], TEXTURES[t], SIZES[z])
                        for s, c, t, z in zip(truth.shape[i], truth.colour[i], truth.texture[i], truth.size[i]) if s >= 0]
            exact.append(judge_module.detections_match_truth(found, true_set))
            per_image[i]["judge"] = verdict.correct
        rows["judge/accepts_true_caption"] = _proportion(sum(accept), len(accept))
        rows["judge/rejects_wrong_caption"] = _proportion(sum(rejects), len(rejects))
        rows["judge/count_correct_per_group"] = _proportion(sum(counts), len(counts))
        rows["judge/binding_correct_per_group"] = _proportion(sum(bindings), len(bindings))
        rows["judge/all_instances_exact"] = _proportion(sum(exact), len(exact))
    if "features" in instruments:
        features = features_module.extract(instruments["features"], images)
        if probe is not None:
            predicted = probe.predict(features)
            target = _shapes_present(truth)
            right = (predicted == target).all(axis=1)
            rows["features/probe_shape_set_exact"] = _proportion(int(right.sum()), len(right))
            # Per (image, shape) decision, beside the same decisions made by always saying "absent".
            rows["features/probe_shape_presence"] = _proportion(int((predicted == target).sum()), target.size)
            rows["features/probe_always_absent_baseline"] = _proportion(int((target == 0).sum()), target.size)
            for i, ok in enumerate(right):
                per_image[i]["features"] = bool(ok)
        if source_features is not None:
            unit = features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)
            source = source_features / np.linalg.norm(source_features, axis=1, keepdims=True).clip(1e-12)
            nearest = (unit @ source.T).argmax(axis=1)
            retrieved = nearest == np.arange(len(unit))
            rows["features/retrieves_own_render"] = _proportion(int(retrieved.sum()), len(retrieved))
    if "annotator" in instruments:
        annotations = annotator_module.annotate(instruments["annotator"], images)
        rows["annotator/semantic_miou"], confusions = _miou_row(np.stack([a.semantic for a in annotations]), truth.semantic)
        hits, total, ok = _instance_recall(annotations, truth)
        rows["annotator/instance_recall_iou50"] = _proportion(hits, total)
        group_counts = [sum(cls == SHAPES.index(g.shape) + 1 for cls in a.instance_class) == g.count
                        for a, scene in zip(annotations, scenes) for g in scene.groups]
        rows["annotator/count_correct_per_group"] = _proportion(sum(group_counts), len(group_counts))
        for i, c in enumerate(confusions):
            per_image[i]["annotator"] = bool(_miou(c[None]) >= 0.5 and ok[i])
    if "segmenter" in instruments:
        predicted = segmenter_module.segment(instruments["segmenter"], images)
        rows["segmenter/semantic_miou"], confusions = _miou_row(predicted, truth.semantic)
        for i, c in enumerate(confusions):
            per_image[i]["segmenter"] = bool(_miou(c[None]) >= 0.5)
    return rows, per_image


def _shapes_present(truth: InstrumentPool) -> np.ndarray:
    present = np.zeros((len(truth.shape), len(SHAPES)), int)
    for i, shapes in enumerate(truth.shape):
        present[i, shapes[shapes >= 0]] = 1
    return present


def fit_feature_probe(feature_network: Any, n: int = 2000) -> Any:
    """A linear probe (one logistic regression per shape: is it in the image?) on the features of
    the first `n` `features_train` renders: how much of the scene content the features keep."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multioutput import MultiOutputClassifier

    pool = truth_pool("features_train", list(range(n)))
    features = features_module.extract(feature_network, pool.images)
    return MultiOutputClassifier(LogisticRegression(max_iter=2000)).fit(features, _shapes_present(pool))


def render_sets(n: int, split: str = "test", seed: int = 0) -> list[EvalSet]:
    """The `seen` and `unseen` renders of `split` (exact truth)."""
    indices = eval_indices(split, n, seed)
    sets = []
    for stream in ("seen", "unseen"):
        scenes = [scene_for_index(stream, i) for i in indices]
        truth = truth_pool(stream, indices)
        sets.append(EvalSet(f"{stream}/renders", truth.images, truth, scenes))
    return sets


def near_truth_generations(pipeline: Any, eval_set: EvalSet, strength: float, seed: int = 0, steps: int = 20,
                           guidance_scale: float = 1.0, batch_size: int = 16) -> EvalSet:
    """`eval_set`'s renders passed through an img2img pipeline with their own captions at
    `strength` (a fresh seeded generator per batch); the renders' truth stays the truth."""
    from PIL import Image

    if int(steps * strength) < 1:
        raise HarnessError(f"img2img at strength {strength:g} with {steps} steps runs no denoising step "
                           f"(int(steps * strength) = 0); use at least {int(np.ceil(1 / strength))} steps")
    images = []
    captions = [caption(s).text for s in eval_set.scenes]
    for start in range(0, len(captions), batch_size):
        batch = [Image.fromarray(im) for im in eval_set.images[start:start + batch_size]]
        generator = torch.Generator().manual_seed(seed * 1_000_003 + start)
        out = pipeline(prompt=captions[start:start + batch_size], image=batch, strength=strength,
                       num_inference_steps=steps, guidance_scale=guidance_scale, generator=generator, output_type="np")
        images.append(np.clip(np.round(out.images * 255), 0, 255).astype(np.uint8))
    stream = eval_set.name.split("/")[0]
    return EvalSet(f"{stream}/img2img@{strength:g}", np.concatenate(images), eval_set.truth, eval_set.scenes)


def save_grid(eval_sets: list[EvalSet], verdicts: list[list[dict[str, bool]]], path: Path, n: int = 50) -> None:
    """A grid of the first `n` images over the sets (round robin), each with its caption and every
    instrument's verdict below (+ agrees with the truth, - does not)."""
    from PIL import Image, ImageDraw

    cells = []
    for i in range(max(len(s.images) for s in eval_sets)):
        for s, v in zip(eval_sets, verdicts):
            if i < len(s.images) and len(cells) < n:
                cells.append((s, i, v[i]))
    columns, scale, text_height = 5, 3, 52
    width, height = 64 * scale + 8, 64 * scale + text_height
    canvas = Image.new("RGB", (columns * width, -(-len(cells) // columns) * height), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (s, i, verdict) in enumerate(cells):
        x, y = (k % columns) * width, (k // columns) * height
        canvas.paste(Image.fromarray(s.images[i]).resize((64 * scale, 64 * scale), Image.NEAREST), (x + 4, y))
        text = caption(s.scenes[i]).text
        lines = [s.name, text[:34], text[34:68], " ".join(f"{name}{'+' if ok else '-'}" for name, ok in verdict.items())]
        for j, line in enumerate(lines):
            draw.text((x + 4, y + 64 * scale + 1 + 12 * j), line, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def load_img2img(model: str | Path) -> Any:
    """A `StableDiffusionImg2ImgPipeline` from a local diffusers folder (the toy v2 model)."""
    from diffusers import StableDiffusionImg2ImgPipeline

    folder = Path(model)
    if not (folder / "model_index.json").is_file():
        raise HarnessError(f"no diffusers model at {folder} (model_index.json missing); pass --model the folder of "
                           "the toy v2 model (e.g. weights/toy_v2) once it has been trained")
    pipeline = StableDiffusionImg2ImgPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def validate(n: int = 100, split: str = "test", seed: int = 0, pipeline: Any = None, strengths: tuple[float, ...] = (),
             steps: int = 20, weights_root: str | Path | None = None, grid_path: Path | None = None,
             probe_size: int = 2000) -> dict[str, Any]:
    """Rows {set: {metric: {value, low, high, n}}} for every instrument on test renders and, with
    `pipeline`, on its near-truth generations at each strength."""
    root = Path(weights_root) if weights_root else None
    instruments = {name: load_instrument(name, root / name if root else None) for name in INSTRUMENTS}
    probe = fit_feature_probe(instruments["features"], probe_size)
    result: dict[str, Any] = {"split": split, "n_per_set": n, "seed": seed, "sets": {}}
    grid_sets, grid_verdicts = [], []
    for renders in render_sets(n, split, seed):
        rows, verdicts = evaluate_set(renders, instruments, probe)
        result["sets"][renders.name] = rows
        source_features = features_module.extract(instruments["features"], renders.images)
        for strength in strengths:
            generated = near_truth_generations(pipeline, renders, strength, seed=seed, steps=steps)
            rows, verdicts = evaluate_set(generated, instruments, probe, source_features)
            result["sets"][generated.name] = rows
            grid_sets.append(generated)
            grid_verdicts.append(verdicts)
    if grid_path is not None and grid_sets:
        save_grid(grid_sets, grid_verdicts, grid_path)
        result["grid"] = str(grid_path)
    return result


def table(result: dict[str, Any]) -> str:
    """A markdown table: one row per (set, metric), value with its 95% interval."""
    lines = ["| set | metric | value | 95% interval | n |", "|---|---|---|---|---|"]
    for name, rows in result["sets"].items():
        for metric, row in rows.items():
            interval = f"[{row['low']:.3f}, {row['high']:.3f}]" if row["low"] is not None else "-"
            value = f"{row['value']:.3f}" if row["value"] is not None else "-"
            lines.append(f"| {name} | {metric} | {value} | {interval} | {row['n']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`validate`: every instrument on test renders and, with --model, near-truth generations."""
    parser = argparse.ArgumentParser(prog="python -m harness.toy.v2.instruments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="accuracy of every instrument against exact truth")
    v.add_argument("--n", type=int, default=200, help="scenes per composition set (seen, unseen)")
    v.add_argument("--split", default="test", choices=("dev", "test"))
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--model", type=Path, default=None, help="toy v2 diffusers folder for near-truth generations")
    v.add_argument("--strengths", type=float, nargs="*", default=[0.1, 0.2, 0.3])
    v.add_argument("--steps", type=int, default=20)
    v.add_argument("--weights-root", type=Path, default=None, help="default: weights/toy_v2")
    v.add_argument("--out", type=Path, default=Path("results/toy_v2_instruments"))
    v.add_argument("--probe-size", type=int, default=2000, help="features_train renders the feature probe is fit on")
    v.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        pipeline = load_img2img(args.model) if args.model else None
        result = validate(args.n, args.split, args.seed, pipeline, tuple(args.strengths) if pipeline else (), args.steps,
                          args.weights_root, args.out / "near_truth_grid.png", args.probe_size)
    except HarnessError as error:  # MissingWeightsError included: one message, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "instruments.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "instruments.md").write_text(table(result))
    print(table(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
