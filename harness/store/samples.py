"""A content-addressed, crash-safe cache of generated samples.

Each sample (an image, named arrays such as attention maps, and JSON metadata) lives in a
folder named by the SHA-256 of everything that determines it. A sample is written into a
temporary folder and renamed into place in one step, so an entry is either complete or absent:
a run killed at any moment (SIGKILL included) loses only the sample in flight, and a rerun
reuses every finished one. Each file's checksum is kept in the metadata so a damaged entry is
detected on reuse and regenerated.

Several writers (processes, or machines on one shared file system) may fill one store at once:
an entry is made visible only by ``rename(2)`` of a complete folder, and renaming onto an
existing non-empty folder fails (ENOTEMPTY/EEXIST) instead of replacing it, so the first
finished copy of a key wins, the later one is discarded, and no reader ever sees a torn entry.
Entries are never modified after the rename. Readers stream: :meth:`SampleStore.iter_samples`
yields samples one at a time in the order asked, :class:`LazySamples` is a read-only mapping
over the store, and :class:`SampleWriter` encodes and writes on a background thread so a run
holds at most a few batches of samples at any time.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import queue
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
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

    def has(self, key: str) -> bool:
        """Whether a finished entry exists for ``key`` (no reading, no checksum)."""
        return (self.path(key) / META_FILE).is_file()

    def check(self, key: str) -> bool:
        """Whether a finished, undamaged entry exists (reads it once when ``verify``; a damaged
        one is removed, so the caller regenerates it). Nothing is kept in memory."""
        if not self.verify:
            return self.has(key)
        return self.get(key) is not None

    def iter_samples(self, keys: Iterable[str]) -> Iterator[tuple[str, Sample]]:
        """``(key, sample)`` for each key in order, read one at a time; a missing or damaged
        entry raises :class:`HarnessError` naming it (the runner checks before reading)."""
        for key in keys:
            sample = self.get(key)
            if sample is None:
                raise HarnessError(f"Sample {key[:12]} is missing from the store {self.root} (removed or damaged "
                                   "while the run read it); run the experiment again to regenerate it.")
            yield key, sample

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
        line = json.dumps({"key": key, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}) + "\n"
        # One small O_APPEND write per line: lines from concurrent writers do not interleave.
        fd = os.open(self.root / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def clean_staging(self) -> int:
        """Remove leftovers of interrupted writes; returns how many were removed.

        Only leftovers untouched for ``STAGING_GRACE_S``: a staging folder younger than that may
        belong to a write in flight in another run sharing the store (removing it made that run
        fail with FileNotFoundError while it wrote)."""
        import time

        removed = 0
        now = time.time()
        for leftover in self.root.glob("*/.tmp-*"):
            try:
                if now - leftover.stat().st_mtime < STAGING_GRACE_S:
                    continue
            except OSError:
                continue
            shutil.rmtree(leftover, ignore_errors=True)
            removed += 1
        return removed


#: Staging folders younger than this (seconds) are left alone by :meth:`SampleStore.clean_staging`.
STAGING_GRACE_S = 600


class LazySamples(Mapping):
    """``{record id: Sample}`` read from the store on access: the runner hands this to figure
    hooks and dataset-level baselines instead of a dict of every sample (memory: one sample)."""

    def __init__(self, store: SampleStore, keys: Mapping[str, str]) -> None:
        self.store = store
        self.keys = keys

    def __getitem__(self, record_id: str) -> Sample:
        key = self.keys[record_id]
        sample = self.store.get(key)
        if sample is None:
            raise KeyError(record_id)
        return sample

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class SampleWriter:
    """Writes samples to a store on a background thread, overlapped with generation.

    ``submit`` hands over a finished sample and returns at once unless ``max_pending`` samples
    are already waiting (then it blocks: memory stays bounded by a few batches). PNG encoding,
    compression, fsync and rename run on the thread (zlib and file I/O release the GIL). The
    first error on the thread is raised again by the next ``submit`` or by ``close``; samples
    committed before it are on disk. Use as a context manager.
    """

    _STOP = object()

    def __init__(self, store: SampleStore, max_pending: int = 16) -> None:
        self.store = store
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, max_pending))
        self.error: BaseException | None = None
        self.written = 0
        self.thread = threading.Thread(target=self._loop, name="sample-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is self._STOP:
                    return
                if self.error is None:  # after an error, drain without writing
                    key, sample, spec = item
                    self.store.put(key, sample, spec)
                    self.written += 1
            except BaseException as error:  # re-raised in the submitting thread
                self.error = error
            finally:
                self.queue.task_done()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def submit(self, key: str, sample: Sample, spec: dict[str, Any] | None = None) -> None:
        self._raise()
        self.queue.put((key, sample, spec))

    def close(self) -> None:
        """Wait until every submitted sample is written; re-raise a writer error."""
        if self.thread.is_alive():
            self.queue.put(self._STOP)
            self.thread.join()
        self._raise()

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        # On an exception in the generating thread, still finish writing what was submitted
        # (finished work is not lost), then let the original exception propagate.
        if exc_info[0] is None:
            self.close()
        else:
            try:
                self.close()
            except BaseException:
                log.exception("the sample writer failed while the run was stopping")


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
