"""Bad input stops with one clear message (exit 2, no traceback) and leaves the sample store as it was.

Every case runs the real command in-process (``harness.cli.main``), as a user would type it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.data.prompts import PromptRecord, PromptSet
from harness.errors import ConfigError, DataError
from harness.validation import check_generation, check_size, read_image, size_multiple


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _fails(capsys, argv: list[str], *expected: str) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    error = captured.err
    assert "Traceback" not in error and "Traceback" not in captured.out
    lines = [line for line in error.splitlines() if line.startswith("harness: error:")]
    assert len(lines) == 1, error  # one message
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _run(tmp_path: Path, *overrides: str) -> list[str]:
    return ["run", "experiment=smoke", f"hydra.run.dir={tmp_path / 'run'}", f"store.root={tmp_path / 'cache'}",
            "print_summary=false", *overrides]


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory):
    """A store with one finished smoke run in it (so 'unchanged' is checked against real content)."""
    root = tmp_path_factory.mktemp("filled")
    assert main(_run(root, "generation.steps=1", "dataset.size=1", "generation.batch_size=1")) == 0
    before = _files(root / "cache")
    assert before
    return root, before


@pytest.mark.parametrize("override, message", [
    ("generation.steps=-3", "generation.steps=-3: the number of denoising steps must be >= 1"),
    ("generation.steps=0", "generation.steps=0"),
    ("generation.guidance_scale=-1", "generation.guidance_scale=-1.0: the guidance scale must be >= 0"),
    ("generation.batch_size=0", "generation.batch_size=0: the batch size must be >= 1"),
    ("generation.height=33", "generation.height=33: image sizes for model=tiny_random must be positive multiples of 8"),
    ("generation.width=-8", "generation.width=-8"),
    ("dataset.size=0", "dataset.size=0: keep at least 1 record"),
    ("dataset.size=-1", "dataset.size=-1: keep at least 1 record"),
])
def test_run_refuses_bad_generation_settings_and_stores_nothing(capsys, filled_store, override, message):
    root, before = filled_store
    _fails(capsys, _run(root, override), message)
    assert _files(root / "cache") == before


def test_run_with_the_toy_model_refuses_words_outside_its_vocabulary(capsys, tmp_path):
    manifest = PromptSet("oov", [PromptRecord("0", "a red circle", 0), PromptRecord("1", "a purple elephant", 1)])
    path = manifest.save(tmp_path / "prompts.json")
    line = _fails(capsys, _run(tmp_path, "model=toy", "dataset=prompt_manifest", f"dataset.path={path}"),
                  "dataset record '1'", "unknown word(s) ['elephant']", "Toy vocabulary:")
    assert "circle" in line  # the vocabulary is listed
    assert _files(tmp_path / "cache") == []


def test_daam_with_the_toy_model_stops_with_the_vocabulary(capsys, tmp_path):
    out = tmp_path / "daam"
    _fails(capsys, ["daam", "a purple elephant", "model=toy", f"out={out}"],
           "prompt: the toy model knows only its own vocabulary", "['elephant']", "Toy vocabulary:")
    _fails(capsys, ["daam", "a red circle", "model=toy", "words=circle,elephant", f"out={out}"], "words:", "elephant")
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["height=33", "width=33"], "height=33: image sizes for model=tiny_random must be positive multiples of 8"),
    (["steps=-3"], "steps=-3: the number of denoising steps must be >= 1"),
    (["guidance_scale=-2"], "guidance_scale=-2.0"),
    (["height=0"], "height=0"),
])
def test_daam_refuses_bad_generation_settings(capsys, tmp_path, argv, message):
    out = tmp_path / "daam"
    _fails(capsys, ["daam", "a red circle", "model=tiny_random", f"out={out}", *argv], message)
    assert not out.exists()


def test_daam_refuses_a_file_that_is_not_an_image(capsys, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    out = tmp_path / "daam"
    _fails(capsys, ["daam", "a red circle", "model=tiny_random", f"image={text}", f"out={out}"],
           f"image={text}: not a readable image")
    _fails(capsys, ["daam", "a red circle", "model=tiny_random", f"image={tmp_path / 'absent.png'}", f"out={out}"],
           "no such file")
    assert not out.exists()


def test_size_multiple_follows_the_model_config():
    from types import SimpleNamespace

    def pipeline(vae_factor, blocks):
        return SimpleNamespace(vae_scale_factor=vae_factor,
                               unet=SimpleNamespace(config=SimpleNamespace(down_block_types=["x"] * blocks)))

    assert size_multiple(pipeline(8, 4)) == 64  # Stable Diffusion 1/2
    assert size_multiple(pipeline(8, 3)) == 32  # SDXL
    assert size_multiple(pipeline(2, 3)) == 8  # the toy model
    assert size_multiple(pipeline(2, 1)) == 8  # diffusers' own minimum
    check_size(64, 128, 64)
    with pytest.raises(ConfigError, match="e.g. 512"):
        check_size(520, 512, 64)


def test_generation_checks_accept_the_boundaries():
    check_generation(steps=1, guidance_scale=0.0, batch_size=1)
    with pytest.raises(ConfigError):
        check_generation(steps=1, guidance_scale=-0.001, batch_size=1)


def test_read_image_reads_real_images_and_names_broken_ones(tmp_path):
    from PIL import Image

    good = tmp_path / "good.png"
    Image.fromarray(np.full((4, 6, 3), 7, np.uint8)).save(good)
    assert read_image(good).size == (6, 4)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match="broken.jpg: not a readable image"):
        read_image(broken)
