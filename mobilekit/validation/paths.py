"""One path check for every input and output a command names.

Inputs must exist, be of the right kind (file or folder) and be readable; outputs must not be an existing file
where a folder belongs (or the reverse), must not sit under a file, and their folder must be writable. Errors are
:class:`~mobilekit.errors.OptionError` (or the ``error`` type given) with one line: ``--table PATH: <why>; <fix>``.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from mobilekit.errors import MobilekitError, OptionError


def _label(path: str | Path, option: str) -> str:
    return f"{option} {path}" if option else str(path)


def _checked_path(path: str | Path, option: str, error: type[MobilekitError]) -> Path:
    text = str(path)
    if not text.strip():
        raise error(f"{option or 'path'}: empty path; give a file or folder name")
    if "\0" in text:
        raise error(f"{_label(repr(text), option)}: a path cannot contain NUL")
    return Path(text).expanduser()


def _stat_error(exc: OSError, where: str, error: type[MobilekitError], what: str) -> MobilekitError:
    reason = exc.strerror or exc.__class__.__name__
    return error(f"{where}: cannot use it as {what} ({reason})")


def check_input_file(path: str | Path, option: str = "", error: type[MobilekitError] = OptionError,
                     missing: str = "no such file") -> Path:
    """``path`` as a readable regular file, or ``error``: missing, a folder, unreadable, or a name too long."""
    p = _checked_path(path, option, error)
    where = _label(p, option)
    try:
        if p.is_dir():
            raise error(f"{where}: is a folder; pass a file")
        if not p.exists():
            raise error(f"{where}: {missing}")
        if not p.is_file():
            raise error(f"{where}: not a regular file; pass a file")
    except OSError as exc:
        raise _stat_error(exc, where, error, "an input file") from None
    if not os.access(p, os.R_OK):
        raise error(f"{where}: not readable (permission denied); fix its permissions")
    return p


def check_input_dir(path: str | Path, option: str = "", error: type[MobilekitError] = OptionError,
                    missing: str = "no such folder") -> Path:
    """``path`` as a readable folder, or ``error``."""
    p = _checked_path(path, option, error)
    where = _label(p, option)
    try:
        if not p.exists():
            raise error(f"{where}: {missing}")
        if not p.is_dir():
            raise error(f"{where}: is a file; pass a folder")
    except OSError as exc:
        raise _stat_error(exc, where, error, "an input folder") from None
    if not os.access(p, os.R_OK | os.X_OK):
        raise error(f"{where}: not readable (permission denied); fix its permissions")
    return p


def write_probe(folder: str | Path) -> OSError | None:
    """Whether a file can really be created in the existing ``folder``: ``None``, or the ``OSError`` that says why not.

    Creates and removes one uniquely named empty file (``tempfile.mkstemp``, never an existing name), because
    ``os.access`` answers for the permission bits only: as root it says yes for a read-only mount, ``/sys`` or a
    full disk, where the first real write then fails mid-run.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=".mobilekit-write-probe-", dir=folder)
    except OSError as exc:
        return exc
    os.close(fd)
    try:
        os.unlink(name)
    except OSError as exc:  # created but cannot be removed: a folder mobilekit could not clean up after itself
        return exc
    return None


def os_error_reason(exc: OSError) -> str:
    """A short lower-case reason for a failed write: EACCES and EPERM both read "permission denied"."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror.lower() if exc.strerror else exc.__class__.__name__


def _check_creatable(p: Path, where: str, error: type[MobilekitError]) -> None:
    """Every existing ancestor of ``p`` must be a folder; the nearest one must be writable."""
    ancestor = p.parent
    while True:
        try:
            if ancestor.exists():
                break
        except OSError as exc:
            raise _stat_error(exc, where, error, "an output") from None
        if ancestor == ancestor.parent:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise error(f"{where}: {ancestor} is a file, so nothing can be written under it; choose another path")
    failure = write_probe(ancestor)
    if failure is not None:
        raise error(f"{where}: cannot write in {ancestor} ({os_error_reason(failure)}); choose another path")


def check_output_file(path: str | Path, option: str = "", error: type[MobilekitError] = OptionError) -> Path:
    """``path`` as a file that can be (re)written: not a folder, not under a file, its folder writable."""
    p = _checked_path(path, option, error)
    where = _label(p, option)
    try:
        if p.is_dir():
            raise error(f"{where}: is a folder; give the path of a file")
        if p.exists() and not os.access(p, os.W_OK):
            raise error(f"{where}: exists and is not writable (permission denied); choose another path")
    except OSError as exc:
        raise _stat_error(exc, where, error, "an output file") from None
    _check_creatable(p, where, error)
    return p


def check_output_dir(path: str | Path, option: str = "", error: type[MobilekitError] = OptionError) -> Path:
    """``path`` as a folder that exists and is writable, or can be created."""
    p = _checked_path(path, option, error)
    where = _label(p, option)
    try:
        if p.exists():
            if not p.is_dir():
                raise error(f"{where}: is an existing file; give a folder (it is created if missing)")
    except OSError as exc:
        raise _stat_error(exc, where, error, "an output folder") from None
    if p.is_dir():
        failure = write_probe(p)
        if failure is not None:
            raise error(f"{where}: not writable ({os_error_reason(failure)}); choose another folder")
        return p
    _check_creatable(p, where, error)
    return p
