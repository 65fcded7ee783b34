"""Identities that sample content addresses can trust: weights by content, code by provenance.

- :func:`weights_identity` names a weights folder by the SHA-256 of every file in it (weights,
  configs, tokenizer files), so two folders with the same names and sizes but different bytes
  get different keys. Hashing a 5 GB folder takes a minute, so each file's digest is remembered
  in a small index keyed by (real path, size, mtime_ns, inode) (:class:`HashIndex`): a file is
  hashed again only when one of those changes. The index is an append-only JSON-lines file
  (one short ``O_APPEND`` write per entry, which concurrent writers on one machine cannot tear;
  a torn or unreadable line is skipped, costing at most one re-hash).
- :func:`hub_snapshot_identity` names a Hugging Face cache entry by the commit of its resolved
  snapshot folder (``snapshots/<commit>``): the hub already content-addresses those files, so
  they are not hashed again.
- :func:`numerics_versions` are the libraries whose versions change generated numbers (torch,
  diffusers, transformers); they enter every sample's key through the model identity. Policy:
  an upgrade of any of them regenerates, never silently reuses (see README "Samples, caching and
  resuming").
- :func:`sample_provenance` is stamped into each generated sample's ``meta["provenance"]`` (git
  sha, library versions, UTC time), so rows scoring a reused sample say how *it* was made.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.store.samples import file_sha256

#: The libraries whose versions change generated samples' numbers: part of every sample key.
NUMERICS_PACKAGES = ("torch", "diffusers", "transformers")
#: Where the file-digest index lives unless HARNESS_HASH_INDEX names another file.
DEFAULT_INDEX = "~/.cache/harness/file_sha256.jsonl"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class HashIndex:
    """Remembered SHA-256 digests of files, keyed by (real path, size, mtime_ns, inode).

    A file whose stat tuple is unchanged is not read again. Replacing a file (new inode),
    writing into it (new mtime) or resizing it all miss the index and rehash.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(os.path.expanduser(str(path or os.environ.get("HARNESS_HASH_INDEX") or DEFAULT_INDEX)))
        self._entries: dict[tuple[str, int, int, int], str] | None = None
        self.hashed = 0  #: files actually read by this instance (for tests and logs)

    @staticmethod
    def _stat_key(path: Path) -> tuple[str, int, int, int]:
        real = os.path.realpath(path)
        stat = os.stat(real)
        return real, stat.st_size, stat.st_mtime_ns, stat.st_ino

    def _load(self) -> dict[tuple[str, int, int, int], str]:
        if self._entries is None:
            self._entries = {}
            try:
                lines = self.path.read_text(encoding="utf-8").splitlines()
            except OSError:
                lines = []
            for line in lines:
                try:
                    doc = json.loads(line)
                    self._entries[(doc["path"], int(doc["size"]), int(doc["mtime_ns"]), int(doc["inode"]))] = str(doc["sha256"])
                except (ValueError, KeyError, TypeError):
                    continue  # a torn line (crash mid-write): that file is simply hashed again
        return self._entries

    def sha256(self, path: str | Path) -> str:
        """The file's SHA-256, from the index when its (path, size, mtime, inode) is known."""
        key = self._stat_key(Path(path))
        entries = self._load()
        known = entries.get(key)
        if known is not None:
            return known
        digest = file_sha256(key[0])
        self.hashed += 1
        if self._stat_key(Path(path)) != key:  # changed while being read: do not remember
            return digest
        entries[key] = digest
        self._append({"path": key[0], "size": key[1], "mtime_ns": key[2], "inode": key[3], "sha256": digest})
        return digest

    def _append(self, doc: dict[str, Any]) -> None:
        line = (json.dumps(doc, sort_keys=True) + "\n").encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One write of one short line with O_APPEND: concurrent appenders do not interleave.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError:
            pass  # an unwritable index costs speed (hashing again next run), never correctness


def folder_files(folder: str | Path) -> list[Path]:
    """Every regular file under ``folder`` (symlinks followed), hidden entries excluded, sorted."""
    folder = Path(folder)
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue  # .cache/, .git/ and editors' files are not part of the model
        if path.is_file():
            files.append(path)
    return files


def weights_identity(folder: str | Path, index: HashIndex | None = None) -> str:
    """Content identity of a pipeline folder: SHA-256 over (relative path, SHA-256 of bytes) of every file."""
    folder = Path(folder)
    index = index or HashIndex()
    entries = [[str(path.relative_to(folder)), index.sha256(path)] for path in folder_files(folder)]
    return "sha256:" + hashlib.sha256(json.dumps(entries).encode("utf-8")).hexdigest()


def hub_snapshot_identity(snapshot_folder: str | Path) -> str:
    """Identity of a Hugging Face cache entry: its resolved snapshot commit (``snapshots/<commit>``)."""
    folder = Path(snapshot_folder)
    commit = folder.name
    if folder.parent.name != "snapshots" or not _COMMIT.match(commit):
        raise ValueError(f"{folder} is not a Hugging Face cache snapshot folder (…/snapshots/<40-hex commit>)")
    return f"hf-commit:{commit}"


def numerics_versions() -> dict[str, str | None]:
    """Installed versions of :data:`NUMERICS_PACKAGES` (they enter sample keys)."""
    versions: dict[str, str | None] = {}
    for package in NUMERICS_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def sample_provenance() -> dict[str, Any]:
    """How a sample is being made now: git sha, library versions (JSON text, as in rows), UTC time."""
    from harness.store.rows import git_sha, library_versions

    return {"git_sha": _cached_git_sha(git_sha), "versions": library_versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds")}


_GIT_SHA: list[str] = []


def _cached_git_sha(compute) -> str:
    # Two git subprocesses per sample would cost more than a tiny model's generation; the code
    # running cannot change within one process, so ask once.
    if not _GIT_SHA:
        _GIT_SHA.append(compute())
    return _GIT_SHA[0]


def stamp_provenance(meta: dict[str, Any]) -> dict[str, Any]:
    """Record :func:`sample_provenance` in ``meta`` unless it already holds one; returns ``meta``."""
    meta.setdefault("provenance", sample_provenance())
    return meta
