"""Plain helpers shared by tests in several folders (tests/ is on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


#: (caption id, image id, caption): nouns singular and plural, capitals, punctuation, double
#: spaces, one caption with no noun, two captions of one image.
CAPTIONS = [
    (101, 1, "A man riding a bike down the street."),
    (102, 1, "A person on a bicycle in a city street."),
    (103, 2, "Two dogs playing with a frisbee on the grass"),
    (104, 3, "Pizza with cheese and tomatoes on a wooden table."),
    (105, 4, "A cat sleeping on a laptop keyboard ,  next to a cup."),
    (106, 5, "Very nice!"),
    (107, 6, "Three giraffes standing near trees at the zoo."),
    (108, 7, "A woman holding an umbrella in the rain."),
    (109, 8, "A bus parked next to a red fire hydrant."),
    (110, 9, "Children flying kites at the beach."),
    (111, 10, "A television and a couch in a living room."),
    (112, 11, "A plate of broccoli, carrots and rice."),
]


def write_captions(path: Path, captions=CAPTIONS) -> Path:
    document = {
        "info": {"description": "test fixture"},
        "images": [{"id": image_id, "file_name": f"{image_id:012d}.jpg"} for image_id in sorted({c[1] for c in captions})],
        "annotations": [{"id": cid, "image_id": iid, "caption": text} for cid, iid, text in captions],
    }
    path.write_text(json.dumps(document))
    return path
