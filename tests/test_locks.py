"""Hardening (issue 23, item 4): one writer per run folder, latency table and tune folder.

A second ``search``/``search --resume``, ``profile`` or ``tune`` on what a live process is writing is refused with
one line (exit 2) and changes nothing; a dead process's lock is taken over; of processes racing for one lock
exactly one wins."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import PIXEL1_TABLE, assert_one_line_failure, run_cli
from mobilekit import locks
from test_output_ownership import PROFILE, TINY_SEARCH, tree


@pytest.fixture
def live_pid():
    """A process that stays alive for the test (the 'first writer')."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.fixture
def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_live_holder_keeps_the_lock_a_dead_one_loses_it(tmp_path, live_pid, dead_pid):
    lock = tmp_path / "x.lock"
    lock.write_text(f"{live_pid}@{socket.gethostname()}")
    assert not locks.try_lock(lock)
    with pytest.raises(locks.LockedError, match=f"process {live_pid}") as info:
        with locks.exclusive(lock, "thing"):
            pass
    assert "\n" not in str(info.value)
    lock.write_text(str(dead_pid))  # compare's older content: a bare pid
    assert locks.try_lock(lock) and locks.read_holder(lock)[0] == os.getpid()
    locks.release(lock)
    assert not lock.exists()


def test_another_hosts_lock_garbage_and_symlinks_are_never_taken_over(tmp_path, dead_pid):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for name, make in (("host.lock", lambda p: p.write_text(f"{dead_pid}@some-other-host")),
                       ("garbage.lock", lambda p: p.write_text("not a pid")),
                       ("link.lock", lambda p: p.symlink_to(victim))):
        lock = tmp_path / name
        make(lock)
        before = tree(tmp_path)
        assert not locks.try_lock(lock)
        locks.release(lock)
        assert tree(tmp_path) == before


def _race(args) -> bool:
    lock, barrier = args
    barrier.wait()
    return locks.try_lock(lock)


def test_of_processes_racing_for_a_stale_lock_exactly_one_wins(tmp_path, dead_pid):
    for round_ in range(3):
        lock = tmp_path / f"r{round_}.lock"
        lock.write_text(str(dead_pid))
        context = multiprocessing.get_context("fork")
        barrier = context.Manager().Barrier(4)
        with context.Pool(4) as pool:
            won = pool.map(_race, [(lock, barrier)] * 4)
        assert sum(won) == 1, won


def test_a_second_search_on_a_run_in_progress_is_refused(tmp_path, live_pid):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".mobilekit-run.lock").write_text(f"{live_pid}@{socket.gethostname()}")
    before = tree(tmp_path)
    for extra in ([], ["--resume"]):
        code, _, err = run_cli(["search", *TINY_SEARCH, "--out", str(out), *extra])
        assert_one_line_failure(code, err, "in use by", str(live_pid))
    assert tree(tmp_path) == before


def test_a_second_profile_of_one_table_is_refused(tmp_path, live_pid):
    out = tmp_path / "host.json"
    out.write_text(PIXEL1_TABLE.read_text())  # a table: resumable, if nobody else were measuring it
    (tmp_path / ".host.json.lock").write_text(f"{live_pid}@{socket.gethostname()}")
    before = tree(tmp_path)
    code, _, err = run_cli([*PROFILE, "--out", str(out)])
    assert_one_line_failure(code, err, "in use by", "host.json")
    assert tree(tmp_path) == before


def test_a_second_tune_on_one_folder_is_refused(tmp_path, live_pid):
    out = tmp_path / "tune"
    out.mkdir()
    (out / ".mobilekit-tune.lock").write_text(f"{live_pid}@{socket.gethostname()}")
    before = tree(tmp_path)
    code, _, err = run_cli(["tune", "--out", str(out), "--param", "lambda:log:1e-3:1", "--trials", "1",
                            "--no-progress", "--set", f"table={PIXEL1_TABLE}", "--set", "target_ms=80"])
    assert_one_line_failure(code, err, "in use by")
    assert tree(tmp_path) == before


# ---- two writers at once (Hypothesis family) -------------------------------------------------------------------
def _hold(lock: str, ready, stop) -> None:
    """The first writer: takes the lock through mobilekit's own code and holds it until told to stop."""
    with locks.exclusive(lock, "first writer"):
        ready.set()
        stop.wait(60)


@contextlib.contextmanager
def _first_writer(lock: Path):
    context = multiprocessing.get_context("fork")
    ready, stop = context.Event(), context.Event()
    process = context.Process(target=_hold, args=(str(lock), ready, stop))
    process.start()
    try:
        assert ready.wait(30), "the first writer did not take its lock"
        yield process.pid
    finally:
        stop.set()
        process.join(30)
    assert process.exitcode == 0 and not lock.exists()  # the first writer finished and released its lock


TUNE = ["--param", "lambda:log:1e-3:1", "--trials", "1", "--no-progress", "--set", f"table={PIXEL1_TABLE}",
        "--set", "target_ms=80"]


def _second_writer(command: str, root: Path) -> tuple[Path, list[str]]:
    """(the lock the first writer holds, the second writer's argv) for ``command`` writing under ``root``."""
    if command.startswith("search"):
        out = root / "run"
        return out / ".mobilekit-run.lock", ["search", *TINY_SEARCH, "--out", str(out),
                                             *(["--resume"] if "resume" in command else [])]
    if command.startswith("profile"):
        out = root / "tables" / "host.json"
        return out.with_name(".host.json.lock"), [*PROFILE, "--out", str(out),
                                                  *(["--no-resume"] if "no-resume" in command else [])]
    out = root / "tune"
    return out / ".mobilekit-tune.lock", ["tune", "--out", str(out), *TUNE]


@settings(max_examples=10, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(["search", "search --resume", "profile", "profile --no-resume", "tune"]),
       planted=st.sampled_from(["nothing", "a table", "a user's file", "a symlink out"]))
def test_a_second_writer_while_the_first_runs_is_one_line_and_changes_nothing(command, planted):
    """A real first writer (a process inside ``locks.exclusive``) holds the run folder, table or study; the
    second, whatever else the folder holds, exits 2 with one line and every file stays byte-identical."""
    with tempfile.TemporaryDirectory(prefix="mobilekit-two-writers-") as name:
        root = Path(name)
        victim = root / "victim.bin"
        victim.write_bytes(b"outside the output folder\n")
        lock, argv = _second_writer(command, root)
        lock.parent.mkdir(parents=True)
        if planted == "a table":
            (lock.parent / ("host.json" if command.startswith("profile") else "old-table.json")).write_text(
                PIXEL1_TABLE.read_text())
        elif planted == "a user's file":
            (lock.parent / "notes.txt").write_text("mine")
        elif planted == "a symlink out":
            (lock.parent / "summary.json").symlink_to(victim)
        with _first_writer(lock) as pid:
            before = tree(root)
            code, _, err = run_cli(argv)
            assert_one_line_failure(code, err, "in use by", str(pid))
            assert tree(root) == before
