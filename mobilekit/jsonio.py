"""JSON files as every stage writes and reads them: atomic writes, and one-line errors naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mobilekit.errors import MobilekitError


def write_json_atomic(path: str | Path, data: Any, indent: int | None = 2, **dumps_kwargs: Any) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename, so a reader (or a job
    killed mid-write) never sees a half-written file. Creates the folder."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=indent, **dumps_kwargs) + "\n")
    os.replace(tmp, target)
    return target


def read_json(path: str | Path, error: type[MobilekitError], missing: str, fix: str = "") -> Any:
    """Parse a JSON file or raise ``error`` with one line: ``PATH: <missing>`` when the file does not exist,
    ``PATH: not valid JSON (line L: reason)<fix>`` when it cannot be parsed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}){fix}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not valid JSON (not UTF-8 text){fix}") from None
