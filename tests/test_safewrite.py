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
    assert sorted(p.name for p in target.parent.iterdir()) == [safewrite.MANIFEST_NAME, "a.txt"]  # no temp left
    assert safewrite.written_by_mobilekit(target.parent) == {"a.txt"}


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


def test_a_file_mobilekit_did_not_write_is_never_replaced_appended_or_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "summary.json"
    mine.write_bytes(b"the user's own file")
    for write in (lambda: safewrite.write_text(mine, "x"), lambda: safewrite.append_line(mine, "{}"),
                  lambda: write_json_atomic(mine, {"a": 1}), lambda: safewrite.remove(mine),
                  lambda: safewrite.rename(out / "new.json", mine)):
        with pytest.raises(safewrite.OutputError, match="mobilekit did not write it") as info:
            write()
        assert "\n" not in str(info.value)
    assert mine.read_bytes() == b"the user's own file"
    # what mobilekit wrote itself it may replace, append to and remove
    safewrite.write_text(out / "ours.json", "1")
    safewrite.write_text(out / "ours.json", "2")
    safewrite.append_line(out / "log.jsonl", "{}")
    safewrite.append_line(out / "log.jsonl", "{}")
    assert safewrite.written_by_mobilekit(out) == {"ours.json", "log.jsonl"}
    assert safewrite.remove(out / "ours.json") and not (out / "ours.json").exists()
    assert safewrite.written_by_mobilekit(out) == {"log.jsonl"}
    # a caller's format check may accept a file of mobilekit's own format that is not listed
    safewrite.write_text(mine, "replaced", recognise=lambda p: p.read_bytes().startswith(b"the user's"))
    assert mine.read_text() == "replaced" and "summary.json" in safewrite.written_by_mobilekit(out)


def test_a_planted_or_damaged_manifest_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for content in (None, "not json", '{"format": "other", "files": []}', '{"format": "mobilekit-manifest"}'):
        out = tmp_path / f"out{hash(content) & 0xffff}"
        out.mkdir()
        manifest = out / safewrite.MANIFEST_NAME
        if content is None:
            manifest.symlink_to(victim)
        else:
            manifest.write_text(content)
        with pytest.raises(safewrite.OutputError, match="manifest|symlink") as info:
            safewrite.write_text(out / "a.json", "x")
        assert "\n" not in str(info.value)
        assert victim.read_text() == "precious"
    with pytest.raises(safewrite.OutputError, match="manifest"):
        safewrite.write_text(tmp_path / "o" / safewrite.MANIFEST_NAME, "{}")


def test_parallel_writers_of_one_folder_lose_no_manifest_entry(tmp_path: Path) -> None:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(4) as pool:
        list(pool.map(_write_some, [(tmp_path, i) for i in range(4)]))
    assert safewrite.written_by_mobilekit(tmp_path) == {f"w{i}-{j}.txt" for i in range(4) for j in range(10)}


def _write_some(args: tuple[Path, int]) -> None:
    folder, i = args
    for j in range(10):
        safewrite.write_text(folder / f"w{i}-{j}.txt", str(j))


def test_figure_and_onnx_export_refuse_a_planted_symlink(tmp_path: Path) -> None:
    import torch
    from matplotlib.figure import Figure

    from mobilekit.errors import MobilekitError
    from mobilekit.export.onnx_export import export_onnx

    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "plot.png").symlink_to(victim)
    (out / "model.onnx").symlink_to(victim)
    (out / ".model.onnx.tmp.onnx").symlink_to(victim)  # the old fixed temp name
    fig = Figure()
    fig.add_subplot().plot([0, 1], [0, 1])
    with pytest.raises(MobilekitError, match="symlink"):
        safewrite.save_figure(fig, out / "plot.png", dpi=50)
    with pytest.raises(MobilekitError, match="symlink"):
        export_onnx(torch.nn.Conv2d(1, 1, 1), out / "model.onnx", (1, 1, 4, 4), exporter="torchscript")
    assert victim.read_bytes() == b"precious"
    export_onnx(torch.nn.Conv2d(1, 1, 1), out / "fresh.onnx", (1, 1, 4, 4), exporter="torchscript")
    safewrite.save_figure(fig, out / "fresh.png", dpi=50)
    assert (out / "fresh.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "fresh.onnx").stat().st_size > 0
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "with space", "x" * 65])
def test_device_name_that_would_leave_the_table_folder_is_refused(name: str) -> None:
    from mobilekit.errors import ConfigError
    from mobilekit.profile.devices import parse_device

    with pytest.raises(ConfigError, match="names the latency table file") as info:
        parse_device({"name": name}, source="devices/x.toml")
    assert "\n" not in str(info.value)
    assert parse_device({"name": "pixel1-v2.b_c"}, source="devices/x.toml").name == "pixel1-v2.b_c"


@pytest.mark.parametrize("seed", ["-1", str(2**32), "99999999999999999999"])
def test_out_of_range_search_seed_is_one_line_and_writes_nothing(tmp_path: Path, seed: str) -> None:
    from cli_helpers import PIXEL1_TABLE, assert_one_line_failure, run_cli

    code, _, err = run_cli(["search", "--table", str(PIXEL1_TABLE), "--target-ms", "5", "--out",
                            str(tmp_path / "run"), f"--seed={seed}"])
    assert_one_line_failure(code, err, "--seed")
    assert not (tmp_path / "run").exists()
