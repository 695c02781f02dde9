"""JSON files as every stage writes and reads them: atomic writes, and one-line errors naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mobilekit.errors import MobilekitError


def write_json_atomic(path: str | Path, data: Any, indent: int | None = 2, **dumps_kwargs: Any) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename, so a reader (or a job
    killed mid-write) never sees a half-written file. The file (and the rename) is fsynced; a failed write
    removes its temp file. Creates the folder."""
    target = Path(path)
    text = json.dumps(data, indent=indent, **dumps_kwargs) + "\n"  # first: data that cannot be JSON changes no file
    from mobilekit.safewrite import write_text  # secure temp, no symlink, atomic rename (one mechanism)

    write_text(target, text)
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
