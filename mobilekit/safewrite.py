"""One way every mobilekit writer puts a file on disk: a secure temp file in the target folder, then an atomic
rename; never through a symlink.

* The temp file is made with :func:`tempfile.mkstemp` in the target's own folder (unpredictable name, created
  ``O_EXCL`` with mode 0600, so a planted symlink or file of the same name cannot be followed or reused).
* The target is refused when it is a symlink (``os.replace`` would replace the link itself, but callers that
  open the target in place would follow it; refusing is the one rule for both), or when it exists and is not a
  regular file (a folder, a device node, a FIFO).
* The data is flushed and fsynced, then ``os.replace`` makes it appear at once; a failure removes the temp file.

Errors are :class:`mobilekit.errors.OutputError` with one line naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from mobilekit.errors import MobilekitError


class OutputError(MobilekitError):
    """An output file cannot be written safely (symlink, not a regular file, OS error)."""


def check_target(path: str | Path) -> Path:
    """Raise :class:`OutputError` unless ``path`` is absent or a regular file that is not a symlink."""
    target = Path(path)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise OutputError(f"{target}: cannot check it ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"{target}: is a symlink; mobilekit never writes through one: remove it or use "
                          "another --out")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{target}: exists and is not a regular file; remove it or use another --out")
    return target


def _ensure_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{folder}: exists and is not a folder; use another --out") from None
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the folder ({exc.strerror or type(exc).__name__})") from None
    if not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder; use another --out")


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a fresh temp path (an empty file made by ``mkstemp``) in ``path``'s folder; on a clean exit it is
    fsynced and renamed onto ``path``, on an exception removed. For writers that need a file name (matplotlib,
    ``torch.save``, ONNX exporters); ``suffix`` keeps an extension a library looks at (``.png``, ``.onnx``)."""
    target = check_target(path)
    _ensure_folder(target.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    except OSError as exc:
        raise OutputError(f"{target.parent}: cannot write there ({exc.strerror or type(exc).__name__}); "
                          "check the folder's permissions or use another --out") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        check_target(tmp)  # the writer must have written a regular file at the temp name, not swapped in a link
        _fsync_file(tmp)
        check_target(target)  # re-checked just before the rename
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(target.parent)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Like ``open(path, mode)`` (``"w"``/``"wb"``) but through :func:`atomic_path`; the handle writes the temp
    file, opened with ``O_NOFOLLOW``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode {mode!r}; use 'w' or 'wb'")
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | Path, text: str, newline: str | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8", newline=newline) as handle:
        handle.write(text)
    return Path(path)


def write_with(path: str | Path, writer: Callable[[Path], Any], suffix: str = ".tmp") -> Path:
    """Call ``writer(temp_path)`` then rename onto ``path`` atomically, e.g.
    ``write_with(p, lambda t: fig.savefig(t, format="png"), suffix=".png")``."""
    with atomic_path(path, suffix=suffix) as tmp:
        writer(tmp)
    return Path(path)


def save_figure(fig: Any, path: str | Path, **savefig_kwargs: Any) -> Path:
    """``fig.savefig`` through :func:`write_with`; the format follows ``path``'s extension (PNG without one)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    savefig_kwargs.setdefault("format", fmt)
    return write_with(path, lambda tmp: fig.savefig(tmp, **savefig_kwargs), suffix=f".{fmt}")


def append_line(path: str | Path, line: str) -> None:
    """Append one line to ``path`` (created if absent), never through a symlink (``O_NOFOLLOW``); for logs that
    grow one record at a time (``metrics.jsonl``)."""
    target = check_target(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except OSError as exc:
        raise OutputError(f"{target}: cannot append to it ({exc.strerror or type(exc).__name__})") from None
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(line if line.endswith("\n") else line + "\n")


def _fsync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX); a file system that cannot sync folders is left as it is."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
