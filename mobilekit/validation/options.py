"""Command-line options, checked by argparse as they are parsed.

``type=`` converters raise :class:`argparse.ArgumentTypeError` with the allowed range, and
:class:`OneLineArgumentParser` prints every parse error as ONE line (``mobilekit latency fit: error: argument
--cv: must be an integer >= 1, got '0'``) with exit code 2, instead of argparse's usage block.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn


class OneLineArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors are one line on stderr (exit 2); ``--help`` is unchanged.
    Sub-parsers made with ``add_subparsers`` are of the same class."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {text}; see '{self.prog} --help'\n")


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except (ValueError, AttributeError):
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def int_at_least(low: int, why: str = "") -> Callable[[str], int]:
    """A converter for integers ``>= low``."""

    def convert(text: str) -> int:
        value = _int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}{why}, got {text!r}")
        return value

    convert.__name__ = f"integer >= {low}"
    return convert


def int_in(low: int, high: int, why: str = "") -> Callable[[str], int]:
    """A converter for integers in ``[low, high]``: a range a real user could need and no more (a huge value
    would run for days or exhaust memory before saying anything)."""

    def convert(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}{why}, got {text!r}")
        return value

    convert.__name__ = f"integer in {low}..{high}"
    return convert


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def finite_float(text: str) -> float:
    """A finite number (no nan, inf)."""
    try:
        value = float(text.strip())
    except (ValueError, AttributeError):
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def nonempty_text(text: str) -> str:
    """A string that is not empty or blank."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    if "\0" in text:
        raise argparse.ArgumentTypeError("must not contain NUL")
    return text


def exit_code(exc: SystemExit) -> int:
    """The exit status a :class:`SystemExit` carries (argparse uses 0 for --help and 2 for errors)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
