"""Checkable numbers: every ``harness table ... --compare`` command in docs/ runs on a fresh clone
against the rows kept in ``results/reference/`` and prints the numbers the docs show."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from harness import cli

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"`(harness\s+table\s[^`]*--compare\s[^`]*)`")
NUMBER = re.compile(r"[+-]?\d+\.\d+")


def documented_commands() -> list[tuple[str, str, str]]:
    """(doc, command, the first Markdown table after it) for every --compare command in docs/."""
    found = []
    for doc in sorted((ROOT / "docs").rglob("*.md")):
        text = doc.read_text()
        for match in COMMAND.finditer(text):
            if re.search(r"\b[A-Z]{3,}\b", match.group(1)):  # a usage line (RUNS, METHOD), not a command
                continue
            rest = text[match.end():]
            table = re.search(r"(?:^\|.*\|[ \t]*\n)+", rest, re.M)
            found.append((doc.name, " ".join(match.group(1).split()), table.group(0) if table else ""))
    return found


COMMANDS = documented_commands()


def test_the_docs_name_compare_commands():
    assert COMMANDS, "docs/ shows no `harness table ... --compare` command"


@pytest.mark.parametrize(("doc", "command", "table"), COMMANDS, ids=[c[1] for c in COMMANDS])
def test_compare_commands_print_the_numbers_the_docs_show(doc, command, table, capsys, monkeypatch):
    args = shlex.split(command)[2:]
    paths = [a for a in args[:next((i for i, a in enumerate(args) if a.startswith("--")), len(args))]]
    for path in paths:
        assert path.startswith("results/reference/"), f"{doc}: `{command}` reads {path}, not results/reference/"
        assert (ROOT / path).exists(), f"{doc}: `{command}`: {path} is not in the repository"
    monkeypatch.chdir(ROOT)
    assert cli.main(["table", *args]) == 0
    printed = capsys.readouterr().out
    # the figures of every row (its first cell names the row, which may hold a setting such as 1.5)
    numbers = [n for line in table.splitlines()[2:] for cell in line.strip("|").split("|")[1:]
               for n in NUMBER.findall(cell)]
    assert numbers, f"{doc}: no table of numbers follows `{command}`"
    missing = [n for n in numbers if n not in printed]
    assert not missing, f"{doc}: `{command}` does not print {missing}"


def test_reference_runs_verify_against_their_manifests():
    from harness.store.rows import ROWS_FILE, RUN_MANIFEST, verify_run_file

    rows = sorted((ROOT / "results" / "reference").rglob(ROWS_FILE))
    assert rows, "results/reference/ holds no rows"
    for path in rows:
        assert (path.parent / RUN_MANIFEST).is_file(), f"{path.parent} has no {RUN_MANIFEST}"
        verify_run_file(path)
        verify_run_file(path.parent / "summary.csv")


REPORT = re.compile(r"`(harness\s+dalleval-report\s+(?:skills|bias)\s+results/reference/[^`]*)`")


@pytest.mark.parametrize("doc", sorted(p.name for p in (ROOT / "docs").glob("*.md")
                                       if REPORT.search(p.read_text())))
def test_dalleval_report_commands_print_the_docs_tables(doc, capsys, monkeypatch):
    text = (ROOT / "docs" / doc).read_text()
    monkeypatch.chdir(ROOT)
    for match in REPORT.finditer(text):
        table = re.search(r"(?:^\|.*\|[ \t]*\n)+", text[match.end():], re.M).group(0)
        assert cli.main(["dalleval-report", *shlex.split(" ".join(match.group(1).split()))[2:]]) == 0
        printed = capsys.readouterr().out
        assert table.strip() in printed, f"{doc}: `{match.group(1)}` does not print the table the doc shows"
