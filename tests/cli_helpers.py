"""Shared by the CLI error tests and the fuzz suite: run ``mobilekit.cli.main`` in-process and check that a
failure is the promised kind (exit 2, one line on stderr, no traceback), and snapshot a folder so a test can
tell that nothing in it changed."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
from pathlib import Path

from mobilekit.cli import main

REPO = Path(__file__).resolve().parents[1]
PIXEL1_TABLE = REPO / "latency_tables" / "pixel1-spnas.json"


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``mobilekit ARGV`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def search_interrupted_at(step: int):
    """Within the block, ``mobilekit search`` (through the CLI or ``mobilekit.search.run_search``) is interrupted by
    a KeyboardInterrupt after training step ``step``, as a Ctrl-C there would: the step's checkpoint is saved."""
    import mobilekit.search

    real = mobilekit.search.run_search

    def interrupted(config, **kwargs):
        def stop(record):
            if record["step"] == step:
                raise KeyboardInterrupt
        return real(config, **kwargs, on_step=stop)

    mobilekit.search.run_search = interrupted
    try:
        yield
    finally:
        mobilekit.search.run_search = real


def assert_one_line_failure(code: int, err: str, *needles: str) -> None:
    assert code == 2, f"exit {code}, stderr: {err!r}"
    assert "Traceback" not in err, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    assert lines[0].startswith("mobilekit "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` (relative path -> content and mtime in ns)."""
    result = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            result[str(path.relative_to(folder))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return result


def valid_long_architecture() -> str:
    """A valid architecture of the default space whose block-string form is longer than 255 characters: the
    longest-named allowed type at every position."""
    from mobilekit.space import get_space

    space = get_space()
    text = ",".join(max((c.name for c in p.candidates), key=len) for p in space.positions if p.searchable)
    assert len(text) > 255, len(text)
    return text


@functools.lru_cache(maxsize=None)
def fitted_predictor_path() -> Path:
    """A ridge predictor fitted on the Pixel 1 table (no cross-validation), written once per test process."""
    from mobilekit.latency.regression import LayerLatencyRegressor
    from mobilekit.latency_table import LatencyTable

    folder = Path(tempfile.mkdtemp(prefix="mobilekit-predictor-"))
    predictor = LayerLatencyRegressor(model="ridge", cv=1).fit_table(LatencyTable.load(PIXEL1_TABLE))
    return predictor.save(folder / "predictor.json")


def unwritable_folder(tmp_path: Path) -> Path:
    """An existing folder in which creating a file really fails for the user running the tests, root included.

    A non-root user gets a ``chmod 0o555`` folder under ``tmp_path``. Root writes through permission bits, and
    ``os.access`` says yes to root everywhere, so root gets a kernel folder that refuses every new file with
    "permission denied" (sysfs' ``/sys/kernel``); the test is skipped where no such folder exists.
    """
    import errno

    import pytest

    candidates = []
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        candidates.append(folder)
    candidates += [Path("/sys/kernel"), Path("/sys")]
    for folder in candidates:
        if not folder.is_dir():
            continue
        try:
            fd, name = tempfile.mkstemp(dir=folder)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return folder
            continue
        os.close(fd)
        os.unlink(name)
    pytest.skip("no folder here refuses new files to this user")
