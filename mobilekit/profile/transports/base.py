"""What the profiler needs from a device, independent of how it is reached.

A :class:`DeviceTransport` copies files to and from a device and runs commands there. Commands are given as
an argv list and every element is shell-quoted (:func:`shlex.quote`) before it is sent, so file names with
spaces, quotes, ``;``, ``$(...)`` or backticks reach the program as one literal argument and are never run.
The exit status is recovered by appending ``; echo "__MK_EXIT=$?"`` (old-style ADB shells do not report it)
and taking the marker off the end of the output.

The error classes below are :class:`mobilekit.errors.DeviceError` subclasses; their messages are one line
that names the device address and what to do about it.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import stat as stat_module
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from mobilekit.errors import DeviceError

__all__ = [
    "DeviceAuthError",
    "DeviceConnectionError",
    "DeviceDisconnectedError",
    "DeviceNotFoundError",
    "DeviceTimeoutError",
    "DeviceTransport",
    "EXIT_MARKER",
    "RemoteFileError",
    "RemoteStat",
    "ShellResult",
    "build_shell_command",
    "check_remote_path",
    "join_remote",
    "parse_shell_output",
    "quote_argv",
]

#: Marker appended to every shell command to learn its exit status.
EXIT_MARKER = "__MK_EXIT="
_EXIT_RE = re.compile(re.escape(EXIT_MARKER) + r"(\d+)\r?\n?\Z")
#: Longest remote path the ADB sync protocol accepts (bytes).
MAX_REMOTE_PATH = 1024


class DeviceConnectionError(DeviceError):
    """The device (or the adb server) cannot be reached: refused, unreachable, wrong address."""


class DeviceNotFoundError(DeviceError):
    """No device with the requested serial / address is attached."""


class DeviceAuthError(DeviceError):
    """The device did not accept this host's key (the USB-debugging prompt was not accepted)."""


class DeviceTimeoutError(DeviceError):
    """The device stopped answering within the time allowed."""


class DeviceDisconnectedError(DeviceError):
    """The connection to the device was lost in the middle of an operation."""


class RemoteFileError(DeviceError):
    """A file operation on the device failed (missing file, permission denied, disk full)."""


@dataclass(frozen=True)
class ShellResult:
    """Output of one remote command.

    ``output`` is stdout and stderr as the device interleaved them (old-style ADB shell merges them), decoded
    as UTF-8 with replacement characters for invalid bytes. ``exit_code`` is ``None`` when the command ended
    without reporting one (e.g. the shell itself was killed).
    """

    output: str
    exit_code: int | None

    @property
    def ok(self) -> bool:
        """True if the command exited with status 0."""
        return self.exit_code == 0


@dataclass(frozen=True)
class RemoteStat:
    """``stat`` of a remote path as the ADB sync protocol reports it."""

    size: int
    """Size in bytes (32-bit in the v1 sync protocol)."""
    mode: int
    """``st_mode`` bits (file type and permissions)."""
    mtime: int
    """Modification time, seconds since the epoch."""

    @property
    def is_dir(self) -> bool:
        """True for a directory."""
        return stat_module.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        """True for a regular file."""
        return stat_module.S_ISREG(self.mode)


@runtime_checkable
class DeviceTransport(Protocol):
    """A way to move files to a device and run commands on it."""

    def push(self, local_paths: Sequence[Path], remote_dir: str) -> list[str]:
        """Copy files into ``remote_dir`` (created if missing) in one batch; return the remote paths."""
        ...

    def shell(self, argv: Sequence[str], timeout_s: float = 600) -> ShellResult:
        """Run ``argv`` (each element shell-quoted) and wait at most ``timeout_s`` seconds."""
        ...

    def pull(self, remote_path: str, local_path: Path) -> None:
        """Copy one remote file to ``local_path``."""
        ...

    def stat(self, remote_path: str) -> RemoteStat | None:
        """Size, mode and mtime of a remote path, or ``None`` if it does not exist."""
        ...

    def remove(self, remote_paths: Sequence[str]) -> None:
        """Delete remote files (missing ones are ignored)."""
        ...

    def close(self) -> None:
        """Release the connection; further calls fail."""
        ...


def quote_argv(argv: Sequence[str]) -> str:
    """Join ``argv`` into one shell command line, quoting every element with :func:`shlex.quote`."""
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a sequence of arguments, not a single string")
    if not argv:
        raise ValueError("argv is empty")
    parts = []
    for arg in argv:
        if not isinstance(arg, str):
            raise TypeError(f"argv elements must be str, got {type(arg).__name__}")
        if "\0" in arg:
            raise ValueError("argv elements must not contain NUL bytes")
        parts.append(shlex.quote(arg))
    return " ".join(parts)


def build_shell_command(argv: Sequence[str]) -> str:
    """The command line sent to the device: quoted ``argv`` followed by the exit-status marker."""
    return f'{quote_argv(argv)}; echo "{EXIT_MARKER}$?"'


def parse_shell_output(raw: bytes) -> ShellResult:
    """Split the exit-status marker off the raw output of :func:`build_shell_command`."""
    text = raw.decode("utf-8", errors="replace")
    match = _EXIT_RE.search(text)
    if match is None:
        return ShellResult(output=text, exit_code=None)
    return ShellResult(output=text[: match.start()], exit_code=int(match.group(1)))


def check_remote_path(remote_path: str) -> str:
    """Validate an absolute POSIX device path and return it normalised (no ``..`` or ``//``)."""
    if not isinstance(remote_path, str) or not remote_path:
        raise ValueError("remote path must be a non-empty string")
    if not remote_path.startswith("/"):
        raise ValueError(f"remote path must be absolute, got {remote_path!r}")
    if "\0" in remote_path:
        raise ValueError(f"remote path must not contain NUL: {remote_path!r}")
    normalised = posixpath.normpath(remote_path)
    if normalised.startswith("//"):
        normalised = "/" + normalised.lstrip("/")
    if len(normalised.encode("utf-8")) > MAX_REMOTE_PATH:
        raise ValueError(f"remote path longer than {MAX_REMOTE_PATH} bytes: {remote_path[:60]!r}...")
    return normalised


def join_remote(remote_dir: str, name: str) -> str:
    """``remote_dir/name`` for a single file name (no ``/``, not ``.`` or ``..``)."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a plain file name: {name!r}")
    return check_remote_path(posixpath.join(check_remote_path(remote_dir), name))
