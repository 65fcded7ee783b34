"""One CLI: every command is ``harness <command>``, ``python -m harness`` is the same, and every
command the docs name exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli

ROOT = Path(__file__).resolve().parents[2]


def _exit_code(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exit_:  # argparse's --help
        return int(exit_.code or 0)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_answers_help(command, capsys):
    argv = [command, "--help"] if command != "toy" else ["toy", "train", "--help"]
    assert _exit_code(argv) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("command", sorted(cli.TOY_COMMANDS))
def test_every_toy_command_answers_help(command, capsys):
    assert _exit_code(["toy", command, "--help"]) == 0
    assert f"harness toy {command}" in capsys.readouterr().out


def test_every_command_the_docs_and_docstrings_name_exists():
    texts = [p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
                                     *sorted((ROOT / "harness").rglob("*.py"))]]
    named = {m for text in texts for m in re.findall(r"`harness ([a-z][a-z-]*)(?: ([a-z]+))?", text)}
    named |= {m for text in texts for m in re.findall(r"(?:^|\s)harness ([a-z][a-z-]+)(?: ([a-z]+))?\s", text)
              if m[0] in cli.COMMANDS}
    assert named, "the docs name no harness command"
    for command, sub in named:
        assert command in cli.COMMANDS, f"`harness {command}` is documented but no such command exists"
        if command == "toy" and sub:
            assert sub in cli.TOY_COMMANDS, f"`harness toy {sub}` is documented but does not exist"


def test_unknown_command_is_answered_with_the_closest(capsys):
    assert cli.main(["tabel"]) == 2
    assert "Did you mean 'table'?" in capsys.readouterr().err


def test_list_shows_experiments(capsys):
    assert cli.main(["list"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("experiments: ") and "pag_toy" in first and "daam_toy" in first


def test_python_dash_m_harness_is_the_harness_command():
    completed = subprocess.run([sys.executable, "-m", "harness", "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0 and completed.stdout == cli.usage() + "\n"


def test_a_shard_run_says_what_it_wrote(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "experiment=smoke", "dataset.size=2", "generation.steps=1", "shard.index=0",
                     "shard.count=2", f"hydra.run.dir={tmp_path / 'shard'}", f"store.root={tmp_path / 'cache'}"]) == 0
    out = capsys.readouterr().out
    assert f"Shard 0/2: wrote {tmp_path / 'shard' / 'shard.json'}; 1 sample(s) generated" in out
    assert "summary.csv" not in out and "rows.parquet" not in out
    assert sorted(p.name for p in (tmp_path / "shard").iterdir() if not p.name.startswith(".")) == [
        "harness.log", "shard.json"]
