"""JSON files as every stage writes and reads them: atomic writes, and one-line errors naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mobilekit.errors import MobilekitError


def write_json_atomic(path: str | Path, data: Any, indent: int | None = 2, recognise: Any = None,
                      **dumps_kwargs: Any) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename, so a reader (or a job
    killed mid-write) never sees a half-written file. The file (and the rename) is fsynced; a failed write
    removes its temp file. Creates the folder. An existing file is replaced only when mobilekit wrote it (its
    folder's manifest) or ``recognise(path)`` accepts it (see :mod:`mobilekit.safewrite`)."""
    target = Path(path)
    text = json.dumps(data, indent=indent, **dumps_kwargs) + "\n"  # first: data that cannot be JSON changes no file
    from mobilekit.safewrite import write_text  # secure temp, no symlink, atomic rename (one mechanism)

    write_text(target, text, recognise=recognise)
    return target


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


def json_field_is(path: str | Path, key: str, value: Any, limit: int = 256 * 1024 * 1024) -> bool:
    """True when ``path`` is a JSON object whose ``key`` is ``value`` (a format check for
    :func:`mobilekit.safewrite.claim`: is this existing file one of mobilekit's own?). Never follows a symlink;
    files over ``limit`` bytes are not read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(limit + 1)
        if len(raw) > limit:
            return False
        data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get(key) == value


def read_json(path: str | Path, error: type[MobilekitError], missing: str, fix: str = "") -> Any:
    """Parse a JSON file or raise ``error`` with one line: ``PATH: <missing>`` when the file does not exist,
    ``PATH: not valid JSON (line L: reason)<fix>`` when it cannot be parsed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder; pass a JSON file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc.__class__.__name__})") from None
    except RecursionError:
        raise error(f"{path}: not valid JSON (nested too deeply){fix}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}){fix}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not valid JSON (not UTF-8 text){fix}") from None
