"""Prompt sets: the records a run generates from, and their versioned manifests.

A manifest is a JSON file ``{"name", "version", "builder", "params", "checksum", "records"}``
where each record is ``{"id", "prompt", "seed", "meta"}``. The checksum is the SHA-256 of the
canonical JSON of the records, so an edited or truncated manifest is detected on load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError

MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class PromptRecord:
    """One prompt to generate from, with its own seed and free-form metadata (nouns, source ids)."""

    id: str
    prompt: str
    seed: int
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)


@dataclass
class PromptSet:
    """A named, versioned list of :class:`PromptRecord`."""

    name: str
    records: list[PromptRecord]
    version: str = "1"
    builder: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def checksum(self) -> str:
        return records_checksum(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def head(self, size: int | None) -> PromptSet:
        """The first ``size`` records (all when None)."""
        if size is None:
            return self
        return PromptSet(self.name, self.records[:size], self.version, self.builder, self.params)

    def save(self, path: str | Path) -> Path:
        """Write the manifest (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "version": self.version,
            "builder": self.builder,
            "params": self.params,
            "checksum": self.checksum,
            "records": [asdict(record) for record in self.records],
        }
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
        temporary.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PromptSet:
        """Read and verify a manifest written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"Prompt manifest {path} does not exist. Build one (see README, 'Prompt sets') or fix dataset.path.")
        try:
            document = json.loads(path.read_text())
            records = [PromptRecord(str(r["id"]), str(r["prompt"]), int(r["seed"]), dict(r.get("meta", {})))
                       for r in document["records"]]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise DataError(f"Prompt manifest {path} is malformed ({type(error).__name__}: {error}).") from None
        prompt_set = cls(document.get("name", path.stem), records, str(document.get("version", "1")),
                         document.get("builder", ""), document.get("params", {}))
        if document.get("checksum") != prompt_set.checksum:
            raise DataError(f"Prompt manifest {path} fails its checksum: it was edited or truncated. Rebuild it.")
        return prompt_set


def records_checksum(records: list[PromptRecord]) -> str:
    canonical = json.dumps([asdict(r) for r in records], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def validate_prompt_set(prompt_set: PromptSet, source: str) -> PromptSet:
    """Refuse empty sets, empty prompts, duplicate ids and records naming code (a ``renderer`` that
    is not registered) with one clear message."""
    from harness.registry import RENDERERS

    if len(prompt_set) == 0:
        raise DataError(f"The prompt set {prompt_set.name!r} from {source} is empty: nothing to generate.")
    seen: set[str] = set()
    for record in prompt_set.records:
        if not record.prompt.strip():
            raise DataError(f"Record {record.id!r} of {source} has an empty prompt.")
        if record.id in seen:
            raise DataError(f"Record id {record.id!r} appears twice in {source}; ids must be unique.")
        renderer = record.meta.get("renderer") if isinstance(record.meta, dict) else None
        if renderer is not None and str(renderer) not in RENDERERS:
            raise DataError(f"Record {record.id!r} of {source} names renderer {renderer!r}, which is not a registered "
                            f"renderer (known: {', '.join(RENDERERS.names())}); a data file cannot name code.")
        seen.add(record.id)
    return prompt_set


SMOKE_SUBJECTS = ["cat", "dog", "car", "tree", "bird", "horse", "chair", "cup"]
SMOKE_COLOURS = ["red", "blue", "green", "yellow"]


def build_smoke_prompts(dataset_cfg: Any) -> PromptSet:
    """``dataset=smoke_prompts``: short prompts drawn with ``dataset.seed`` (size: dataset.size, default 4)."""
    size = dataset_cfg.size if dataset_cfg.size is not None else 4
    rng = np.random.default_rng(dataset_cfg.seed)
    records = []
    for index in range(size):
        colour = SMOKE_COLOURS[rng.integers(len(SMOKE_COLOURS))]
        subject = SMOKE_SUBJECTS[rng.integers(len(SMOKE_SUBJECTS))]
        records.append(PromptRecord(f"smoke-{index:04d}", f"a {colour} {subject}", int(rng.integers(2**31)),
                                    {"nouns": [subject]}))
    return validate_prompt_set(
        PromptSet("smoke_prompts", records, builder="smoke_prompts",
                  params={"seed": dataset_cfg.seed, "size": size}),
        "the smoke prompt builder",
    )


def load_prompt_manifest(dataset_cfg: Any) -> PromptSet:
    """``dataset=prompt_manifest dataset.path=FILE``: any manifest written by a builder."""
    if not dataset_cfg.path:
        raise DataError("dataset=prompt_manifest needs dataset.path=<manifest.json>.")
    prompt_set = PromptSet.load(dataset_cfg.path)
    return validate_prompt_set(prompt_set.head(dataset_cfg.size), dataset_cfg.path)
