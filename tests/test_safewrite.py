"""The one output writer: secure temp in the target folder, no write through a symlink, atomic replace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mobilekit import safewrite
from mobilekit.jsonio import write_json_atomic
from mobilekit.search.runfolder import RunFolder


def test_writes_and_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    safewrite.write_text(target, "one\n")
    safewrite.write_text(target, "two\n")
    assert target.read_text() == "two\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]  # no temp left behind


def test_refuses_symlink_and_leaves_its_target_unchanged(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out" / "metrics.jsonl"
    link.parent.mkdir()
    link.symlink_to(victim)
    for write in (lambda: safewrite.write_text(link, "x"), lambda: safewrite.append_line(link, "{}"),
                  lambda: write_json_atomic(link, {"a": 1})):
        with pytest.raises(safewrite.OutputError, match="symlink") as info:
            write()
        assert "\n" not in str(info.value)
    assert victim.read_text() == "precious"
    assert link.is_symlink()


def test_planted_fixed_temp_names_are_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    for name in (".metrics.jsonl.tmp", f".summary.json.{os.getpid()}.tmp", f".metrics.jsonl.{os.getpid()}.tmp"):
        (out / name).symlink_to(victim)
    run = RunFolder(out)
    run.write_json("summary.json", {"ok": True})
    run.log({"step": 1})
    run.truncate_metrics(1)
    assert victim.read_text() == "precious"
    assert (out / "metrics.jsonl").read_text().strip() == '{"step": 1}'


def test_refuses_non_regular_target_and_failed_writer_leaves_no_temp(tmp_path: Path) -> None:
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(safewrite.OutputError, match="not a regular file"):
        safewrite.write_text(tmp_path / "folder.json", "x")

    def boom(path: Path) -> None:
        path.write_text("partial")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError):
        safewrite.write_with(tmp_path / "plot.png", boom, suffix=".png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.json"]
