"""A content-addressed, crash-safe cache of generated samples.

Each sample (an image, named arrays such as attention maps, and JSON metadata) lives in a
folder named by the SHA-256 of everything that determines it. A sample is written into a
temporary folder and renamed into place in one step, so an entry is either complete or absent:
a run killed at any moment (SIGKILL included) loses only the sample in flight, and a rerun
reuses every finished one. Each file's checksum is kept in the metadata so a damaged entry is
detected on reuse and regenerated.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.errors import HarnessError

log = logging.getLogger(__name__)

META_FILE = "meta.json"
IMAGE_FILE = "image.png"
ARRAYS_FILE = "arrays.npz"
#: Appended to (one JSON line per committed sample) so tools and tests can audit generation.
EVENTS_FILE = "events.jsonl"


def content_key(spec: dict[str, Any]) -> str:
    """The content address of a sample: SHA-256 of its canonical JSON specification."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (identity of input files in keys and manifests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable in a sample spec: {type(value).__name__}")


@dataclass
class Sample:
    """One finished sample: what a method produced for one record."""

    image: np.ndarray | None = None  #: uint8 HxWx3
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class SampleStore:
    """Cache of :class:`Sample` objects under ``root``, keyed by :func:`content_key`."""

    def __init__(self, root: str | Path, verify: bool = True) -> None:
        self.root = Path(root)
        self.verify = verify
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-", delete=True)
            probe.close()
        except OSError as error:
            raise HarnessError(
                f"The sample store {self.root} is not writable ({error.strerror}). "
                "Choose another folder with store.root=DIR."
            ) from error

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Sample | None:
        """The cached sample, or None when it is absent or damaged (a damaged one is removed)."""
        folder = self.path(key)
        if not folder.is_dir():
            return None
        try:
            return self._read(folder)
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
            log.warning("Cached sample %s is damaged (%s); it will be regenerated.", key[:12], error)
            shutil.rmtree(folder, ignore_errors=True)
            return None

    def _read(self, folder: Path) -> Sample:
        meta_doc = json.loads((folder / META_FILE).read_text())
        checksums: dict[str, str] = meta_doc["checksums"]
        blobs = {}
        for name, expected in checksums.items():
            data = (folder / name).read_bytes()
            if self.verify and hashlib.sha256(data).hexdigest() != expected:
                raise ValueError(f"checksum mismatch in {name}")
            blobs[name] = data
        image = None
        if IMAGE_FILE in blobs:
            with Image.open(io.BytesIO(blobs[IMAGE_FILE])) as pil:
                image = np.asarray(pil.convert("RGB"))
        arrays: dict[str, np.ndarray] = {}
        if ARRAYS_FILE in blobs:
            # allow_pickle=False: arrays only, never objects.
            with np.load(io.BytesIO(blobs[ARRAYS_FILE]), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        return Sample(image=image, arrays=arrays, meta=meta_doc["meta"])

    def put(self, key: str, sample: Sample, spec: dict[str, Any] | None = None) -> Path:
        """Write ``sample`` atomically; returns its folder. An existing entry is kept."""
        final = self.path(key)
        if final.is_dir():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{key[:12]}-"))
        try:
            checksums = {}
            if sample.image is not None:
                buffer = io.BytesIO()
                Image.fromarray(_as_uint8_rgb(sample.image)).save(buffer, format="PNG")
                checksums[IMAGE_FILE] = _write(staging / IMAGE_FILE, buffer.getvalue())
            if sample.arrays:
                buffer = io.BytesIO()
                np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in sample.arrays.items()})
                checksums[ARRAYS_FILE] = _write(staging / ARRAYS_FILE, buffer.getvalue())
            meta_doc = {"key": key, "spec": spec, "meta": sample.meta, "checksums": checksums}
            text = json.dumps(meta_doc, sort_keys=True, indent=1, default=_json_default)
            _write(staging / META_FILE, text.encode("utf-8"))
            _fsync_dir(staging)
            try:
                os.rename(staging, final)
            except OSError:
                # Another process finished the same sample first: keep theirs.
                if not final.is_dir():
                    raise
                shutil.rmtree(staging, ignore_errors=True)
                return final
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._log_event(key)
        return final

    def _log_event(self, key: str) -> None:
        line = json.dumps({"key": key, "pid": os.getpid(), "time": time.time()}) + "\n"
        # One small O_APPEND write per line: lines from concurrent writers do not interleave.
        fd = os.open(self.root / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def clean_staging(self) -> int:
        """Remove leftovers of interrupted writes; returns how many were removed."""
        removed = 0
        for leftover in self.root.glob("*/.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
            removed += 1
        return removed


def _as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"sample images must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return array


def _write(path: Path, data: bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
