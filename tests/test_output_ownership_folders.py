"""Hardening (issue 23): the folders of ``compare --out`` and of a profile farm (several ``--device``, ``--out`` a
folder) never get a file written through a symlink or over a file mobilekit did not create.

Hypothesis plants a user's file, a symlink to a file outside, a dangling symlink or a folder at every name the
command writes (the comparison's ``compare.json``, report files, ``cells/`` and ``runs/`` folders, an unfinished
cell's ``.json`` and ``.lock``, the files its search writes in ``runs/METHOD-sSEED/``, the manifests; a farm's
per-device tables, their ``.TABLE.json.lock`` and the folder's manifest) and asserts the promise: exit 2, one
line, and every pre-existing file and link (and the file or folder a link points to) byte-identical. Every such
plant is refused before anything trains or measures; a rerun of a finished comparison is refused only for what it
must write (``test_a_finished_comparison_ignores_what_it_does_not_write``).

The comparison is made once per module by a real tiny ``compare`` (digits, 64 images, ``--budget 2``, one step
per epoch, 32 px); each example copies it (without its weight files, which a rerun never reads) and reruns with
one more seed, so the new seed's names are the ones the rerun would write.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import PIXEL1_TABLE, assert_one_line_failure, run_cli
from mobilekit import safewrite
from test_output_ownership import tree

FUZZ = settings(max_examples=16, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
KINDS = ("user file", "symlink", "dangling symlink", "folder")
FOLDER_KINDS = ("file", "symlink to a folder", "dangling symlink")


def compare_argv(out: Path, seeds: int) -> list[str]:
    """The tiny comparison (``seeds`` seeds of ``random``; nothing retrained)."""
    return ["compare", "--table", str(PIXEL1_TABLE), "--target-ms", "80", "--out", str(out), "--data", "digits",
            "--methods", "random", "--seeds", str(seeds), "--budget", "2", "--protocol-samples", "0",
            "--retrain-epochs", "0", "--steps-per-epoch", "1", "--train-subset", "64", "--batch-size", "8",
            "--no-progress"]


@pytest.fixture(scope="module")
def finished_comparison(tmp_path_factory) -> Path:
    """A comparison folder as ``compare`` leaves it after one seed."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    code, _, err = run_cli(compare_argv(out, 1))
    assert code == 0, err
    assert (out / "cells" / "random-s0.json").is_file() and (out / "results.md").is_file()
    return out


