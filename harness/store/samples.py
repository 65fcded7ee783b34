"""A content-addressed, crash-safe cache of generated samples.

Each sample (an image, named arrays such as attention maps, and JSON metadata) lives in a
folder named by the SHA-256 of everything that determines it. A sample is written into a
temporary folder and renamed into place in one step, so an entry is either complete or absent:
a run killed at any moment (SIGKILL included) loses only the sample in flight, and a rerun
reuses every finished one. Each file's checksum is kept in the metadata, the metadata carries its
own checksum (``meta_sha256``, over the rest of the document) and the digest of the sample's
arrays (``arrays_digest``, over their names, dtypes, shapes and bytes), so a damaged or edited
entry, or an arrays file that belongs to another entry, is detected on reuse and regenerated.

Several writers (processes, or machines on one shared file system) may fill one store at once:
an entry is made visible only by ``rename(2)`` of a complete folder, and renaming onto an
existing non-empty folder fails (ENOTEMPTY/EEXIST) instead of replacing it, so the first
finished copy of a key wins, the later one is discarded, and no reader ever sees a torn entry.
Entries are never modified after the rename, with one exception: a sample's named arrays live in
their own file, ``arrays-<sha256>.npz`` (named by the SHA-256 of its bytes, so it verifies
itself), which a run with ``store.arrays=drop`` removes once it has scored the sample (one
``unlink``), and which a later run that needs the arrays puts back by regenerating the sample
(one ``rename``). Either way a reader sees the whole file or none. Readers stream: :meth:`SampleStore.iter_samples`
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
#: Arrays of entries written before arrays became detachable (read, and dropped, as before).
ARRAYS_FILE = "arrays.npz"
#: Arrays of newer entries: ``arrays-<sha256 of the file>.npz``.
ARRAYS_PREFIX, ARRAYS_SUFFIX = "arrays-", ".npz"
#: What ``store.arrays`` may say: keep a run's per-sample arrays, or drop them once scored.
ARRAYS_POLICIES = ("keep", "drop")
#: meta.json's own checksum (SHA-256 of the rest of the document, canonical JSON).
META_CHECKSUM = "meta_sha256"
#: meta.json's digest of the sample's arrays (:func:`arrays_digest`).
ARRAYS_DIGEST = "arrays_digest"
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
    #: names of the arrays this sample was made with whose file was dropped (not stored)
    dropped_arrays: tuple[str, ...] = ()


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
        """Whether a finished entry exists for ``key`` with its arrays (reads the metadata only,
        no checksum). An entry whose arrays were dropped does not count: it must be remade."""
        folder = self.path(key)
        try:
            meta_doc = json.loads((folder / META_FILE).read_text())
        except (OSError, ValueError):
            return False
        if not _declared_array_names(meta_doc):
            return True
        return bool(_arrays_files(folder)) or (folder / ARRAYS_FILE).is_file()

    def check(self, key: str) -> bool:
        """Whether a finished, undamaged entry with its arrays exists (reads it once when
        ``verify``; a damaged one is removed, so the caller regenerates it; one whose arrays were
        dropped is kept, and regenerating it puts the arrays back). Nothing is kept in memory."""
        if not self.verify:
            return self.has(key)
        sample = self.get(key)
        return sample is not None and not sample.dropped_arrays

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
        recorded = meta_doc.pop(META_CHECKSUM, None)  # entries written before it have none
        if self.verify and recorded is not None and recorded != _document_sha256(meta_doc):
            raise ValueError(f"checksum mismatch in {META_FILE} (edited after it was written)")
        checksums: dict[str, str] = meta_doc["checksums"]
        blobs = {}
        for name, expected in checksums.items():
            try:
                data = (folder / name).read_bytes()
            except FileNotFoundError:
                if name == ARRAYS_FILE:  # an older entry whose arrays were dropped
                    continue
                raise
            if self.verify and hashlib.sha256(data).hexdigest() != expected:
                raise ValueError(f"checksum mismatch in {name}")
            blobs[name] = data
        image = None
        if IMAGE_FILE in blobs:
            with Image.open(io.BytesIO(blobs[IMAGE_FILE])) as pil:
                image = np.asarray(pil.convert("RGB"))
        data = blobs.get(ARRAYS_FILE) or self._read_arrays_file(folder)
        arrays: dict[str, np.ndarray] = {}
        if data is not None:
            # allow_pickle=False: arrays only, never objects.
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            digest = meta_doc.get(ARRAYS_DIGEST)
            if self.verify and digest is not None and digest != arrays_digest(arrays):
                raise ValueError("the arrays file does not hold this entry's arrays (arrays_digest mismatch)")
        dropped = tuple(_declared_array_names(meta_doc)) if data is None else ()
        return Sample(image=image, arrays=arrays, meta=meta_doc["meta"], dropped_arrays=dropped)

    def _read_arrays_file(self, folder: Path) -> bytes | None:
        """The bytes of the entry's arrays file, or None when it has none (never had, or dropped).
        A file whose bytes do not match its name is damaged: removed, so the arrays are remade."""
        for path in _arrays_files(folder):
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # dropped by another run between listing and reading
                continue
            if self.verify and hashlib.sha256(data).hexdigest() != path.name[len(ARRAYS_PREFIX):-len(ARRAYS_SUFFIX)]:
                log.warning("The arrays file %s is damaged; the sample's arrays will be regenerated.", path)
                path.unlink(missing_ok=True)
                continue
            return data
        return None

    def drop_arrays(self, key: str) -> int:
        """Remove the arrays of ``key``'s entry (image and metadata stay); returns the bytes freed.

        A later run that needs the arrays regenerates the sample, and :meth:`put` puts them back."""
        folder = self.path(key)
        freed = 0
        for path in [*_arrays_files(folder), folder / ARRAYS_FILE]:
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            freed += size
        return freed

    def put(self, key: str, sample: Sample, spec: dict[str, Any] | None = None) -> Path:
        """Write ``sample`` atomically; returns its folder. An existing entry is kept; if its
        arrays were dropped, ``sample``'s arrays are put back (the rest of ``sample`` is discarded)."""
        final = self.path(key)
        if final.is_dir():
            if sample.arrays and not self.has(key) and (final / META_FILE).is_file():
                if self._recorded_arrays_digest(final) in (None, arrays_digest(sample.arrays)):
                    self._restore_arrays(key, final, sample.arrays)
                    return final
                # regenerated arrays that differ from the recorded ones: the entry is written anew
                log.warning("Sample %s regenerated with other arrays than recorded; its entry is rewritten.", key[:12])
                shutil.rmtree(final, ignore_errors=True)
            else:
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
                data = _encode_arrays(sample.arrays)
                _write(staging / _arrays_name(data), data)  # the name is the checksum
            meta_doc = {"key": key, "spec": spec, "meta": sample.meta, "checksums": checksums,
                        "array_names": sorted(sample.arrays)}
            if sample.arrays:
                meta_doc[ARRAYS_DIGEST] = arrays_digest(sample.arrays)
            meta_doc = json.loads(json.dumps(meta_doc, default=_json_default))  # as it will be read back
            meta_doc[META_CHECKSUM] = _document_sha256(meta_doc)
            text = json.dumps(meta_doc, sort_keys=True, indent=1)
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

    @staticmethod
    def _recorded_arrays_digest(folder: Path) -> str | None:
        try:
            return json.loads((folder / META_FILE).read_text()).get(ARRAYS_DIGEST)
        except (OSError, ValueError):
            return None

    def _restore_arrays(self, key: str, final: Path, arrays: dict[str, np.ndarray]) -> None:
        """Put a regenerated sample's arrays into its entry: written beside the entry, then
        renamed in (the name is the checksum, so two runs restoring at once cannot clash)."""
        data = _encode_arrays(arrays)
        handle, temporary = tempfile.mkstemp(dir=final.parent, prefix=f".tmp-{key[:12]}-arrays-")
        os.close(handle)
        try:
            _write(Path(temporary), data)
            os.rename(temporary, final / _arrays_name(data))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_dir(final)
        self._log_event(key, restored="arrays")

    def _log_event(self, key: str, **extra: Any) -> None:
        line = json.dumps({"key": key, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
                           **extra}) + "\n"
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
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:  # an arrays file being put back into an entry
                leftover.unlink(missing_ok=True)
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


def _encode_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return buffer.getvalue()


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes (not the npz file's bytes, which
    carry zip timestamps): what ties an arrays file to its entry."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode("utf-8"))
        digest.update(array.tobytes())
    return digest.hexdigest()


def _document_sha256(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _arrays_name(data: bytes) -> str:
    return f"{ARRAYS_PREFIX}{hashlib.sha256(data).hexdigest()}{ARRAYS_SUFFIX}"


def _arrays_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{ARRAYS_PREFIX}*{ARRAYS_SUFFIX}"))


def _declared_array_names(meta_doc: dict[str, Any]) -> list[str]:
    """The arrays an entry was written with (older entries: ``["*"]`` when they had any)."""
    if "array_names" in meta_doc:
        return list(meta_doc["array_names"])
    return ["*"] if ARRAYS_FILE in meta_doc.get("checksums", {}) else []


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
