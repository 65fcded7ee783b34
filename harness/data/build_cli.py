"""``harness build-prompts``: build a prompt-set manifest once, to run from it many times.

    harness build-prompts coco_gen   --captions captions_val2014.json --size 1000 --seed 0 --out datasets/coco_gen-1000-s0.json
    harness build-prompts unreal_gen --captions captions_val2014.json --size 1000 --seed 0 --out datasets/unreal_gen-1000-s0.json

The manifest (records with prompt, seed, nouns and source ids; builder parameters, including
the captions file's SHA-256; a checksum of the records) is then used with
``dataset=coco_gen dataset.path=<manifest>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import HarnessError

BUILDERS = ("coco_gen", "unreal_gen")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness build-prompts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("builder", choices=BUILDERS)
    p.add_argument("--captions", required=True, help="COCO captions file (captions_val2014.json)")
    p.add_argument("--size", type=int, default=1000, help="number of prompts (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--out", help="manifest path (default datasets/<builder>-<size>-s<seed>.json)")
    p.add_argument("--min-nouns", type=int, default=1, help="keep captions with at least this many nouns")
    p.add_argument("--all-captions-per-image", action="store_true", help="allow several captions of one COCO image")
    p.add_argument("--vocabulary", help="unreal_gen: JSON of [singular, plural] noun pairs")
    p.add_argument("--ground-truth", help="attach ground truth: COCO-format annotations file or DAAM release folder")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user error, printed without a traceback)."""
    options = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        from harness.data.coco_gen import attach_ground_truth, build_coco_gen_set, build_unreal_gen_set

        common = {"min_nouns": options.min_nouns, "unique_images": not options.all_captions_per_image}
        if options.builder == "unreal_gen":
            prompt_set = build_unreal_gen_set(options.captions, options.size, options.seed,
                                              vocabulary=options.vocabulary, **common)
        else:
            if options.vocabulary:
                raise HarnessError("--vocabulary applies to unreal_gen only.")
            prompt_set = build_coco_gen_set(options.captions, options.size, options.seed, **common)
        prompt_set = attach_ground_truth(prompt_set, options.ground_truth)
        out = Path(options.out or f"datasets/{options.builder}-{options.size}-s{options.seed}.json")
        prompt_set.save(out)
    except HarnessError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return 2
    shortfall = f" (asked for {options.size}: the file has no more eligible captions)" if len(prompt_set) < options.size else ""
    print(f"{out}: {len(prompt_set)} prompts{shortfall}, checksum {prompt_set.checksum[:16]}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