class Workspace:
    """A temp root holding a copy of the comparison (``out``), a file and a folder outside it (the victims)."""

    def __init__(self, source: Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mobilekit-own-")
        self.root = Path(self._tmp.name)
        self.victim = self.root / "victim.bin"
        self.victim.write_bytes(b"precious, outside the output folder\n")
        self.victim_dir = self.root / "victim-dir"
        self.victim_dir.mkdir()
        (self.victim_dir / "mine.txt").write_text("the user's folder\n")
        self.out = self.root / "out"
        if source is not None:
            shutil.copytree(source, self.out, symlinks=True, ignore=shutil.ignore_patterns("*.pt"))
        else:
            self.out.mkdir()

    def plant(self, relative: str, kind: str) -> Path:
        """Put ``kind`` at ``out/relative`` (a file mobilekit wrote there is removed first, through its own
        manifest, so the planted entry is not listed as mobilekit's)."""
        target = self.out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file() and not target.is_symlink() and target.name != safewrite.MANIFEST_NAME:
            safewrite.remove(target)
        elif target.name == safewrite.MANIFEST_NAME and target.exists():
            target.unlink()
        if kind == "user file":
            target.write_bytes(b"the user's own data\n")
        elif kind == "symlink":
            target.symlink_to(self.victim)
        elif kind == "dangling symlink":
            target.symlink_to(self.root / "created-elsewhere")
        elif kind == "folder":
            target.mkdir()
            (target / "inside.txt").write_text("mine")
        elif kind == "file":
            target.write_bytes(b"a file where mobilekit makes a folder\n")
        elif kind == "symlink to a folder":
            target.symlink_to(self.victim_dir, target_is_directory=True)
        else:
            raise AssertionError(kind)
        return target

    def check_refused(self, argv: list[str], *needles: str) -> None:
        before = tree(self.root)
        code, _, err = run_cli(argv)
        assert_one_line_failure(code, err, *needles)
        assert tree(self.root) == before, "a pre-existing file changed or a file appeared"

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()


# ---- compare --out -----------------------------------------------------------------------------------------------
COMPARE_FILES = ["compare.json", "results.json", "results.csv", "results.md", "accuracy_latency.png",
                 "cells/random-s1.json", "cells/random-s1.lock", "runs/random-s1/summary.json",
                 "runs/random-s1/weights.pt", "runs/random-s1/config.json", "runs/random-s1/metrics.jsonl",
                 "runs/random-s1/bundle.json", "runs/random-s1/checkpoint.npz", "runs/random-s1/search.png",
                 ".mobilekit-manifest", "cells/.mobilekit-manifest"]
COMPARE_FOLDERS = ["cells", "runs", "runs/random-s1"]

compare_plant = st.one_of(st.tuples(st.sampled_from(COMPARE_FILES), st.sampled_from(KINDS)),
                          st.tuples(st.sampled_from(COMPARE_FOLDERS), st.sampled_from(FOLDER_KINDS)))


@FUZZ
@given(plant=compare_plant)
def test_compare_never_writes_through_or_over_what_it_did_not_write(finished_comparison, plant):
    relative, kind = plant
    with Workspace(finished_comparison) as ws:
        if relative in ("cells", "runs"):  # the whole subfolder replaced (a finished comparison has both)
            shutil.rmtree(ws.out / relative)
        ws.plant(relative, kind)
        ws.check_refused(compare_argv(ws.out, 2), Path(relative).name)


DAMAGED_CELLS = [b"", b"{", b"[]", b'{"method": "random"}',
                 b'{"method": "random", "seed": 0, "arch": "x", "predicted_ms": NaN}']


@pytest.mark.parametrize("content", DAMAGED_CELLS, ids=["empty", "cut", "list", "partial", "nan"])
def test_a_damaged_finished_cell_stops_the_rerun_before_it_computes_anything(finished_comparison, content):
    with Workspace(finished_comparison) as ws:
        (ws.out / "cells" / "random-s0.json").write_bytes(content)
        ws.check_refused(compare_argv(ws.out, 2), "random-s0.json")


def test_a_finished_comparison_ignores_what_it_does_not_write(finished_comparison):
    """Refused only for what it must write: a rerun with every cell finished rewrites the report and leaves
    files at other names (and a stray lock of a finished cell, which it never takes) as they were."""
    with Workspace(finished_comparison) as ws:
        ws.plant("notes.txt", "user file")
        ws.plant("cells/notes.json", "user file")
        ws.plant("cells/random-s0.lock", "user file")
        ws.plant("runs/random-s0/mine.txt", "symlink")
        ours = ("out/results", "out/accuracy", "out/compare.json", "out/.mobilekit-manifest")  # rewritten, ours
        theirs = {k: v for k, v in tree(ws.root).items() if not k.startswith(ours)}
        code, out, err = run_cli(compare_argv(ws.out, 1))
        assert code == 0, err
        assert "1 cells" in out
        after = tree(ws.root)
        assert {k: after.get(k) for k in theirs} == theirs


# ---- profile farm --out ------------------------------------------------------------------------------------------
FARM_FILES = ["phone-a.json", "phone-b.json", ".phone-a.json.lock", ".phone-b.json.lock", ".mobilekit-manifest"]


def farm_devices(root: Path) -> list[str]:
    """Two phone descriptors that nothing answers (a refused farm never contacts them)."""
    files = []
    for name in ("phone-a", "phone-b"):
        path = root / f"{name}.toml"
        path.write_text(f'name = "{name}"\ntransport = "adb"\naddress = "127.0.0.1:9"\nuse_server = false\n'
                        f'key_path = "{root / "adbkey"}"\nbenchmark_binary = "/bin/true"\n')
        files += ["--device", str(path)]
    return files


@FUZZ
@given(relative=st.sampled_from(FARM_FILES), kind=st.sampled_from(KINDS), resume=st.booleans())
def test_a_farm_never_writes_through_or_over_what_it_did_not_write(relative, kind, resume):
    with Workspace() as ws:
        devices = farm_devices(ws.root)
        (ws.root / "cache").mkdir()
        ws.plant(relative, kind)
        ws.check_refused(["profile", *devices, "--out", str(ws.out), "--resolution", "32", "--positions", "0",
                          "--runs", "1", "--repeats", "1", "--warmup", "0", "--work-dir", str(ws.root / "cache"),
                          "--no-progress", *([] if resume else ["--no-resume"])], relative)
