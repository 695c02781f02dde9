"""ADB transport: push files to an Android device, run commands there, pull results back.

:func:`connect_adb` reaches a device in one of two ways and returns an :class:`AdbTransport`:

* **Through a running adb server** (``adb start-server``; port 5037 or ``$ANDROID_ADB_SERVER_PORT``). The
  host side of adb's "smart socket" protocol is spoken directly: each request is a 4-hex-digit length and a
  string (``host:devices``, ``host:transport:SERIAL``/``host:transport-any``, then ``shell:CMD`` or
  ``sync:``), answered by ``OKAY`` or ``FAIL`` + length + message; after that the socket carries the service's
  raw bytes.
* **Directly**, with the ``adb-shell`` library: TCP (``host:port``, e.g. wireless debugging or
  ``adb tcpip 5555``) or USB (``AdbDeviceUsb``, needs ``adb-shell[usb]``/libusb). It authenticates with the
  standard key ``~/.android/adbkey`` (+ ``adbkey.pub``), generated like adb does when missing (mode 0600).
  adb-shell does the connection, the AUTH exchange and stream multiplexing; the sync protocol below runs on
  top of its streams, so that all files of a :meth:`AdbTransport.push` go through one sync session. (That uses
  adb-shell's stream methods ``_open``/``_read_until``/``_clse``, which is why the version is pinned.)

``use_server=None`` picks the server if one answers and lists the requested serial (or, with no serial, any
device), else connects directly.

Both ways share the file-sync client (protocol v1: ``STAT``, ``SEND path,mode`` + ``DATA`` + ``DONE mtime``,
``RECV``, ``QUIT``) and the shell client: commands are argv lists, each element quoted with
:func:`shlex.quote`, with ``; echo "__MK_EXIT=$?"`` appended to learn the exit status.

Every failure is a :class:`mobilekit.errors.DeviceError` subclass (see
:mod:`mobilekit.profile.transports.base`) with a one-line message naming the device and the fix. Key
material is never logged: adb-shell's wire-level debug log is muted while it authenticates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat as stat_module
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from mobilekit import safewrite
from mobilekit.errors import DeviceError
from mobilekit.profile.transports.base import (
    DeviceAuthError,
    DeviceConnectionError,
    DeviceDisconnectedError,
    DeviceNotFoundError,
    DeviceTimeoutError,
    RemoteFileError,
    RemoteStat,
    ShellResult,
    build_shell_command,
    check_remote_path,
    join_remote,
    parse_shell_output,
)

__all__ = [
    "AdbTransport",
    "DEFAULT_SERVER_PORT",
    "connect_adb",
    "default_adb_key_path",
    "ensure_adb_key",
    "list_server_devices",
]

DEFAULT_SERVER_PORT = 5037
SYNC_DATA_MAX = 64 * 1024
_PROBE_TIMEOUT_S = 1.0
_LOG = logging.getLogger(__name__)


class _PeerClosed(ConnectionError):
    """The other end closed the TCP connection."""


class _StreamEOF(Exception):
    """A stream ended before the expected data arrived."""


class _Timeout(Exception):
    """No data within the allowed time."""


# ----------------------------------------------------------------------------------------------------------
# keys


class _AuthWireLogFilter(logging.Filter):
    """Drops adb-shell's wire-level debug records on the thread that is authenticating (they would contain
    the public key and signatures)."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self._local.on = True
        try:
            yield
        finally:
            self._local.on = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self._local, "on", False)


_AUTH_LOG_FILTER = _AuthWireLogFilter()
logging.getLogger("adb_shell.adb_device").addFilter(_AUTH_LOG_FILTER)


def default_adb_key_path() -> Path:
    """``$ANDROID_SDK_HOME/.android/adbkey`` if that variable is set, else ``~/.android/adbkey`` (as adb)."""
    sdk_home = os.environ.get("ANDROID_SDK_HOME")
    base = Path(sdk_home) if sdk_home else Path.home()
    return base / ".android" / "adbkey"


