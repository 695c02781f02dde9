"""One writer per run folder, latency table and tune output folder: a lock file with stale-lock takeover.

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local and NFSv3+ file systems, never through a
symlink) holding ``PID@HOST`` of its holder. A second writer finds it and is refused with one line naming the
holder. A lock left by a process that died (same host, the process no longer exists) is taken over; the
takeover re-checks, under an ``flock`` of the stale file, that the file it removes is the very one it read, so
two processes taking over at once cannot both win. A lock of another host is never taken over (its process
cannot be probed from here): the message says to remove it by hand once that process is gone.

Used by ``compare`` (one lock per cell, :func:`try_lock`) and by ``search``, ``profile`` and ``tune``
(:func:`exclusive`, held for the whole command).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
from pathlib import Path
from typing import Iterator

from mobilekit.errors import MobilekitError
from mobilekit.processes import process_alive


class LockedError(MobilekitError):
    """Another process is writing the same run, table or study."""


def _identity() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _parse(text: str) -> tuple[int, str | None] | None:
    """``(pid, host)`` of a lock's content (``PID@HOST``, or a bare ``PID`` as compare wrote it before), or None."""
    pid_text, _, host = text.strip().partition("@")
    try:
        pid = int(pid_text)
    except ValueError:
        return None
    return (pid, host or None) if pid > 0 else None


def read_holder(lock: str | Path) -> tuple[int, str | None] | None:
    """The holder recorded in ``lock`` (never followed through a symlink), or None when absent or unreadable."""
    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        try:
            return _parse(handle.read(256).decode("utf-8", errors="replace"))
        except OSError:
            return None


def check_lock(lock: str | Path) -> None:
    """Raise :class:`LockedError` (one line) when a file at ``lock``'s name is not a lock mobilekit could hold or
    take over: a symlink, a folder or other non-regular file, or a regular file whose content is not ``PID@HOST``
    (or a bare ``PID``). Absent passes, and so does an empty file (a lock another process is creating). A command
    calls it before it starts, so such a file is refused at once, not found mid-run (where :func:`try_lock`
    treats it as held and the work it guards is skipped)."""
    lock = Path(lock)
    fix = "it is not a mobilekit lock: move it away (or use another --out)"
    try:
        st = os.lstat(lock)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LockedError(f"{lock}: cannot check it ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISLNK(st.st_mode):
        raise LockedError(f"{lock}: is a symlink; {fix}")
    if not stat.S_ISREG(st.st_mode):
        raise LockedError(f"{lock}: is not a regular file; {fix}")
    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            text = handle.read(257).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return  # released meanwhile
    except OSError as exc:
        raise LockedError(f"{lock}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    if text.strip() and (len(text) > 256 or _parse(text) is None):
        raise LockedError(f"{lock}: holds no process id; {fix}")


def _is_stale(holder: tuple[int, str | None] | None) -> bool:
    if holder is None:
        return False  # unreadable or not a lock of ours: never removed
    pid, host = holder
    if host is not None and host != socket.gethostname():
        return False
    return pid != os.getpid() and not process_alive(pid)


def _take_over(lock: Path) -> bool:
    """Remove ``lock`` if it is stale; True when it was removed (or had vanished)."""
    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino != os.lstat(lock).st_ino:
                return True  # someone else replaced it meanwhile: start over
        except FileNotFoundError:
            return True
        os.lseek(fd, 0, os.SEEK_SET)
        if not _is_stale(_parse(os.read(fd, 256).decode("utf-8", errors="replace"))):
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        return True
    finally:
        os.close(fd)


def try_lock(lock: str | Path) -> bool:
    """Take ``lock`` for this process. False when another live process holds it (or it is not a lock file);
    True when this process holds it (already, or now, also after taking over a dead process's lock)."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except FileExistsError:
            holder = read_holder(lock)
            if holder is not None and holder[0] == os.getpid() and holder[1] in (None, socket.gethostname()):
                return True
            if not _take_over(lock):
                return False
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(_identity())
        return True
    return False


def release(lock: str | Path) -> None:
    """Remove ``lock`` if this process holds it."""
    holder = read_holder(lock)
    if holder is not None and holder[0] == os.getpid() and holder[1] in (None, socket.gethostname()):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


@contextlib.contextmanager
def exclusive(lock: str | Path, what: str) -> Iterator[None]:
    """Hold ``lock`` while the block runs; ``what`` names the thing in the refusal (``"run folder runs/a"``).

    Raises:
        LockedError: another live process holds it (one line: who, the lock file, the fix).
    """
    lock = Path(lock)
    if not try_lock(lock):
        holder = read_holder(lock)
        who = (f"process {holder[0]}" + (f" on {holder[1]}" if holder[1] else "")) if holder else "another process"
        raise LockedError(f"{what} is in use by {who} (lock {lock}); wait for it to finish, or remove the lock if "
                          "that process is gone")
    try:
        yield
    finally:
        release(lock)
