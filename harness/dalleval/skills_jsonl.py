"""``dataset=skills_jsonl``: skill prompts from a GenEval/PaintSkills-style JSONL file.

One JSON object per line: ``{"prompt": ..., "tag": <skill>, "include": [{"class", "count",
"color"?, "position"?: [relation, index]}]}`` (:mod:`harness.dalleval.judge`). ``tag`` takes our
skill names (object, colour_binding, spatial_relation, size, counting) or GenEval's
(single_object, two_object, colors, color_attr, position, counting), mapped in
:data:`GENEVAL_TAGS`. ``datasets/skills_coco.jsonl`` (its card: ``datasets/skills_coco.md``) is the
shipped file, over COCO classes so the Mask R-CNN judge can see them. Each prompt is generated
``dataset.size`` times (GenEval: 4), with record seeds ``dataset.seed * 1_000_000 + 1000 line + k``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.dalleval.judge import check_tags
from harness.data.prompts import PromptRecord, PromptSet, validate_prompt_set
from harness.errors import DataError

DEFAULT_FILE = "datasets/skills_coco.jsonl"
GENEVAL_TAGS = {"single_object": "object", "two_object": "object", "colors": "colour_binding",
                "color_attr": "colour_binding", "position": "spatial_relation", "counting": "counting"}


def read_skill_file(path: str | Path) -> list[dict[str, Any]]:
    """The file's prompts with tags normalised to our skill names; one clear error per bad line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Skill prompt file {path} does not exist (dataset.path=FILE; shipped: {DEFAULT_FILE}).")
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}: "
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}not valid JSON ({error.msg})") from None
        if not isinstance(item, dict) or not str(item.get("prompt", "")).strip():
            raise DataError(f"{where}each line needs a non-empty 'prompt'")
        skill = item.get("tag", item.get("skill"))
        skill = GENEVAL_TAGS.get(skill, skill)
        check_tags(skill, item.get("include"), where)
        items.append({"prompt": item["prompt"], "skill": skill, "include": item["include"], "line": number})
    if not items:
        raise DataError(f"Skill prompt file {path} holds no prompts.")
    return items


def build_skills_jsonl(dataset_cfg: Any) -> PromptSet:
    """Records of every prompt of ``dataset.path`` (default the shipped file), ``dataset.size`` each (default 1)."""
    from harness import REPO_ROOT

    path = Path(dataset_cfg.path) if dataset_cfg.path else REPO_ROOT / DEFAULT_FILE
    items = read_skill_file(path)
    repeats = int(dataset_cfg.size if dataset_cfg.size is not None else 1)
    records = []
    for k in range(repeats):
        for item in items:
            records.append(PromptRecord(
                id=f"skills-{item['line']:04d}-{k}", prompt=item["prompt"],
                seed=int(dataset_cfg.seed) * 1_000_000 + 1000 * item["line"] + k,
                meta={"skill": item["skill"], "include": item["include"],
                      "nouns": list(dict.fromkeys(str(i["class"]) for i in item["include"]))}))
    return validate_prompt_set(PromptSet(path.stem, records, builder="harness.dalleval.skills_jsonl:build_skills_jsonl",
                                         params={"path": str(path), "images_per_prompt": repeats}),
                               f"dataset=skills_jsonl ({path})")
