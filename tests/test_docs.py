"""Docs that cannot drift from the code.

* Every ``mobilekit ...`` command line in README.md and docs/ (fenced blocks and inline code spans) is parsed with
  the real CLI parser (parse only, nothing runs): an unknown flag, a removed option or an unknown method fails.
  A command with ``...`` (options elided) or an inline mention is parsed in *partial* mode: required options are
  relaxed, everything written must still exist. ``[--flag VALUE]`` is read as written without the brackets,
  ``a|b`` alternatives as their first choice.
* Every ```python block runs in a fresh interpreter in a temporary folder (with the repository's
  ``latency_tables/``, ``devices/`` and ``search/`` linked in), unless the line before it is
  ``<!-- not-runnable: REASON -->``; then it must still compile.
* Every ```toml recipe is loaded by :func:`mobilekit.search.make_config`.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mobilekit.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
NOT_RUNNABLE = re.compile(r"<!--\s*not-runnable:\s*(\S.*?)\s*-->")


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    text: str
    partial: bool = False
    runnable: bool = True

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _fenced_blocks(path: Path) -> list[tuple[str, int, str, str]]:
    """(language, first line number, text, the line before the fence) of every fenced block of ``path``."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*```(\w*)\s*$", lines[i])
        if fence:
            start, body = i, []
            i += 1
            while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i])
                i += 1
            blocks.append((fence.group(1), start + 2, "\n".join(body), lines[start - 1] if start else ""))
        i += 1
    return blocks


def _command_snippets() -> list[Snippet]:
    snippets = []
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for language, first, body, _ in _fenced_blocks(path):
            if language not in ("", "bash", "sh", "shell", "console"):
                continue
            lines = body.splitlines()
            j = 0
            while j < len(lines):
                line, number = lines[j], first + j
                while line.rstrip().endswith("\\") and j + 1 < len(lines):
                    j += 1
                    line = line.rstrip()[:-1] + " " + lines[j].strip()
                if re.search(r"(^|\s)(-m\s+)?mobilekit\s", line.split("#")[0] + " "):
                    snippets.append(Snippet(path, number, line))
                j += 1
        for match in re.finditer(r"`(mobilekit [^`]+)`", text):
            snippets.append(Snippet(path, text.count("\n", 0, match.start()) + 1, match.group(1), partial=True))
    return snippets


def _argv(command: str) -> tuple[list[str], bool]:
    """The argv after ``mobilekit`` and whether options were elided (``...``)."""
    command = re.sub(r"\s#.*$", "", command)            # a trailing comment
    command = command.replace("[", " ").replace("]", " ")
    tokens = shlex.split(command)
    start = next(i for i, t in enumerate(tokens) if t == "mobilekit") + 1
    argv, partial, skip = [], False, False
    for token in tokens[start:]:
        if skip:
            skip = False
            continue
        if token == "...":
            partial = True
        elif token == "|":
            skip = True                                   # `random | multipath`: keep the first alternative
        elif re.fullmatch(r"[\w.-]+(\|[\w.-]+)+", token):
            argv.append(token.split("|")[0])              # `gumbel|reinforce`
        else:
            argv.append(token.replace("...", "x"))
    return argv, partial


def _relax(parser: argparse.ArgumentParser) -> None:
    """Make every option of ``parser`` and its sub-parsers optional (parsing an elided command)."""
    for action in parser._actions:
        if action.option_strings:
            action.required = False
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _relax(sub)
        elif not action.option_strings and action.nargs not in ("?", "*", argparse.REMAINDER) and \
                action.dest not in ("command", "latency_command"):
            action.nargs = "?"


COMMANDS = _command_snippets()


def test_the_docs_hold_commands() -> None:
    places = {s.path.name for s in COMMANDS}
    assert len(COMMANDS) > 40 and {"README.md", "search.md", "profiling.md", "tuning.md"} <= places


@pytest.mark.parametrize("snippet", COMMANDS, ids=[s.where for s in COMMANDS])
def test_documented_command_parses(snippet: Snippet, capsys: pytest.CaptureFixture[str]) -> None:
    argv, elided = _argv(snippet.text)
    parser = build_parser()
    if snippet.partial or elided:
        _relax(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        err = capsys.readouterr().err.strip()
        assert exc.code == 0, f"{snippet.where}: `{snippet.text}` does not parse: {err}"
        return
    assert args.command == argv[0]
    method = getattr(args, "method", None)
    if isinstance(method, str) and argv[0] == "search":
        from mobilekit.search.registry import METHODS
        assert method in METHODS, f"{snippet.where}: unknown method {method!r}"


def test_command_collection_catches_a_removed_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """The parse test would fail on a stale flag: the checker itself is not a stub."""
    argv, _ = _argv("mobilekit search --method single-path --no-such-flag 3 ...")
    parser = build_parser()
    _relax(parser)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(argv)
    assert exc.value.code == 2 and "--no-such-flag" in capsys.readouterr().err


def _python_snippets() -> list[Snippet]:
    out = []
    for path in DOC_FILES:
        for language, first, body, before in _fenced_blocks(path):
            if language == "python":
                out.append(Snippet(path, first, body, runnable=not NOT_RUNNABLE.search(before)))
    return out


PYTHON = _python_snippets()


def test_python_snippets_exist() -> None:
    assert any(s.path.name == "README.md" and s.runnable for s in PYTHON)


@pytest.mark.parametrize("snippet", PYTHON, ids=[s.where for s in PYTHON])
def test_python_snippet_runs(snippet: Snippet, tmp_path: Path) -> None:
    compile(snippet.text, snippet.where, "exec")
    if not snippet.runnable:
        return
    for name in ("latency_tables", "devices", "search"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MOBILEKIT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", snippet.text], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{snippet.where} failed:\n{done.stderr[-3000:]}"


def _toml_snippets() -> list[Snippet]:
    return [Snippet(p, first, body) for p in DOC_FILES for language, first, body, _ in _fenced_blocks(p)
            if language == "toml"]


TOML = _toml_snippets()


@pytest.mark.parametrize("snippet", TOML, ids=[s.where for s in TOML])
def test_documented_recipe_loads(snippet: Snippet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilekit.search import make_config

    monkeypatch.chdir(ROOT)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(snippet.text, encoding="utf-8")
    config = make_config(recipe, out=str(tmp_path / "run"))
    assert config.method
