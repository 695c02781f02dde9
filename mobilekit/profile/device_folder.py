"""Where mobilekit may write on a phone, and what it may delete there.

mobilekit works on a device only inside its own folder, ``<device_dir>/mobilekit-run``:

* ``device_dir`` (from the device descriptor) is normalised with :func:`posixpath.normpath` and must lie in
  :data:`SAFE_ROOT` (``/data/local/tmp``, the folder Android gives the shell user for exactly this); anything
  else, ``..`` escapes included, is refused by :func:`check_device_dir` with a one-line
  :class:`~mobilekit.errors.DeviceError`.
* Then, on the device, before anything is created or removed, ``device_dir`` is resolved with ``readlink -f``
  (its deepest existing part; arguments shell-quoted) by :meth:`DeviceWorkFolder.open`: a path that passes
  through a symlink out of :data:`SAFE_ROOT` (``/data/local/tmp/link/sub`` with ``link -> /sdcard``) is refused
  with one line, and every later ``mkdir``/``rm``/``rmdir`` uses the resolved path. After ``mkdir -p`` the
  work folder is resolved again and must be exactly where it was expected (a swap in between is refused).
* The work folder is created by mobilekit and holds a marker file (:data:`MARKER_NAME`). A work folder without
  the marker was not made by mobilekit and is never touched: opening it fails with the fix.
* Before a file is pushed its name is appended to a manifest (:data:`MANIFEST_NAME`) in the work folder. After an
  interrupted run, the next run deletes exactly the files the manifest names, nothing matched by a pattern.
  Closing deletes what this run pushed, the manifest, the marker and the (then empty) work folder, and
  ``device_dir`` itself only if this run created it.

A user's own files in ``device_dir`` (or anywhere else on the phone) are never listed, matched or deleted.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from pathlib import Path

from mobilekit.errors import DeviceError

#: ``device_dir`` must be this folder or inside it.
SAFE_ROOT = "/data/local/tmp"
#: mobilekit's own folder inside ``device_dir``.
WORK_FOLDER_NAME = "mobilekit-run"
MARKER_NAME = ".mobilekit-owned"
MANIFEST_NAME = ".mobilekit-manifest"
_MARKER_TEXT = "created by mobilekit; it deletes only the files listed in .mobilekit-manifest"


def check_device_dir(device_dir: object, source: str = "device descriptor") -> str:
    """Return ``device_dir`` normalised, or raise :class:`DeviceError` if it is not a folder in :data:`SAFE_ROOT`.

    ``"/data/local/tmp/a/../b/"`` gives ``"/data/local/tmp/b"``; ``"/sdcard/Download"`` and
    ``"/data/local/tmp/../../../sdcard"`` are refused.
    """
    fix = f'; use a folder in {SAFE_ROOT}, e.g. device_dir = "{SAFE_ROOT}/mobilekit"'
    if not isinstance(device_dir, str) or not device_dir.strip():
        raise DeviceError(f"{source}: device_dir must be an absolute device path, got {device_dir!r}{fix}")
    if any(ch in device_dir for ch in "\0\n\r"):
        raise DeviceError(f"{source}: device_dir {device_dir!r} contains a control character{fix}")
    if not device_dir.startswith("/"):
        raise DeviceError(f"{source}: device_dir {device_dir!r} is not an absolute path{fix}")
    normalised = posixpath.normpath(device_dir)
    if normalised.startswith("//"):
        normalised = "/" + normalised.lstrip("/")
    if normalised != SAFE_ROOT and not normalised.startswith(SAFE_ROOT + "/"):
        raise DeviceError(f"{source}: device_dir {device_dir!r} (= {normalised}) is outside {SAFE_ROOT}, where "
                          f"mobilekit may write and delete its files{fix}")
    return normalised


def _plain_name(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or any(ch in name for ch in "\0\n\r"):
        raise DeviceError(f"cannot push {name!r} to a device: not a plain file name; rename the file")
    return name


class DeviceWorkFolder:
    """mobilekit's own folder on a device (see the module docstring). ``transport`` is a
    :class:`~mobilekit.profile.transports.DeviceTransport`; ``label`` names the device in messages."""

    def __init__(self, transport, device_dir: str, label: str, timeout_s: float = 60) -> None:
        self.transport = transport
        self.device_dir = check_device_dir(device_dir)
        self.path = posixpath.join(self.device_dir, WORK_FOLDER_NAME)
        self.label = label
        self._timeout_s = timeout_s
        self._created_device_dir = False
        self._pushed: dict[str, None] = {}  # remote paths of this run, in push order
        self._open = False
        self._resolved_root = SAFE_ROOT

    def _file(self, name: str) -> str:
        return posixpath.join(self.path, _plain_name(name))

    def _shell(self, argv: Sequence[str]):
        return self.transport.shell(list(argv), timeout_s=self._timeout_s)

    def _resolve(self, device_path: str) -> str:
        """``device_path`` as the device resolves it: ``readlink -f`` of its deepest existing part (found on
        the device, so a symlink anywhere on the way counts) joined with the parts that do not exist yet.

        Raises:
            DeviceError: the device cannot resolve it.
        """
        script = ('p="$0"; while [ ! -e "$p" ] && [ ! -L "$p" ] && [ "$p" != / ]; do p=$(dirname "$p"); done; '
                  'r=$(readlink -f "$p") && printf "mobilekit-resolved\\n%s\\n%s\\n" "$p" "$r"')
        result = self._shell(["sh", "-c", script, device_path])
        lines = [line.rstrip("\r") for line in result.output.splitlines()]
        if len(lines) < 3 or "mobilekit-resolved" not in lines[-3] or not lines[-1].startswith("/"):
            raise DeviceError(f"{self.label}: cannot resolve device_dir {device_path} on the device "
                              f"({result.output.strip()[:120]!r}); check that readlink -f works there or choose "
                              "another device_dir")
        existing, resolved = lines[-2], lines[-1]
        rest = device_path[len(existing):] if device_path.startswith(existing) else ""
        return posixpath.normpath(resolved + "/" + rest.lstrip("/")) if rest.strip("/") else posixpath.normpath(resolved)

    def _check_resolved(self, requested: str, resolved: str) -> None:
        roots = {SAFE_ROOT, self._resolved_root}
        if not any(resolved == root or resolved.startswith(root + "/") for root in roots):
            raise DeviceError(f"{self.label}: device_dir {requested} resolves on the device to {resolved}, outside "
                              f"{SAFE_ROOT} (a symlink on the way); mobilekit never writes or deletes there: use a "
                              f"real folder in {SAFE_ROOT}")

    def open(self) -> None:
        """Resolve ``device_dir`` on the device, then create the folder (or reuse one a previous run left, after
        deleting the files its manifest names).

        Raises:
            DeviceError: ``device_dir`` resolves outside :data:`SAFE_ROOT` (through a symlink), the work folder
                exists but has no marker (mobilekit did not create it), or is not a folder.
        """
        self._resolved_root = self._resolve(SAFE_ROOT)
        requested = self.device_dir
        resolved = self._resolve(requested)
        self._check_resolved(requested, resolved)
        self.device_dir = resolved
        self.path = posixpath.join(self.device_dir, WORK_FOLDER_NAME)
        self._created_device_dir = self.transport.stat(self.device_dir) is None
        existing = self.transport.stat(self.path)
        if existing is not None:
            marker = self.transport.stat(self._file(MARKER_NAME))
            if not existing.is_dir or marker is None or not marker.is_file:
                raise DeviceError(f"{self.label}: {self.path} exists but was not created by mobilekit (no "
                                  f"{MARKER_NAME} in it); mobilekit never deletes files it did not create: move it "
                                  "away or choose another device_dir")
            self._remove_listed()
        else:
            self._shell(["mkdir", "-p", self.path])
            if self._resolve(self.path) != self.path:  # swapped for a symlink between the check and mkdir
                raise DeviceError(f"{self.label}: {self.path} resolves elsewhere on the device after mkdir (a "
                                  "symlink appeared on the way); choose another device_dir")
            result = self._shell(["sh", "-c", 'printf "%s\\n" "$1" > "$0"', self._file(MARKER_NAME), _MARKER_TEXT])
            if result.exit_code not in (0, None):
                raise DeviceError(f"{self.label}: cannot create {self.path} ({result.output.strip()[:120]}); "
                                  "choose another device_dir")
        self._open = True

    def _remove_listed(self) -> None:
        """Delete the files a previous run's manifest names (plain names in this folder only)."""
        result = self._shell(["cat", self._file(MANIFEST_NAME)])
        names = []
        if result.exit_code in (0, None):
            for line in result.output.splitlines():
                name = line.strip()
                if name and "/" not in name and name not in (".", "..", MARKER_NAME, MANIFEST_NAME):
                    names.append(name)
        if names:
            self.transport.remove([self._file(name) for name in dict.fromkeys(names)])
        self.transport.remove([self._file(MANIFEST_NAME)])

    def push(self, local_paths: Sequence[Path]) -> list[str]:
        """Record the files' names in the manifest, then push them; returns their remote paths."""
        names = [_plain_name(Path(p).name) for p in local_paths]
        if not names:
            return []
        if any(name in (MARKER_NAME, MANIFEST_NAME) for name in names):
            raise DeviceError(f"cannot push a file named {MARKER_NAME} or {MANIFEST_NAME}: mobilekit uses those names")
        result = self._shell(["sh", "-c", 'printf "%s\\n" "$@" >> "$0"', self._file(MANIFEST_NAME), *names])
        if result.exit_code not in (0, None):
            raise DeviceError(f"{self.label}: cannot write {self._file(MANIFEST_NAME)} "
                              f"({result.output.strip()[:120]}); is the device's storage full?")
        remotes = self.transport.push(list(local_paths), self.path)
        self._pushed.update(dict.fromkeys(remotes))
        return remotes

    def remove(self, remote_paths: Sequence[str]) -> None:
        """Delete files this run pushed (others are ignored)."""
        mine = [p for p in remote_paths if p in self._pushed]
        if mine:
            self.transport.remove(mine)
            for path in mine:
                self._pushed.pop(path, None)

    def close(self) -> None:
        """Delete what this run pushed, the manifest and the marker, then the empty folder(s)."""
        if not self._open:
            return
        self._open = False
        self.transport.remove([*self._pushed, self._file(MANIFEST_NAME), self._file(MARKER_NAME)])
        self._pushed.clear()
        self._shell(["rmdir", self.path])  # only if empty; a failure is fine
        if self._created_device_dir:
            self._shell(["rmdir", self.device_dir])
