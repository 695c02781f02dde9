"""One way every mobilekit writer puts a file on disk: a secure temp file in the target folder, then an atomic
rename; never through a symlink.

* The temp file is made with :func:`tempfile.mkstemp` in the target's own folder (unpredictable name, created
  ``O_EXCL`` with mode 0600, so a planted symlink or file of the same name cannot be followed or reused).
* The target is refused when it is a symlink (``os.replace`` would replace the link itself, but callers that
  open the target in place would follow it; refusing is the one rule for both), or when it exists and is not a
  regular file (a folder, a device node, a FIFO).
* The data is flushed and fsynced, then ``os.replace`` makes it appear at once; a failure removes the temp file.
* **Never replace a file mobilekit did not create.** Every folder mobilekit writes into gets a manifest,
  ``.mobilekit-manifest``, listing the names of the files mobilekit wrote there (updated under an
  ``flock`` on the folder, so parallel workers writing one folder lose no entry). A file that already exists
  is replaced (or appended to, or removed) only when it is listed there, or when the caller's ``recognise``
  check says it is a file of mobilekit's own format (a latency table, an Optuna study mobilekit made: files
  from before the manifest, or shipped with mobilekit). Anything else is refused with one line.

Errors are :class:`mobilekit.errors.OutputError` with one line naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from mobilekit.errors import MobilekitError


class OutputError(MobilekitError):
    """An output file cannot be written safely (symlink, not a regular file, OS error)."""


def _existing_entry(path: Path, option: str) -> os.stat_result | None:
    """``lstat`` of ``path``, or None when it is absent; :class:`OutputError` when a parent is a file, the entry
    cannot be checked, or it is a symlink (messages name ``option``)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
        raise OutputError(f"{blocker}: is a file, not a folder, so {path} cannot be written; use another "
                          f"{option}") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot check it ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"{path}: is a symlink; mobilekit never writes through one: remove it or use "
                          f"another {option}")
    return st


def check_target(path: str | Path, option: str = "--out") -> Path:
    """Raise :class:`OutputError` unless ``path`` is absent or a regular file that is not a symlink; the message
    names ``option`` (the flag that gave the path) as the one to change."""
    target = Path(path)
    st = _existing_entry(target, option)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{target}: exists and is not a regular file; remove it or use another {option}")
    return target


def check_folder(path: str | Path, option: str = "--out") -> Path:
    """Raise :class:`OutputError` unless ``path`` is absent or a real folder (not a symlink to one): a subfolder
    mobilekit makes inside an output folder (``cells/``, ``runs/NAME/``) must not lead anywhere else. Messages
    name ``option``."""
    folder = Path(path)
    st = _existing_entry(folder, option)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{folder}: exists and is not a folder; move it away or use another {option}")
    return folder


MANIFEST_NAME = ".mobilekit-manifest"
MANIFEST_FORMAT = "mobilekit-manifest"
Recognise = Callable[[Path], bool]


def manifest_path(folder: str | Path) -> Path:
    """The manifest of ``folder`` (``FOLDER/.mobilekit-manifest``)."""
    return Path(folder) / MANIFEST_NAME