def ensure_adb_key(key_path: Path) -> Path:
    """Make sure ``key_path`` (private key, mode 0600) and ``key_path.pub`` exist; generate them like adb does.

    An existing private key is kept (only a missing ``.pub`` is re-derived from it). Returns ``key_path``.
    """
    from adb_shell.auth.keygen import keygen, write_public_keyfile

    key_path = Path(key_path).expanduser()
    pub_path = key_path.with_name(key_path.name + ".pub")
    if key_path.is_file():
        if not pub_path.is_file():
            safewrite.write_with(pub_path, lambda tmp: write_public_keyfile(str(key_path), str(tmp)))
        return key_path
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for target in (key_path, pub_path):
        safewrite.check_target(target)  # never replace a symlink or a non-regular file
    # keygen writes KEY and KEY.pub at a name it is given: give it one in a fresh private folder (mkdtemp,
    # mode 0700) beside the key, so no predictable name is ever followed, then rename both into place.
    scratch = Path(tempfile.mkdtemp(prefix=f".{key_path.name}.", dir=key_path.parent))
    tmp = scratch / "adbkey"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 before anything is written
        os.close(fd)
        keygen(str(tmp))
        os.chmod(tmp, 0o600)
        os.replace(tmp.with_name(tmp.name + ".pub"), pub_path)
        os.replace(tmp, key_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return key_path


# ----------------------------------------------------------------------------------------------------------
# byte streams: one service (shell:... or sync:) on one device


class _ByteStream(Protocol):
    max_write: int

    def write(self, data: bytes, timeout_s: float) -> None: ...

    def read(self, timeout_s: float) -> bytes: ...  # b"" at end of stream

    def close(self) -> None: ...


class _SocketStream:
    """A service reached through the adb server: the socket carries its raw bytes."""

    max_write = 256 * 1024

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def write(self, data: bytes, timeout_s: float) -> None:
        self._sock.settimeout(max(timeout_s, 0.001))
        try:
            self._sock.sendall(data)
        except TimeoutError:
            raise _Timeout() from None

    def read(self, timeout_s: float) -> bytes:
        self._sock.settimeout(max(timeout_s, 0.001))
        try:
            return self._sock.recv(256 * 1024)
        except TimeoutError:
            raise _Timeout() from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._sock.close()


class _AdbShellStream:
    """A service opened over an adb-shell ``AdbDevice`` (OPEN/WRTE/OKAY/CLSE on its connection)."""

    def __init__(self, device: object, service: bytes, timeout_s: float) -> None:
        from adb_shell import constants
        from adb_shell.adb_message import AdbMessage

        self._constants = constants
        self._message = AdbMessage
        self._device = device
        self.max_write = max(1024, int(getattr(device, "_maxdata", 4096)))
        self._closed = False
        self._info = device._open(service, timeout_s, timeout_s, None)  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def _timeout_guard(self) -> Iterator[None]:
        from adb_shell.exceptions import AdbTimeoutError, TcpTimeoutException

        try:
            yield
        except (AdbTimeoutError, TcpTimeoutException):
            raise _Timeout() from None

    def _timeouts(self, timeout_s: float) -> None:
        self._info.transport_timeout_s = max(timeout_s, 0.001)
        self._info.read_timeout_s = max(timeout_s, 0.001)

    def write(self, data: bytes, timeout_s: float) -> None:
        c = self._constants
        device = self._device
        for offset in range(0, len(data), self.max_write):
            if self._closed:
                raise _StreamEOF()
            self._timeouts(timeout_s)
            chunk = data[offset : offset + self.max_write]
            with self._timeout_guard():
                device._io_manager.send(self._message(c.WRTE, self._info.local_id, self._info.remote_id, chunk), self._info)  # type: ignore[attr-defined]
                cmd, _ = device._read_until([c.OKAY, c.CLSE], self._info)  # type: ignore[attr-defined]
            if cmd == c.CLSE:
                self._closed = True
                raise _StreamEOF()

    def read(self, timeout_s: float) -> bytes:
        c = self._constants
        if self._closed:
            return b""
        self._timeouts(timeout_s)
        with self._timeout_guard():
            cmd, data = self._device._read_until([c.WRTE, c.CLSE], self._info)  # type: ignore[attr-defined]
        if cmd == c.CLSE:
            self._closed = True
            msg = self._message(c.CLSE, self._info.local_id, self._info.remote_id)
            with contextlib.suppress(Exception):
                self._device._io_manager.send(msg, self._info)  # type: ignore[attr-defined]
            return b""
        return bytes(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._timeouts(2.0)
        with contextlib.suppress(Exception):
            self._device._clse(self._info)  # type: ignore[attr-defined]


class _Reader:
    """Exact-size reads over a byte stream."""

    def __init__(self, stream: _ByteStream, timeout_s: float) -> None:
        self._stream = stream
        self._timeout_s = timeout_s
        self._buf = bytearray()

    def exact(self, size: int) -> bytes:
        while len(self._buf) < size:
            chunk = self._stream.read(self._timeout_s)
            if not chunk:
                raise _StreamEOF()
            self._buf += chunk
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data


def _sync_request(ident: bytes, payload: bytes = b"", value: int | None = None) -> bytes:
    return ident + struct.pack("<I", len(payload) if value is None else value & 0xFFFFFFFF) + payload


# ----------------------------------------------------------------------------------------------------------
# backends


class _DirectBackend:
    """A device connected through adb-shell (TCP or USB)."""

    def __init__(self, device: object, label: str) -> None:
        self.device = device
        self.label = label

    def open(self, service: str, timeout_s: float) -> _ByteStream:
        return _AdbShellStream(self.device, service.encode("utf-8", errors="surrogateescape"), timeout_s)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.device.close()  # type: ignore[attr-defined]


def _server_request(sock: socket.socket, request: str, where: str) -> None:
    payload = request.encode("utf-8", errors="surrogateescape")
    sock.sendall(b"%04x" % len(payload) + payload)
    status = _recv_exact(sock, 4)
    if status == b"OKAY":
        return
    if status != b"FAIL":
        raise DeviceConnectionError(f"{where}: unexpected reply {status!r} from the adb server; is it an adb server?")
    length = int(_recv_exact(sock, 4), 16)
    message = _recv_exact(sock, length).decode("utf-8", errors="replace")
    raise _server_failure(message, where)


def _server_failure(message: str, where: str) -> DeviceError:
    text = message.strip()
    lowered = text.lower()
    if "unauthorized" in lowered:
        return DeviceAuthError(
            f"{where}: device unauthorized ({text}); accept the USB debugging prompt on the phone and retry"
        )
    if "not found" in lowered or "no devices" in lowered:
        return DeviceNotFoundError(f"{where}: {text}; check `adb devices` and the serial")
    if "offline" in lowered:
        return DeviceConnectionError(f"{where}: device offline; reconnect the cable or `adb reconnect` and retry")
    if "more than one" in lowered:
        return DeviceNotFoundError(f"{where}: {text}; pass serial= to choose one")
    return DeviceConnectionError(f"{where}: adb server refused the request: {text}")


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise _PeerClosed("connection closed")
        buf += chunk
    return bytes(buf)


def list_server_devices(host: str = "127.0.0.1", port: int | None = None, timeout_s: float = _PROBE_TIMEOUT_S) -> list[tuple[str, str]] | None:
    """``[(serial, state), ...]`` from the adb server at ``host:port``, or ``None`` if no server answers.

    ``port`` defaults to ``$ANDROID_ADB_SERVER_PORT`` or 5037.
    """
    port = _server_port(port)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            _server_request(sock, "host:devices", f"adb server {host}:{port}")
            length = int(_recv_exact(sock, 4), 16)
            text = _recv_exact(sock, length).decode("utf-8", errors="replace")
    except (OSError, ValueError, DeviceError):
        return None
    devices = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            devices.append((parts[0], parts[1]))
    return devices


def _server_port(port: int | None) -> int:
    if port is not None:
        return int(port)
    env = os.environ.get("ANDROID_ADB_SERVER_PORT")
    if env:
        try:
            return int(env)
        except ValueError:
            raise DeviceConnectionError(f"ANDROID_ADB_SERVER_PORT={env!r} is not a port number; fix or unset it") from None
    return DEFAULT_SERVER_PORT


class _ServerBackend:
    """A device reached through a running adb server."""

    def __init__(self, host: str, port: int, serial: str | None) -> None:
        self.host = host
        self.port = port
        self.serial = serial
        device = serial if serial is not None else "the only device"
        self.label = f"{device} (via adb server {host}:{port})"

    def open(self, service: str, timeout_s: float) -> _ByteStream:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        except ConnectionRefusedError:
            raise DeviceConnectionError(
                f"{self.label}: adb server not running any more; start it with `adb start-server` and retry"
            ) from None
        try:
            sock.settimeout(timeout_s)
            target = f"host:transport:{self.serial}" if self.serial is not None else "host:transport-any"
            _server_request(sock, target, self.label)
            _server_request(sock, service, self.label)
        except BaseException:
            sock.close()
            raise
        return _SocketStream(sock)

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------------------
# the transport


class AdbTransport:
    """A :class:`~mobilekit.profile.transports.base.DeviceTransport` over ADB. Create it with
    :func:`connect_adb`. Operations are serialised (one at a time); use it from one thread or share it."""

    def __init__(self, backend: _DirectBackend | _ServerBackend, *, timeout_s: float = 30.0) -> None:
        self._backend = backend
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._closed = False
        self.via_server = isinstance(backend, _ServerBackend)

    @property
    def label(self) -> str:
        """Human-readable name of the device (address or serial, and how it is reached)."""
        return self._backend.label

    def __repr__(self) -> str:
        return f"AdbTransport({self.label})"

    def __enter__(self) -> AdbTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- error mapping
    @contextlib.contextmanager
    def _operation(self, what: str, timeout_s: float) -> Iterator[None]:
        with self._lock:
            if self._closed:
                raise DeviceDisconnectedError(f"{self.label}: transport is closed; connect again with connect_adb()")
            try:
                yield
            except DeviceError:
                raise
            except _Timeout:
                self._fail()
                raise DeviceTimeoutError(
                    f"{self.label}: no answer for {timeout_s:g} s during {what}; check the device is awake and "
                    f"still connected (`adb devices`), or allow more time"
                ) from None
            except (_StreamEOF, _PeerClosed, ConnectionError, BrokenPipeError) as exc:
                self._fail()
                raise DeviceDisconnectedError(
                    f"{self.label}: connection lost during {what} ({_describe(exc)}); the device was unplugged, "
                    f"rebooted or adbd restarted: reconnect and retry"
                ) from None
            except TimeoutError:
                self._fail()
                raise DeviceTimeoutError(
                    f"{self.label}: no answer for {timeout_s:g} s during {what}; check the device is awake and "
                    f"still connected (`adb devices`), or allow more time"
                ) from None
            except OSError as exc:
                if exc.filename is not None:  # a local file problem, not the device's
                    raise
                self._fail()
                raise DeviceConnectionError(f"{self.label}: {what} failed: {_describe(exc)}; reconnect and retry") from None
            except Exception as exc:  # adb-shell's own exceptions
                mapped = _map_adb_shell_error(exc, self.label, what, timeout_s)
                if mapped is None:
                    raise
                self._fail()
                raise mapped from None

    def _fail(self) -> None:
        self._closed = True
        self._backend.close()

    def _open(self, service: str, timeout_s: float) -> _ByteStream:
        return self._backend.open(service, timeout_s)

    # -- shell
    def shell(self, argv: Sequence[str], timeout_s: float = 600) -> ShellResult:
        """Run ``argv`` on the device (every element shell-quoted) and return its output and exit status.

        Waits at most ``timeout_s`` seconds in total; on timeout the remote command is closed (adbd hangs it
        up) and :class:`DeviceTimeoutError` is raised.
        """
        command = build_shell_command(argv)
        what = f"shell command {argv[0]!r}"
        deadline = time.monotonic() + timeout_s
        with self._operation(what, timeout_s):
            stream = self._open("shell:" + command, min(timeout_s, self._timeout_s))
            chunks: list[bytes] = []
            try:
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise _Timeout()
                    data = stream.read(remaining)
                    if not data:
                        break
                    chunks.append(data)
            except _Timeout:
                stream.close()
                raise DeviceTimeoutError(
                    f"{self.label}: {what} did not finish within {timeout_s:g} s; raise timeout_s or check the "
                    f"command on the device"
                ) from None
            stream.close()
        return parse_shell_output(b"".join(chunks))

    # -- file sync
    def push(self, local_paths: Sequence[Path], remote_dir: str) -> list[str]:
        """Copy ``local_paths`` into ``remote_dir`` (created if missing) in one sync session.

        Each file keeps its name, permission bits and mtime. Returns the remote paths in input order. Raises
        :class:`FileNotFoundError` for a missing local file (before anything is sent) and
        :class:`RemoteFileError` if the device refuses a file.
        """
        files = [Path(p) for p in local_paths]
        remote_dir = check_remote_path(remote_dir)
        for path in files:
            if not path.is_file():
                raise FileNotFoundError(f"cannot push {path}: not a file")
        remotes = [join_remote(remote_dir, path.name) for path in files]
        if len(set(remotes)) != len(remotes):
            raise ValueError("push() got two files with the same name")
        if not files:
            return []
        timeout_s = self._timeout_s
        with self._operation(f"push to {remote_dir}", timeout_s):
            stream = self._open("sync:", timeout_s)
            reader = _Reader(stream, timeout_s)
            out = bytearray()

            def flush() -> None:
                if out:
                    stream.write(bytes(out), timeout_s)
                    out.clear()

            for path, remote in zip(files, remotes):
                with open(path, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    mode = stat_module.S_IFREG | stat_module.S_IMODE(st.st_mode)
                    out += _sync_request(b"SEND", f"{remote},{mode}".encode("utf-8", errors="surrogateescape"))
                    while True:
                        data = fh.read(SYNC_DATA_MAX)
                        if not data:
                            break
                        out += _sync_request(b"DATA", data)
                        if len(out) >= stream.max_write:
                            flush()
                    out += _sync_request(b"DONE", value=int(st.st_mtime))
                flush()
                reply = reader.exact(8)
                ident, length = reply[:4], struct.unpack("<I", reply[4:])[0]
                if ident == b"FAIL":
                    message = reader.exact(length).decode("utf-8", errors="replace")
                    stream.close()
                    raise RemoteFileError(f"{self.label}: push of {path.name} to {remote} failed: {message}")
                if ident != b"OKAY":
                    raise DeviceDisconnectedError(f"{self.label}: unexpected sync reply {ident!r} during push")
            stream.write(_sync_request(b"QUIT"), timeout_s)
            stream.close()
        return remotes

    def pull(self, remote_path: str, local_path: Path) -> None:
        """Copy ``remote_path`` to ``local_path`` (through :mod:`mobilekit.safewrite`: a secure temp file in the same
        folder, then an atomic rename; a symlink at ``local_path`` is refused)."""
        remote_path = check_remote_path(remote_path)
        local_path = Path(local_path)
        if local_path.is_dir():
            raise IsADirectoryError(f"cannot pull to {local_path}: it is a folder; give the file's path")
        if not local_path.parent.is_dir():  # local errors surface here, before any traffic
            raise FileNotFoundError(f"cannot pull to {local_path}: folder {local_path.parent} does not exist")
        timeout_s = self._timeout_s
        # safewrite: an unpredictable temp file in the target folder, never through a symlink, atomic rename
        with safewrite.atomic_open(local_path, "wb") as fh:
            with self._operation(f"pull of {remote_path}", timeout_s):
                stream = self._open("sync:", timeout_s)
                reader = _Reader(stream, timeout_s)
                stream.write(_sync_request(b"RECV", remote_path.encode("utf-8", errors="surrogateescape")), timeout_s)
                while True:
                    header = reader.exact(8)
                    ident, length = header[:4], struct.unpack("<I", header[4:])[0]
                    if ident == b"DATA":
                        fh.write(reader.exact(length))
                    elif ident == b"DONE":
                        break
                    elif ident == b"FAIL":
                        message = reader.exact(length).decode("utf-8", errors="replace")
                        stream.close()
                        raise RemoteFileError(f"{self.label}: cannot pull {remote_path}: {message}")
                    else:
                        raise DeviceDisconnectedError(f"{self.label}: unexpected sync reply {ident!r} during pull")
                stream.write(_sync_request(b"QUIT"), timeout_s)
                stream.close()

    def stat(self, remote_path: str) -> RemoteStat | None:
        """Size (bytes), mode and mtime (s) of ``remote_path``, or ``None`` if it does not exist."""
        remote_path = check_remote_path(remote_path)
        timeout_s = self._timeout_s
        with self._operation(f"stat of {remote_path}", timeout_s):
            stream = self._open("sync:", timeout_s)
            reader = _Reader(stream, timeout_s)
            stream.write(_sync_request(b"STAT", remote_path.encode("utf-8", errors="surrogateescape")), timeout_s)
            reply = reader.exact(16)
            stream.write(_sync_request(b"QUIT"), timeout_s)
            stream.close()
        ident, mode, size, mtime = struct.unpack("<4sIII", reply)
        if ident != b"STAT":
            raise DeviceError(f"{self.label}: unexpected sync reply {ident!r} to STAT; is this an adb device?")
        if mode == 0 and size == 0 and mtime == 0:
            return None
        return RemoteStat(size=size, mode=mode, mtime=mtime)

    def remove(self, remote_paths: Sequence[str]) -> None:
        """Delete remote files with ``rm -f`` (missing files are not an error)."""
        paths = [check_remote_path(p) for p in remote_paths]
        batch: list[str] = []
        size = 0
        for path in paths + [None]:  # type: ignore[list-item]
            if path is not None and size + len(path) < 3000:
                batch.append(path)
                size += len(path) + 3
                continue
            if batch:
                result = self.shell(["rm", "-f", "--", *batch], timeout_s=self._timeout_s)
                if result.exit_code != 0:
                    first = result.output.strip().splitlines()[:1]
                    raise RemoteFileError(
                        f"{self.label}: rm failed (exit {result.exit_code}): {first[0] if first else 'no output'}"
                    )
            batch, size = ([path], len(path) + 3) if path is not None else ([], 0)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._backend.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _StreamEOF):
        return "stream closed by the device"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _map_adb_shell_error(exc: Exception, label: str, what: str, timeout_s: float) -> DeviceError | None:
    try:
        from adb_shell import exceptions as ax
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, (ax.TcpTimeoutException, ax.AdbTimeoutError)):
        return DeviceTimeoutError(
            f"{label}: no answer for {timeout_s:g} s during {what}; check the device is awake and still connected, "
            f"or allow more time"
        )
    if isinstance(exc, (ax.UsbReadFailedError, ax.UsbWriteFailedError, ax.AdbConnectionError)):
        return DeviceDisconnectedError(f"{label}: connection lost during {what}; reconnect the device and retry")
    if isinstance(exc, (ax.InvalidCommandError, ax.InvalidResponseError, ax.InvalidChecksumError)):
        return DeviceDisconnectedError(
            f"{label}: garbled ADB data during {what} ({_describe(exc)}); reconnect the device and retry"
        )
    return None


# ----------------------------------------------------------------------------------------------------------
# connecting


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port_text = address.rpartition(":")
    if not sep:
        return address, 5555
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise DeviceConnectionError(f"bad device address {address!r}; use host:port, e.g. 192.168.1.20:5555") from None
    if not host or not 0 < port < 65536:
        raise DeviceConnectionError(f"bad device address {address!r}; use host:port, e.g. 192.168.1.20:5555")
    return host, port


def _tcp_transport_class() -> type:
    from adb_shell.exceptions import TcpTimeoutException
    from adb_shell.transport.base_transport import BaseTransport

    class _EofAwareTcpTransport(BaseTransport):  # type: ignore[misc]
        """adb-shell's TCP transport, except that a closed socket raises at once instead of reading b"" until
        the read timeout."""

        def __init__(self, host: str, port: int) -> None:
            self._host = host
            self._port = port
            self._sock: socket.socket | None = None

        def connect(self, transport_timeout_s: float | None) -> None:
            self._sock = socket.create_connection((self._host, self._port), timeout=transport_timeout_s)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def close(self) -> None:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    self._sock.close()
                self._sock = None

        def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
            if self._sock is None:
                raise _PeerClosed("not connected")
            self._sock.settimeout(transport_timeout_s)
            try:
                data = self._sock.recv(numbytes)
            except TimeoutError:
                raise TcpTimeoutException(f"reading from {self._host}:{self._port} timed out") from None
            if not data:
                raise _PeerClosed("connection closed by the device")
            return data

        def bulk_write(self, data: bytes, transport_timeout_s: float | None) -> int:
            if self._sock is None:
                raise _PeerClosed("not connected")
            self._sock.settimeout(transport_timeout_s)
            try:
                self._sock.sendall(data)
            except TimeoutError:
                raise TcpTimeoutException(f"writing to {self._host}:{self._port} timed out") from None
            return len(data)

    return _EofAwareTcpTransport


def _connect_direct(
    address: str | None, serial: str | None, key_path: Path | None, timeout_s: float, auth_timeout_s: float
) -> AdbTransport:
    from adb_shell import exceptions as ax
    from adb_shell.adb_device import AdbDevice
    from adb_shell.auth.sign_cryptography import CryptographySigner

    key_file = Path(key_path) if key_path is not None else default_adb_key_path()
    try:
        ensure_adb_key(key_file)
        signer = CryptographySigner(str(key_file))
    except OSError as exc:
        raise DeviceAuthError(
            f"cannot create or read the adb key {key_file} ({exc.strerror or exc}); check the permissions of "
            f"{key_file.parent}"
        ) from None
    except (ValueError, TypeError):
        raise DeviceAuthError(
            f"the adb key {key_file} is not a readable RSA private key; move it away to have a new one generated"
        ) from None

    if address is not None:
        host, port = _split_address(address)
        label = f"{host}:{port}"
        device = AdbDevice(_tcp_transport_class()(host, port), default_transport_timeout_s=timeout_s, banner="mobilekit")
    else:
        label = f"USB device {serial}"
        try:
            import usb1  # noqa: F401
            from adb_shell.adb_device import AdbDeviceUsb
        except ImportError:
            raise DeviceConnectionError(
                f"{label}: direct USB needs `pip install adb-shell[usb]` (libusb1); or start an adb server "
                f"(`adb start-server`) so mobilekit can use it, or connect over TCP with address='host:5555'"
            ) from None
        try:
            device = AdbDeviceUsb(serial=serial, default_transport_timeout_s=timeout_s, banner="mobilekit")
        except ax.UsbDeviceNotFoundError:
            raise DeviceNotFoundError(f"{label}: not attached; check the cable and that USB debugging is on") from None

    pubkey_sent: list[bool] = []
    try:
        with _AUTH_LOG_FILTER.active():
            device.connect(
                rsa_keys=[signer],
                transport_timeout_s=timeout_s,
                auth_timeout_s=auth_timeout_s,
                read_timeout_s=timeout_s,
                auth_callback=lambda _device: pubkey_sent.append(True),
            )
    except ConnectionRefusedError:
        raise DeviceConnectionError(
            f"{label}: connection refused; check the address and that wireless debugging (or `adb tcpip 5555`) "
            f"is enabled on the phone"
        ) from None
    except (TimeoutError, ax.TcpTimeoutException, ax.AdbTimeoutError):
        device.close()
        if pubkey_sent:
            raise DeviceAuthError(
                f"{label} did not accept this computer's key ({key_file}.pub) within {auth_timeout_s:g} s; accept "
                f"the USB debugging prompt on the phone (tick 'Always allow from this computer') and retry"
            ) from None
        raise DeviceTimeoutError(f"{label}: no ADB answer within {timeout_s:g} s; is it an adb device, and awake?") from None
    except ax.DeviceAuthError:
        device.close()
        raise DeviceAuthError(f"{label}: authentication failed; accept the USB debugging prompt on the phone and retry") from None
    except (_PeerClosed, ConnectionError) as exc:
        device.close()
        if pubkey_sent:
            raise DeviceAuthError(
                f"{label} closed the connection after being offered this computer's key; accept the USB debugging "
                f"prompt on the phone and retry"
            ) from None
        raise DeviceConnectionError(f"{label}: connection closed during the ADB handshake ({_describe(exc)}); retry") from None
    except OSError as exc:
        device.close()
        raise DeviceConnectionError(f"{label}: cannot connect ({_describe(exc)}); check the address and network") from None
    except (ax.InvalidResponseError, ax.InvalidCommandError, ax.InvalidChecksumError) as exc:
        device.close()
        raise DeviceConnectionError(f"{label}: not an ADB device or garbled handshake ({_describe(exc)})") from None
    return AdbTransport(_DirectBackend(device, label), timeout_s=max(timeout_s, 30.0))


def connect_adb(
    address: str | None = None,
    serial: str | None = None,
    key_path: Path | None = None,
    use_server: bool | None = None,
    *,
    server_host: str = "127.0.0.1",
    server_port: int | None = None,
    timeout_s: float = 10.0,
    auth_timeout_s: float = 30.0,
) -> AdbTransport:
    """Connect to an Android device over ADB.

    ``address`` is ``host:port`` of a device in TCP mode; ``serial`` is the serial an adb server lists (for a
    TCP device it is ``host:port`` too) or a USB serial for a direct USB connection. ``key_path`` is the
    private key for direct connections (default ``~/.android/adbkey``, created when missing).
    ``use_server``: ``True`` = only through the adb server (``server_host``:``server_port``, port default
    ``$ANDROID_ADB_SERVER_PORT`` or 5037), ``False`` = only directly, ``None`` = the server if it answers and
    lists the device, else directly. ``timeout_s`` bounds each network wait (s); ``auth_timeout_s`` is how long
    to wait for the user to accept the debugging prompt (s).
    """
    wanted = serial if serial is not None else address
    if use_server is not False:
        port = _server_port(server_port)
        where = f"adb server {server_host}:{port}"
        devices = list_server_devices(server_host, port, min(timeout_s, _PROBE_TIMEOUT_S if use_server is None else timeout_s))
        if devices is None:
            if use_server:
                raise DeviceConnectionError(f"no adb server answers on {server_host}:{port}; start it with `adb start-server`")
        else:
            if wanted is None:
                ready = [s for s, state in devices if state == "device"]
                if len(ready) == 1:
                    return AdbTransport(_ServerBackend(server_host, port, ready[0]), timeout_s=max(timeout_s, 30.0))
                if len(ready) > 1:
                    raise DeviceNotFoundError(f"{where} lists {len(ready)} devices ({', '.join(ready)}); pass serial= to choose one")
                if use_server:
                    states = ", ".join(f"{s} {st}" for s, st in devices) or "none"
                    raise DeviceNotFoundError(f"{where} has no ready device (listed: {states}); plug in the phone or `adb connect host:port`")
            else:
                state = dict(devices).get(wanted)
                if state == "device":
                    return AdbTransport(_ServerBackend(server_host, port, wanted), timeout_s=max(timeout_s, 30.0))
                if state == "unauthorized":
                    raise DeviceAuthError(f"{wanted} (via {where}) is unauthorized; accept the USB debugging prompt on the phone and retry")
                if state is not None and use_server:
                    raise DeviceConnectionError(f"{wanted} (via {where}) is {state}; reconnect it (`adb reconnect`) and retry")
                if use_server:
                    raise DeviceNotFoundError(f"{where} does not list {wanted}; run `adb devices`, or `adb connect {wanted}` for a TCP device")
    if address is None and serial is None:
        raise DeviceNotFoundError(
            "no device given and no adb server with a ready device; pass address='host:port' or start `adb start-server`"
        )
    return _connect_direct(address, serial if address is None else None, key_path, timeout_s, auth_timeout_s)
