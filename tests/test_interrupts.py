"""Ctrl-C stops a long job at a safe point (mobilekit/interrupts.py): never swallowed by a garbage-collector
callback, the step's work saved, the command's one line and exit code 130; a second Ctrl-C stops at once."""

import gc
import json
import os
import signal
import weakref

import pytest

import mobilekit.search
from mobilekit.cli import main
from mobilekit.interrupts import (handled_interrupts, raise_if_stop_requested, stop_at_safe_points,
                                  stop_requested)

QUICK = ["--steps-per-epoch", "2", "--batch-size", "16", "--export", "none", "--no-progress",
         "--train-resolution", "32", "--final-epochs", "0"]


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)     # Python runs the handler in this (main) thread before the next line


@pytest.fixture(autouse=True)
def python_default_sigint():
    """As a terminal user's shell starts mobilekit: SIGINT with Python's default handler (pytest's may differ)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_inside_a_safe_stretch_the_first_ctrl_c_waits_for_the_safe_point_and_a_second_stops_at_once():
    with handled_interrupts():
        with pytest.raises(KeyboardInterrupt):
            with stop_at_safe_points():
                ctrl_c()
                assert stop_requested()                 # recorded, not raised: the step goes on
                with pytest.raises(KeyboardInterrupt):
                    ctrl_c()                            # the impatient user's second Ctrl-C
                raise_if_stop_requested()
    assert not stop_requested() and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_a_safe_stretch_ctrl_c_interrupts_at_once():
    with handled_interrupts():
        with pytest.raises(KeyboardInterrupt):
            ctrl_c()


def test_a_stop_requested_when_the_stretch_ends_is_raised_there():
    with handled_interrupts():
        with pytest.raises(KeyboardInterrupt):
            with stop_at_safe_points():
                ctrl_c()                                # no safe point reached before the stretch ends


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")   # Python's 'Exception ignored'
def test_a_ctrl_c_swallowed_by_a_garbage_collector_callback_still_stops_the_job():
    """What made 6 of 22 interrupted ``mobilekit tune`` runs go on and exit 0: Python raises KeyboardInterrupt inside
    a weakref callback during gc, prints 'Exception ignored' and drops it."""

    class Tensorish:
        pass

    swallowed = []
    with handled_interrupts():
        thing = Tensorish()
        ref = weakref.ref(thing, lambda r: (ctrl_c(), swallowed.append("not reached")))
        del thing
        gc.collect()
        assert ref() is None and not swallowed       # the callback was cut short by the KeyboardInterrupt ...
        with pytest.raises(KeyboardInterrupt):       # ... which Python ignored; the next safe point acts on it
            with stop_at_safe_points():
                raise_if_stop_requested()


def test_library_callers_keep_pythons_behaviour_without_the_handler():
    with stop_at_safe_points():
        with pytest.raises(KeyboardInterrupt):
            ctrl_c()
        raise_if_stop_requested()                    # nothing installed: never raises


def test_ctrl_c_in_a_search_step_saves_that_step_says_one_line_and_resume_finishes(tmp_path, table_path, target,
                                                                                 monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["search", "--table", str(table_path), "--target-ms", str(target), "--out", str(out), "--epochs", "3",
            *QUICK]
    real = mobilekit.search.run_search

    def interrupted(config, **kwargs):
        def press_ctrl_c(record):
            if record["step"] == 2:
                ctrl_c()                               # mid-epoch: no checkpoint is due after this step
        return real(config, **kwargs, on_step=press_ctrl_c)

    monkeypatch.setattr(mobilekit.search, "run_search", interrupted)
    assert main(args) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "--resume" in err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["phase"] == "search"] == [0, 1, 2]   # the interrupted step is kept
    monkeypatch.setattr(mobilekit.search, "run_search", real)
    assert main(args + ["--resume"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["phase"] == "search"] == [0, 1, 2, 3, 4, 5]
