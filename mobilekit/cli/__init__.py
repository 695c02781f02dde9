"""The ``mobilekit`` command: a thin layer over the library. Each sub-command lives in its own module
(:mod:`.export`, :mod:`.profile`, :mod:`.latency`, :mod:`.search`) exposing ``register(subparsers)``; every
command calls public library functions that a notebook user can call directly.

Errors the user can fix (:class:`~mobilekit.errors.MobilekitError`) are printed as one line on stderr with exit
code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from mobilekit import __version__
from mobilekit.errors import MobilekitError
from mobilekit.interrupts import handled_interrupts, raise_if_stop_requested
from mobilekit.validation.options import OneLineArgumentParser, exit_code

COMMAND_MODULES = ("export", "profile", "devices", "latency", "search", "compare", "tune")  # tests check that all of them register


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="mobilekit",
        description="Hardware-aware mobile model design: profile -> latency model -> search -> export.",
    )
    parser.add_argument("--version", action="version", version=f"mobilekit {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="keep TensorFlow/absl/XNNPACK start-up messages (default: only their errors)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"mobilekit.cli.{name}") is not None:
            importlib.import_module(f"mobilekit.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # a bad option is one line on stderr, exit 2
    except SystemExit as exc:
        return exit_code(exc)
    quiet_native_logs(verbose=args.verbose)
    try:
        with handled_interrupts():
            code = int(args.func(args) or 0)
            if code == 0:
                raise_if_stop_requested()    # a Ctrl-C that arrived after the command's last safe point
            return code
    except MobilekitError as exc:
        print(f"mobilekit {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system said no (disk full, permission denied) after the checks passed
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"mobilekit {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mobilekit {args.command}: interrupted; finished work is saved, re-run with the same options to resume",
              file=sys.stderr)
        return 130


#: Environment variables of the native libraries' loggers (TensorFlow/LiteRT and XNNPACK, glog): 2 = errors only.
NATIVE_LOG_LEVELS = {"TF_CPP_MIN_LOG_LEVEL": "2", "GLOG_minloglevel": "2"}


def quiet_native_logs(verbose: bool = False) -> None:
    """Silence TensorFlow/absl/XNNPACK start-up lines below errors (they break progress bars and clutter logs),
    or with ``verbose`` show them all. Read by those libraries when they load, so called before any is imported;
    a value the user set in the environment is kept."""
    for name, quiet in NATIVE_LOG_LEVELS.items():
        if verbose:
            os.environ[name] = "0"
        else:
            os.environ.setdefault(name, quiet)
    if not verbose and "absl.logging" in sys.modules:
        sys.modules["absl.logging"].set_verbosity("error")


def _one_line(message: str) -> str:
    return " ".join(message.split()) or "failed"


if __name__ == "__main__":
    sys.exit(main())
