"""Progress display that keeps redirected logs clean.

On a terminal a ``tqdm`` bar is shown (its last line is left on the screen). Anywhere else (``> run.log``, a pipe,
a CI job) no ``\\r`` or cursor codes are written: :class:`EpochLines` prints one plain line per finished epoch
instead, with the same description and postfix a bar would show.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator, TextIO


class EpochLines:
    """The subset of the ``tqdm`` interface :class:`mobilekit.search.training.Phase` uses, printing one line per
    epoch (``"search epoch 2/5: CE 1.234 ..."``) and nothing in between."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.description = ""
        self.postfix = ""
        self.total = 0
        self.n = 0

    def reset(self, total: int = 0) -> None:
        self.total, self.n = total, 0

    def set_description(self, description: str) -> None:
        self.description = description

    def set_postfix_str(self, postfix: str) -> None:
        self.postfix = postfix

    def update(self, n: int = 1) -> None:
        self.n += n

    def end_epoch(self, epoch: int, epochs: int) -> None:
        """Print the line of finished epoch ``epoch`` (1-based) of ``epochs``."""
        line = f"{self.description} epoch {epoch}/{epochs}" + (f": {self.postfix}" if self.postfix else "")
        print(line, file=self.stream, flush=True)

    @contextlib.contextmanager
    def external_write_mode(self) -> Iterator[None]:
        yield

    def close(self) -> None:
        pass


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) is an interactive terminal."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


def progress_display(stream: TextIO | None = None) -> Any:
    """A ``tqdm`` bar on a terminal (left on screen when closed), otherwise :class:`EpochLines`."""
    stream = stream if stream is not None else sys.stderr
    if not is_terminal(stream):
        return EpochLines(stream)
    from tqdm.auto import tqdm

    return tqdm(total=0, dynamic_ncols=True, leave=True, file=stream)
