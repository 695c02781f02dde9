"""Ctrl-C that stops a long job at a safe point.

Python's own SIGINT handler raises ``KeyboardInterrupt`` wherever the main thread happens to be. During a search
that is often a garbage-collector weakref callback (Optuna collects after every trial, torch frees tensors through
weakrefs), where CPython prints "Exception ignored in ..." and *drops* the exception: the job goes on as if Ctrl-C
had not been pressed and exits 0 (measured: 6 of 22 interrupted ``mobilekit tune`` runs). An exception raised
inside code that CPython runs through ``exec``/``eval`` of a string can also leave the interpreter exiting by
SIGINT after mobilekit printed its one line (exit -2 instead of 130).

So the command line installs :func:`handled_interrupts` around a command, and single-process jobs mark their
long stretches with :func:`stop_at_safe_points`. Inside such a stretch the first Ctrl-C only records the request
(and on a terminal says what will happen); the job stops where it calls :func:`raise_if_stop_requested`, at the end
of a training step after saving its checkpoint, and between tuning trials. A second Ctrl-C stops at once. Outside
those stretches (start-up, waiting on worker processes or a phone) Ctrl-C interrupts at once as usual.

Library users who call mobilekit from their own code keep Python's behaviour: nothing is installed for them, and
:func:`raise_if_stop_requested` never raises.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

_installed = False          # handled_interrupts() is active
_safe_depth = 0             # nesting depth of stop_at_safe_points()
_stop_requested = False     # a Ctrl-C arrived inside a safe-point stretch


def _on_sigint(signum: int, frame: Any) -> None:
    global _stop_requested
    if _safe_depth and not _stop_requested:
        _stop_requested = True
        if sys.stderr is not None and sys.stderr.isatty():
            print("mobilekit: stopping after the current step (saving its work); press Ctrl-C again to stop now",
                  file=sys.stderr, flush=True)
        return
    _stop_requested = True
    raise KeyboardInterrupt


@contextmanager
def handled_interrupts() -> Iterator[None]:
    """Install the safe-point SIGINT handler for the duration (main thread only, and only where SIGINT has Python's
    default handler: an ignored SIGINT, e.g. of a background job, stays ignored). Clears any stop request on exit."""
    global _installed, _stop_requested
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler or _installed):
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    _installed, _stop_requested = True, False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _installed, _stop_requested = False, False


@contextmanager
def stop_at_safe_points() -> Iterator[None]:
    """Mark a stretch of single-process work that calls :func:`raise_if_stop_requested` often (every training
    step): a first Ctrl-C inside it waits for that call. A stop requested when the stretch ends normally is raised
    there, so the command still reports the interruption."""
    global _safe_depth
    _safe_depth += 1
    try:
        yield
    finally:
        _safe_depth -= 1
    raise_if_stop_requested()


def stop_requested() -> bool:
    """True after a Ctrl-C that has not been acted on yet (only while :func:`handled_interrupts` is installed)."""
    return _installed and _stop_requested


def raise_if_stop_requested() -> None:
    """Raise ``KeyboardInterrupt`` here if Ctrl-C was pressed (a safe point: call it where the job's work so far is
    saved or can be)."""
    if stop_requested():
        raise KeyboardInterrupt