def written_by_mobilekit(folder: str | Path) -> set[str]:
    """Names of the files in ``folder`` that mobilekit wrote (its manifest; empty when there is none).

    Raises:
        OutputError: the manifest is a symlink, not a regular file, or not a mobilekit manifest.
    """
    path = manifest_path(folder)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise OutputError(f"{path}: cannot check it ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path}: is not a regular file (a symlink?); mobilekit keeps the list of files it "
                          "wrote there: remove it or use another --out")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            data = json.loads(handle.read(8 * 1024 * 1024).decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise OutputError(f"{path}: not a mobilekit manifest ({type(exc).__name__}); remove it or use another "
                          "--out") from None
    files = data.get("files") if isinstance(data, dict) else None
    if (not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(files, list)
            or not all(isinstance(name, str) for name in files)):
        raise OutputError(f"{path}: not a mobilekit manifest (expected format {MANIFEST_FORMAT!r} and a list "
                          "'files'); remove it or use another --out")
    return set(files)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the folder itself (no lock file), held while its manifest is updated."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise OutputError(f"{folder}: cannot open the folder ({exc.strerror or type(exc).__name__})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _update_manifest(folder: Path, add: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> None:
    with _folder_lock(folder):
        names = written_by_mobilekit(folder)
        new = (names | set(add)) - set(drop)
        if new == names and manifest_path(folder).exists():
            return
        text = json.dumps({"format": MANIFEST_FORMAT, "version": 1,
                           "about": "files mobilekit wrote in this folder; it replaces or removes only these",
                           "files": sorted(new)}, indent=1) + "\n"
        _replace_bytes(manifest_path(folder), text.encode("utf-8"))


def claim(path: str | Path, recognise: Recognise | None = None, option: str = "--out") -> Path:
    """Check that mobilekit may write ``path``: absent, or a regular file listed in its folder's manifest, or
    one that ``recognise(path)`` accepts as mobilekit's own format. Returns ``path``. Messages name ``option``.

    Raises:
        OutputError: a symlink, not a regular file, or a file mobilekit did not write (one line, with the fix).
    """
    target = check_target(path, option)
    if target.name == MANIFEST_NAME:
        raise OutputError(f"{target}: this name is mobilekit's manifest; use another file name")
    if not os.path.lexists(target):
        return target
    if target.name in written_by_mobilekit(target.parent):
        return target
    if recognise is not None:
        try:
            accepted = bool(recognise(target))
        except Exception:  # a recogniser that cannot read the file does not accept it
            accepted = False
        if accepted:
            return target
    raise OutputError(f"{target}: exists and mobilekit did not write it (it is not listed in "
                      f"{MANIFEST_NAME}); mobilekit never replaces such a file: move it away or use another {option}")


def adopt(path: str | Path, recognise: Recognise | None = None) -> Path:
    """:func:`claim` ``path``, and list it in the manifest when it exists (a file of mobilekit's own format from
    before manifests, accepted by ``recognise``), so later writers that know no format check may replace it."""
    target = claim(path, recognise)
    if os.path.lexists(target):
        record(target)
    return target


def record(path: str | Path) -> None:
    """List ``path`` in its folder's manifest (after mobilekit wrote it)."""
    target = Path(path)
    _update_manifest(target.parent, add=(target.name,))


def remove(path: str | Path, recognise: Recognise | None = None) -> bool:
    """Delete ``path`` if mobilekit wrote it (see :func:`claim`) and drop it from the manifest. Returns whether
    a file was deleted.

    Raises:
        OutputError: ``path`` is a symlink, not a regular file, or not mobilekit's.
    """
    target = claim(path, recognise)
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OutputError(f"{target}: cannot remove it ({exc.strerror or type(exc).__name__})") from None
    _update_manifest(target.parent, drop=(target.name,))
    return True


def rename(source: str | Path, destination: str | Path) -> Path:
    """Move a file mobilekit wrote to ``destination`` in the same folder (e.g. ``model.onnx`` ->
    ``model.onnx.failed``); both names must pass :func:`claim`. The manifest follows."""
    src, dst = claim(source), claim(destination)
    try:
        os.replace(src, dst)
    except OSError as exc:
        raise OutputError(f"{src}: cannot rename it to {dst.name} ({exc.strerror or type(exc).__name__})") from None
    if src.parent == dst.parent:
        _update_manifest(dst.parent, add=(dst.name,), drop=(src.name,))
    else:
        _update_manifest(src.parent, drop=(src.name,))
        record(dst)
    return dst


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
def _atomic_tmp(target: Path, suffix: str) -> Iterator[Path]:
    """The secure temp + atomic rename, without the manifest (used for the manifest itself)."""
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


def _replace_bytes(target: Path, data: bytes) -> None:
    check_target(target)
    with _atomic_tmp(target, ".tmp") as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", recognise: Recognise | None = None) -> Iterator[Path]:
    """Yield a fresh temp path (an empty file made by ``mkstemp``) in ``path``'s folder; on a clean exit it is
    fsynced and renamed onto ``path`` (and ``path`` is listed in the folder's manifest), on an exception
    removed. For writers that need a file name (matplotlib, ``torch.save``, ONNX exporters); ``suffix`` keeps an
    extension a library looks at (``.png``, ``.onnx``). An existing ``path`` must pass :func:`claim`."""
    target = claim(path, recognise)
    _ensure_folder(target.parent)
    with _atomic_tmp(target, suffix) as tmp:
        yield tmp
        # listed before the rename, so a process killed between the two never leaves a file of its own unlisted
        record(target)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", recognise: Recognise | None = None,
                **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Like ``open(path, mode)`` (``"w"``/``"wb"``) but through :func:`atomic_path`; the handle writes the temp
    file, opened with ``O_NOFOLLOW``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode {mode!r}; use 'w' or 'wb'")
    with atomic_path(path, recognise=recognise) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def write_bytes(path: str | Path, data: bytes, recognise: Recognise | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_open(path, "wb", recognise=recognise) as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | Path, text: str, newline: str | None = None, recognise: Recognise | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", recognise=recognise, encoding="utf-8", newline=newline) as handle:
        handle.write(text)
    return Path(path)


def write_with(path: str | Path, writer: Callable[[Path], Any], suffix: str = ".tmp",
               recognise: Recognise | None = None) -> Path:
    """Call ``writer(temp_path)`` then rename onto ``path`` atomically, e.g.
    ``write_with(p, lambda t: fig.savefig(t, format="png"), suffix=".png")``."""
    with atomic_path(path, suffix=suffix, recognise=recognise) as tmp:
        writer(tmp)
    return Path(path)


def save_figure(fig: Any, path: str | Path, **savefig_kwargs: Any) -> Path:
    """``fig.savefig`` through :func:`write_with`; the format follows ``path``'s extension (PNG without one)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    savefig_kwargs.setdefault("format", fmt)
    return write_with(path, lambda tmp: fig.savefig(tmp, **savefig_kwargs), suffix=f".{fmt}")


def append_line(path: str | Path, line: str) -> None:
    """Append one line to ``path`` (created if absent), never through a symlink (``O_NOFOLLOW``); for logs that
    grow one record at a time (``metrics.jsonl``). An existing file must be one mobilekit wrote."""
    target = claim(path)
    if not os.path.lexists(target):
        record(target)  # listed before it is created (a kill in between leaves no unlisted file of ours)
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
