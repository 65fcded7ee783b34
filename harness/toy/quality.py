"""Quality figures of a toy pipeline: generation accuracy (judged by the evaluator) and noun attention.

    python -m harness.toy.quality weights/toy --evaluator weights/toy/evaluator --out quality.json

Generation accuracy: single-object prompts count as right when the evaluator finds the asked
shape in the asked colour (any colour when the caption names none); two-object prompts when it finds both pairs. Attention: for
every generated image whose objects have distinct colours, each word's summed conditional
cross-attention map (min-max normalised, > 0.4) against the colour mask of its object
(`probe.colour_masks`); mIoU = mean over (image, word) pairs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from harness.toy.evaluator import load_evaluator, present_pairs
from harness.toy.probe import attention_scores, generate_with_attention
from harness.toy.splits import scene_for_index
from harness.toy.world import caption


def measure(pipeline, evaluator, split: str = "toy_gen", n_per_count: int = 48, steps: int = 20,
            guidance_scale: float = 5.0, seed: int = 0) -> dict[str, float]:
    """Accuracy and attention figures on `n_per_count` one-object and two-object prompts of `split`."""
    result: dict[str, float] = {"split": split, "steps": steps, "guidance_scale": guidance_scale, "seed": seed}
    for n_objects, name in ((1, "single"), (2, "pair")):
        scenes = [scene_for_index(split, i, n_objects=n_objects) for i in range(n_per_count)]
        start = time.time()
        images, maps = generate_with_attention(pipeline, [caption(s).text for s in scenes], seed, steps, guidance_scale)
        found = present_pairs(evaluator, images)
        right = [all(any(shape == o.shape and (colour == o.colour or not o.say_colour) for colour, shape in f)
                      for o in s.objects) for s, f in zip(scenes, found)]
        result[f"gen_accuracy_{name}"] = round(float(np.mean(right)), 4)
        result[f"n_{name}"] = len(scenes)
        result |= {f"{name}_{k}": v for k, v in attention_scores(scenes, images, maps).items()}
        result[f"{name}_wall_s"] = round(time.time() - start, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    """Measure a pipeline folder and print (and optionally save) the figures as JSON."""
    from diffusers import StableDiffusionPipeline

    parser = argparse.ArgumentParser(prog="harness toy quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("--evaluator", type=Path, default=Path("weights/toy/evaluator"))
    parser.add_argument("--split", default="toy_gen")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipeline = StableDiffusionPipeline.from_pretrained(args.pipeline, safety_checker=None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    result = measure(pipeline, load_evaluator(args.evaluator), args.split, args.n, args.steps, args.guidance_scale)
    print(json.dumps(result), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
