"""An Android device, as far as ADB sees it, for tests without a phone.

:class:`AdbDeviceEmulator` listens on a TCP port (loopback by default) and speaks the device side of the real
ADB wire protocol, the one ``adbd`` speaks over ``adb tcpip``/wireless debugging:

* 24-byte message headers (command, arg0, arg1, data length, data checksum, magic = command ^ 0xffffffff);
  checksums are checked while the negotiated version is ``A_VERSION`` 0x01000000 and skipped from 0x01000001
  on, as adbd does.
* ``CNXN`` handshake answering with the lower of the host's version and 0x01000001 and a max payload of at
  most 256 KiB; the device banner lists no features, so clients use the old-style ``shell:`` service and the
  v1 sync protocol, which is what is implemented.
* ``AUTH``: a 20-byte ``TOKEN`` is sent; a ``SIGNATURE`` is accepted if it verifies (PKCS#1 v1.5 over the
  token as a SHA-1 digest, as adb signs it) with a known key, else a new token is sent; an ``RSAPUBLICKEY``
  (Android's binary key format, base64) is accepted like a user tapping "Allow" unless ``authorized_keys`` is
  given, in which case only those keys are accepted and any other is left unanswered (a declined prompt).
  Accepted keys are appended to ``STORAGE/data/misc/adb/adb_keys`` and remembered across restarts.
* Streams: ``OPEN``/``OKAY``/``WRTE``/``CLSE`` with local and remote ids, several at once, one ``WRTE`` in
  flight per direction and stream (each acknowledged by ``OKAY``).
* Services: ``shell:CMD`` (raw, stdout and stderr merged, no exit status: the shell_v2 protocol is not
  advertised), ``exec:CMD`` (stdout only), ``sync:`` with ``STAT``, ``LIST``, ``SEND`` (``path,mode`` then
  ``DATA`` chunks of at most 64 KiB and ``DONE`` carrying the mtime; parent folders are created), ``RECV`` and
  ``QUIT``. Any other service is refused with ``CLSE``.

Device storage and commands
---------------------------
The device's file system is a host folder, ``STORAGE``: every absolute device path ``/x/y`` is
``STORAGE/x/y`` (``..`` cannot climb above ``STORAGE``). Shell commands run with ``/bin/sh -c`` in the host's
shell, with the working directory ``STORAGE`` (the device's ``/``). So that device paths in a command reach
the files, occurrences of the device roots ``/data``, ``/sdcard``, ``/storage``, ``/sys``, ``/system`` and
``/vendor`` that start a path (after a space, quote, ``=``, ``:`` or shell operator) are rewritten to
``STORAGE/...`` before the command runs, and ``STORAGE`` is turned back into ``/`` in the output. This is a
textual rewrite of the command string: it does not add, remove or unquote anything, so a command whose
arguments were shell-quoted stays exactly as safe as it was. ``STORAGE/system/bin`` comes first in ``PATH``
and holds a ``getprop`` script answering the emulator's properties (``ro.product.model``,
``ro.product.cpu.abi``, ``ro.build.version.release``...), and ``STORAGE/sys`` holds fake sysfs files: a thermal
zone (``/sys/class/thermal/thermal_zone0/temp``) and the cpufreq files of a big.LITTLE phone, 4 little cores
(0-3) and 4 big ones (4-7), each with ``cpuinfo_max_freq``, ``scaling_cur_freq`` and a writable
``scaling_governor`` (a rooted phone). Other commands are the host's. Several emulators (each with its own
storage and port) run side by side as a phone farm.

Run it in-process (``with AdbDeviceEmulator(storage) as emu: ... emu.port``) or as a process that tests can
``kill -9``::

    python -m mobilekit.testing.adb_emulator --port 0 --storage DIR

which prints the port on stdout once it listens and serves until SIGTERM/SIGINT.

It is a test double: it trusts the host it talks to and runs whatever the host asks, so bind it to loopback.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import os
import posixpath
import queue
import re
import secrets
import shlex
import signal
import socket
import stat as stat_module
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

__all__ = ["AdbDeviceEmulator", "decode_android_pubkey", "main"]


def _cmd(name: bytes) -> int:
    return int.from_bytes(name, "little")


A_CNXN = _cmd(b"CNXN")
A_AUTH = _cmd(b"AUTH")
A_OPEN = _cmd(b"OPEN")
A_OKAY = _cmd(b"OKAY")
A_CLSE = _cmd(b"CLSE")
A_WRTE = _cmd(b"WRTE")
A_SYNC = _cmd(b"SYNC")
A_STLS = _cmd(b"STLS")

A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001

AUTH_TOKEN = 1
AUTH_SIGNATURE = 2
AUTH_RSAPUBLICKEY = 3

TOKEN_SIZE = 20
MAX_PAYLOAD = 256 * 1024
MAX_PAYLOAD_LEGACY = 4096
#: Largest message body accepted from a host (adb's own limit is 1 MiB).
MAX_INCOMING_PAYLOAD = 1024 * 1024
SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024

_HEADER = struct.Struct("<6I")
_ANDROID_PUBKEY = struct.Struct("<II256s256sI")
_DEVICE_ROOTS = ("data", "sdcard", "storage", "sys", "system", "vendor")
_ROOT_RE = re.compile(r"(?<![\w./~+-])/(?:" + "|".join(_DEVICE_ROOTS) + r")(?=/|$|[\s'\"`;&|()<>=:,])")
#: Environment variable through which the benchmark_model stand-in learns the emulator's ``run_cost_s``.
RUN_COST_ENV = "MOBILEKIT_EMULATOR_RUN_COST_S"
_SAFE_STORAGE = re.compile(r"^/[A-Za-z0-9_./+-]+$")

DEFAULT_PROPERTIES: Mapping[str, str] = {
    "ro.product.model": "MK Emulator",
    "ro.product.manufacturer": "mobilekit",
    "ro.product.brand": "mobilekit",
    "ro.product.name": "mk_emulator",
    "ro.product.device": "mk_emulator",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.hardware": "mkemu",
    "ro.soc.manufacturer": "mobilekit",
    "ro.soc.model": "MK1",
}

def _fake_cpu_sysfs(little: int = 4, big: int = 4) -> dict[str, str]:
    """cpufreq files of a big.LITTLE phone: cores 0..little-1 at most 1.8 GHz, the next ``big`` at most 2.42 GHz,
    governor ``schedutil`` (writable: the emulated phone is rooted, ``performance`` can be set)."""
    files = {"sys/devices/system/cpu/online": f"0-{little + big - 1}\n",
             "sys/devices/system/cpu/possible": f"0-{little + big - 1}\n"}
    for cpu in range(little + big):
        top = 1804800 if cpu < little else 2419200
        folder = f"sys/devices/system/cpu/cpu{cpu}/cpufreq/"
        files[folder + "cpuinfo_max_freq"] = f"{top}\n"
        files[folder + "cpuinfo_min_freq"] = "300000\n"
        files[folder + "scaling_cur_freq"] = f"{top * 3 // 4}\n"
        files[folder + "scaling_max_freq"] = f"{top}\n"
        files[folder + "scaling_governor"] = "schedutil\n"
        files[folder + "scaling_available_governors"] = "performance powersave schedutil\n"
    return files


#: The fake sysfs every emulated device has: a thermal zone and the cpufreq files of 4 little + 4 big cores.
_FAKE_SYSFS: Mapping[str, str] = {
    "sys/class/thermal/thermal_zone0/temp": "36500\n",
    "sys/class/thermal/thermal_zone0/type": "cpu-therm\n",
    **_fake_cpu_sysfs(),
}


class _ProtocolError(Exception):
    """The host sent something that is not ADB; the connection is dropped."""


def decode_android_pubkey(text: bytes | str) -> rsa.RSAPublicKey:
    """Decode an adb public key (``base64(struct RSAPublicKey) [user@host]``) into an RSA public key."""
    if isinstance(text, str):
        text = text.encode("ascii", errors="replace")
    token = text.strip(b"\0 \r\n\t").split(None, 1)[0] if text.strip(b"\0 \r\n\t") else b""
    try:
        blob = base64.b64decode(token, validate=True)
    except (ValueError, TypeError) as exc:
        raise ValueError("adb public key is not base64") from exc
    if len(blob) != _ANDROID_PUBKEY.size:
        raise ValueError(f"adb public key has {len(blob)} bytes, expected {_ANDROID_PUBKEY.size}")
    words, _n0inv, modulus_le, _rr, exponent = _ANDROID_PUBKEY.unpack(blob)
    if words != 64:
        raise ValueError(f"adb public key modulus has {words} words, expected 64")
    modulus = int.from_bytes(modulus_le, "little")
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def _key_id(key: rsa.RSAPublicKey) -> tuple[int, int]:
    numbers = key.public_numbers()
    return numbers.n, numbers.e


# ----------------------------------------------------------------------------------------------------------
# streams


class _StreamClosed(Exception):
    pass


class _Stream:
    """One ADB stream on the device side: inbound chunks are queued and acknowledged (``OKAY``) when consumed;
    outbound data waits for the host's ``OKAY`` after each ``WRTE``."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._okay = threading.Event()
        self._okay.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._rbuf = bytearray()

    # -- called by the connection reader thread
    def feed(self, data: bytes) -> None:
        self._inbox.put(data)

    def on_okay(self) -> None:
        self._okay.set()

    def on_remote_close(self) -> None:
        self._closed.set()
        self._inbox.put(None)
        self._okay.set()

    # -- called by the service thread
    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def read_chunk(self) -> bytes | None:
        """Next chunk from the host (acknowledged), or ``None`` once the host closed the stream."""
        if self._closed.is_set() and self._inbox.empty():
            return None
        data = self._inbox.get()
        if data is None:
            return None
        if not self._closed.is_set():
            self.conn.send(A_OKAY, self.local_id, self.remote_id)
        return data

    def read_exact(self, size: int) -> bytes:
        while len(self._rbuf) < size:
            chunk = self.read_chunk()
            if chunk is None:
                raise _StreamClosed()
            self._rbuf += chunk
        data = bytes(self._rbuf[:size])
        del self._rbuf[:size]
        return data

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        step = self.conn.max_payload
        for offset in range(0, len(view), step):
            while not self._okay.wait(0.5):
                if self._closed.is_set() or self.conn.dead:
                    raise _StreamClosed()
            if self._closed.is_set():
                raise _StreamClosed()
            self._okay.clear()
            self.conn.send(A_WRTE, self.local_id, self.remote_id, bytes(view[offset : offset + step]))

    def close(self) -> None:
        """Close from the device side (sends ``CLSE`` unless the host already closed)."""
        with self._lock:
            if self._closed.is_set():
                self.conn.forget(self.local_id)
                return
            self._closed.set()
        self.conn.forget(self.local_id)
        self.conn.send(A_CLSE, self.local_id, self.remote_id)

    def start(self) -> None:
        threading.Thread(target=self._run_safely, name=f"adb-emu-stream-{self.local_id}", daemon=True).start()

    def _run_safely(self) -> None:
        try:
            self.run()
        except (_StreamClosed, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, _StreamClosed):
                self.close()

    def run(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _ProcessStream(_Stream):
    """``shell:CMD`` / ``exec:CMD``: a ``/bin/sh -c`` child whose output is streamed back."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int, command: str, merge_stderr: bool) -> None:
        super().__init__(conn, local_id, remote_id)
        self.command = command
        self.merge_stderr = merge_stderr
        self.proc: subprocess.Popen[bytes] | None = None

    def on_remote_close(self) -> None:
        super().on_remote_close()
        self.kill()

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _pump_stdin(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdin is not None
        try:
            while True:
                chunk = self.read_chunk()
                if chunk is None:
                    break
                proc.stdin.write(chunk)
                proc.stdin.flush()
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()

    def run(self) -> None:
        emu = self.conn.emulator
        command = emu.map_command(self.command) if self.command else ""
        argv = ["/bin/sh", "-c", command] if command else ["/bin/sh"]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if self.merge_stderr else subprocess.DEVNULL,
            cwd=emu.storage,
            env=emu.shell_environment(),
            start_new_session=True,
        )
        emu.track_process(self.proc)
        threading.Thread(target=self._pump_stdin, name=f"adb-emu-stdin-{self.local_id}", daemon=True).start()
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        pending = b""
        try:
            while True:
                data = os.read(fd, 64 * 1024)
                if not data:
                    break
                out, pending = emu.unmap_output(pending + data, final=False)
                if out:
                    self.write(out)
            out, _ = emu.unmap_output(pending, final=True)
            if out:
                self.write(out)
        finally:
            if self.closed:
                self.kill()
            self.proc.wait()
            self.proc.stdout.close()
            emu.untrack_process(self.proc)


def _sync_header(ident: bytes, value: int) -> bytes:
    return ident + struct.pack("<I", value & 0xFFFFFFFF)


class _SyncStream(_Stream):
    """``sync:`` (protocol v1): STAT, LIST, SEND, RECV, QUIT."""

    def _fail(self, message: str) -> None:
        data = message.encode("utf-8", errors="replace")
        self.write(_sync_header(b"FAIL", len(data)) + data)

    def _read_path(self, length: int) -> str | None:
        if length > SYNC_PATH_MAX:
            self._fail("path too long")
            return None
        raw = self.read_exact(length)
        return raw.decode("utf-8", errors="surrogateescape")

    def run(self) -> None:
        emu = self.conn.emulator
        while True:
            header = self.read_exact(8)
            ident, length = header[:4], struct.unpack("<I", header[4:])[0]
            if ident == b"QUIT":
                return
            if ident not in (b"STAT", b"LIST", b"SEND", b"RECV"):
                self._fail("unknown command")
                return
            path = self._read_path(length)
            if path is None:
                return
            if ident == b"STAT":
                self._stat(emu, path)
            elif ident == b"LIST":
                self._list(emu, path)
            elif ident == b"RECV":
                self._recv(emu, path)
            elif not self._send(emu, path):
                return

    def _stat(self, emu: AdbDeviceEmulator, path: str) -> None:
        try:
            st = os.lstat(emu.host_path(path))
            reply = struct.pack("<4sIII", b"STAT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime))
        except (OSError, ValueError):
            reply = struct.pack("<4sIII", b"STAT", 0, 0, 0)
        self.write(reply)

    def _list(self, emu: AdbDeviceEmulator, path: str) -> None:
        out = bytearray()
        try:
            base = emu.host_path(path)
            names = sorted(os.listdir(base))
        except (OSError, ValueError):
            names, base = [], None
        for name in names:
            try:
                st = os.lstat(os.path.join(base, name))  # type: ignore[arg-type]
            except OSError:
                continue
            raw = name.encode("utf-8", errors="surrogateescape")
            out += struct.pack("<4sIIII", b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(raw))
            out += raw
            if len(out) >= MAX_PAYLOAD_LEGACY:
                self.write(bytes(out))
                out.clear()
        out += struct.pack("<4sIIII", b"DONE", 0, 0, 0, 0)
        self.write(bytes(out))

    def _recv(self, emu: AdbDeviceEmulator, path: str) -> None:
        try:
            target = emu.host_path(path)
            with open(target, "rb") as fh:
                while True:
                    data = fh.read(SYNC_DATA_MAX)
                    if not data:
                        break
                    self.write(_sync_header(b"DATA", len(data)) + data)
        except IsADirectoryError:
            self._fail("read failed: Is a directory")
            return
        except FileNotFoundError:
            self._fail("open failed: No such file or directory")
            return
        except (OSError, ValueError) as exc:
            self._fail(f"open failed: {os.strerror(exc.errno) if getattr(exc, 'errno', None) else exc}")
            return
        self.write(_sync_header(b"DONE", 0))

    def _send(self, emu: AdbDeviceEmulator, spec: str) -> bool:
        path, comma, mode_text = spec.rpartition(",")
        if not comma:
            path, mode = spec, 0o644 | stat_module.S_IFREG
        else:
            try:
                mode = int(mode_text)
            except ValueError:
                self._fail(f"invalid mode {mode_text!r}")
                return False
        tmp_path = None
        error = None
        try:
            target = emu.host_path(path)
            if os.path.isdir(target):
                error = "couldn't create file: Is a directory"
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                # like adbd: write straight to the target and unlink it if the transfer fails, so a device
                # killed mid-push leaves a partial file under its real name (which cleanup can find)
                tmp_path = target
        except (OSError, ValueError) as exc:
            error = f"secure_mkdirs failed: {os.strerror(getattr(exc, 'errno', 0) or errno.EIO)}"
        link_target = bytearray() if stat_module.S_ISLNK(mode) else None
        fh = None
        if tmp_path is not None and link_target is None:
            try:
                fh = open(tmp_path, "wb")
            except OSError as exc:
                error, tmp_path = f"couldn't create file: {os.strerror(exc.errno or errno.EIO)}", None
        try:
            while True:
                header = self.read_exact(8)
                ident, value = header[:4], struct.unpack("<I", header[4:])[0]
                if ident == b"DATA":
                    if value > SYNC_DATA_MAX:
                        self._fail("data chunk too large")
                        return False
                    data = self.read_exact(value)
                    emu.throttle(len(data))
                    if fh is not None:
                        fh.write(data)
                    elif link_target is not None:
                        link_target += data
                elif ident == b"DONE":
                    mtime = value
                    break
                else:
                    self._fail("invalid data message")
                    return False
            if error is not None:
                self._fail(error)
                return True
            if fh is not None:
                fh.close()
                fh = None
                os.chmod(tmp_path, mode & 0o7777)  # type: ignore[arg-type]
                os.utime(tmp_path, (mtime, mtime))  # type: ignore[arg-type]
                tmp_path = None
            elif link_target is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)
                os.symlink(os.fsdecode(bytes(link_target)), target)
            self.write(_sync_header(b"OKAY", 0))
            return True
        except OSError as exc:
            if not isinstance(exc, ConnectionError):
                with contextlib.suppress(_StreamClosed, OSError):
                    self._fail(f"write failed: {os.strerror(exc.errno or errno.EIO)}")
            return False
        finally:
            if fh is not None:
                fh.close()
            if tmp_path is not None and not self.conn.dead:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_path)


# ----------------------------------------------------------------------------------------------------------
# connections


class _Connection:
    def __init__(self, emulator: AdbDeviceEmulator, sock: socket.socket) -> None:
        self.emulator = emulator
        self.sock = sock
        self._send_lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._streams_lock = threading.Lock()
        self._next_id = 1
        self.version = A_VERSION_MIN
        self.max_payload = MAX_PAYLOAD_LEGACY
        self.online = False
        self.dead = False
        self._token = b""

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        header = _HEADER.pack(command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, command ^ 0xFFFFFFFF)
        with self._send_lock:
            if self.dead:
                raise _StreamClosed()
            try:
                self.sock.sendall(header + data)
            except OSError:
                self.dead = True
                raise _StreamClosed() from None

    def forget(self, local_id: int) -> None:
        with self._streams_lock:
            self._streams.pop(local_id, None)

    def _recv_exact(self, size: int) -> bytes:
        buf = bytearray()
        while len(buf) < size:
            chunk = self.sock.recv(size - len(buf))
            if not chunk:
                raise _ProtocolError("connection closed")
            buf += chunk
        return bytes(buf)

    def run(self) -> None:
        try:
            while not self.emulator.stopping:
                command, arg0, arg1, length, check, magic = _HEADER.unpack(self._recv_exact(_HEADER.size))
                if magic != command ^ 0xFFFFFFFF:
                    raise _ProtocolError("bad magic")
                if length > MAX_INCOMING_PAYLOAD:
                    raise _ProtocolError("payload too large")
                data = self._recv_exact(length) if length else b""
                version = arg0 if command == A_CNXN else self.version
                if version < A_VERSION_SKIP_CHECKSUM and (sum(data) & 0xFFFFFFFF) != check:
                    raise _ProtocolError("bad checksum")
                self._dispatch(command, arg0, arg1, data)
        except (_ProtocolError, _StreamClosed, OSError, struct.error):
            pass
        finally:
            self.dead = True
            with self._streams_lock:
                streams = list(self._streams.values())
                self._streams.clear()
            for stream in streams:
                stream.on_remote_close()
            with contextlib.suppress(OSError):
                self.sock.close()
            self.emulator.forget_connection(self)

    # -- handshake
    def _banner(self) -> bytes:
        props = self.emulator.properties
        keys = ("ro.product.name", "ro.product.model", "ro.product.device")
        text = "device::" + ";".join(f"{k}={props.get(k, '')}" for k in keys) + ";features="
        return text.encode("utf-8") + b"\0"

    def _go_online(self, method: str) -> None:
        self.online = True
        self.emulator.record("auth", method)
        self.send(A_CNXN, self.version, self.max_payload, self._banner())

    def _send_token(self) -> None:
        self._token = secrets.token_bytes(TOKEN_SIZE)
        self.send(A_AUTH, AUTH_TOKEN, 0, self._token)

    def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == A_CNXN:
            self.version = min(arg0, A_VERSION_SKIP_CHECKSUM)
            host_max = arg1 if arg1 else MAX_PAYLOAD_LEGACY
            self.max_payload = max(MAX_PAYLOAD_LEGACY, min(host_max, MAX_PAYLOAD))
            if self.emulator.require_auth and not self.online:
                self._send_token()
            else:
                self._go_online("none" if not self.emulator.require_auth else "reconnect")
            return
        if command == A_AUTH:
            if self.online:
                return
            if arg0 == AUTH_SIGNATURE:
                if self._token and self.emulator.verify_signature(self._token, data):
                    self._go_online("signature")
                else:
                    self._send_token()
            elif arg0 == AUTH_RSAPUBLICKEY:
                if self.emulator.offer_public_key(data):
                    self._go_online("pubkey")
                # else: the prompt stays unanswered, as on a phone whose user does not tap "Allow".
            return
        if command == A_STLS:
            raise _ProtocolError("TLS not supported")
        if not self.online:
            return
        if command == A_OPEN:
            self._open(arg0, data)
        elif command == A_WRTE:
            stream = self._find(arg1)
            if stream is None:
                self.send(A_CLSE, 0, arg0)
            else:
                stream.feed(data)
        elif command == A_OKAY:
            stream = self._find(arg1)
            if stream is not None:
                stream.on_okay()
        elif command == A_CLSE:
            with self._streams_lock:
                stream = self._streams.get(arg1)
                if stream is None or (arg0 != 0 and arg0 != stream.remote_id):
                    return
                del self._streams[arg1]
            stream.on_remote_close()
            self.send(A_CLSE, stream.local_id, stream.remote_id)

    def _find(self, local_id: int) -> _Stream | None:
        with self._streams_lock:
            return self._streams.get(local_id)

    def _open(self, remote_id: int, data: bytes) -> None:
        service = data.split(b"\0", 1)[0].decode("utf-8", errors="surrogateescape")
        self.emulator.record("service", service)
        with self._streams_lock:
            local_id = self._next_id
            self._next_id += 1
        stream: _Stream | None
        if service.startswith("shell:"):
            stream = _ProcessStream(self, local_id, remote_id, service[len("shell:") :], merge_stderr=True)
        elif service.startswith("exec:"):
            stream = _ProcessStream(self, local_id, remote_id, service[len("exec:") :], merge_stderr=False)
        elif service == "sync:":
            stream = _SyncStream(self, local_id, remote_id)
        else:
            stream = None
        if stream is None or remote_id == 0:
            self.send(A_CLSE, 0, remote_id)
            return
        with self._streams_lock:
            self._streams[local_id] = stream
        self.send(A_OKAY, local_id, remote_id)
        stream.start()


# ----------------------------------------------------------------------------------------------------------
# the emulator


class AdbDeviceEmulator:
    """A TCP ADB device backed by a storage folder (see the module docstring).

    ``port=0`` picks a free port; read it from :attr:`port` after :meth:`start`. ``require_auth=False`` skips
    the AUTH exchange (like a device with ``ro.adb.secure=0``). ``authorized_keys`` (adb public key strings)
    makes unknown keys be refused instead of accepted. ``sync_rate_limit_bps`` slows ``SEND`` down to that many
    bytes per second (to simulate a slow link in tests). ``run_cost_s`` makes every benchmark run of the
    ``benchmark_model`` stand-in take that many seconds more (idle, not CPU: a phone's process start, model load
    and runs cost the host nothing), for a phone-like device in benchmarks.
    """

    def __init__(
        self,
        storage: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        require_auth: bool = True,
        authorized_keys: Iterable[str] | None = None,
        properties: Mapping[str, str] | None = None,
        sync_rate_limit_bps: float | None = None,
        run_cost_s: float = 0.0,
    ) -> None:
        storage_path = Path(storage).resolve()
        text = str(storage_path)
        if not _SAFE_STORAGE.match(text):
            raise ValueError(f"storage path must consist of [A-Za-z0-9_./+-] only, got {text!r}")
        if _ROOT_RE.match(text):
            raise ValueError(f"storage path must not start with a device root ({', '.join(_DEVICE_ROOTS)}): {text}")
        self.storage = storage_path
        self._storage_bytes = text.encode()
        self.host = host
        self._requested_port = port
        self.require_auth = require_auth
        self.properties: dict[str, str] = dict(DEFAULT_PROPERTIES)
        if properties:
            self.properties.update(properties)
        self.sync_rate_limit_bps = sync_rate_limit_bps
        self.run_cost_s = float(run_cost_s)
        self._restrict_keys = authorized_keys is not None
        self._allowed: set[tuple[int, int]] = set()
        self._known: set[tuple[int, int]] = set()
        self._keys_lock = threading.Lock()
        for entry in authorized_keys or ():
            key_id = _key_id(decode_android_pubkey(entry))
            self._allowed.add(key_id)
            self._known.add(key_id)
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[_Connection] = set()
        self._processes: set[subprocess.Popen[bytes]] = set()
        self._state_lock = threading.Lock()
        self.stopping = False
        self.port = 0
        self.auth_log: list[str] = []
        """How each connection got online: ``"signature"``, ``"pubkey"`` (key accepted) or ``"none"``."""
        self.service_log: list[str] = []
        """Every service a host opened (``"sync:"``, ``"shell:..."``), in order."""

    # -- lifecycle
    def start(self) -> AdbDeviceEmulator:
        """Create the storage layout, bind and start serving in a background thread."""
        self._prepare_storage()
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, self._requested_port))
        server.listen(16)
        server.settimeout(0.2)
        self._server = server
        self.port = server.getsockname()[1]
        self.properties.setdefault("ro.serialno", self.serial)
        self._write_getprop()
        self._thread = threading.Thread(target=self._accept_loop, name="adb-emu-accept", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop every connection and kill running shell commands."""
        self.stopping = True
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.close()
        with self._state_lock:
            connections = list(self._connections)
            processes = list(self._processes)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.sock.close()
        for proc in processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> AdbDeviceEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """``host:port`` to connect to (also the serial the adb server gives it)."""
        return f"{self.host}:{self.port}"

    @property
    def serial(self) -> str:
        """The serial an adb server lists for this device after ``adb connect``."""
        return self.address

    def record(self, kind: str, value: str) -> None:
        with self._state_lock:
            (self.auth_log if kind == "auth" else self.service_log).append(value)

    # -- keys
    @property
    def adb_keys_file(self) -> Path:
        return self.storage / "data" / "misc" / "adb" / "adb_keys"

    def verify_signature(self, token: bytes, signature: bytes) -> bool:
        """True if ``signature`` signs ``token`` with a key this device trusts."""
        with self._keys_lock:
            known = list(self._known)
        for n, e in known:
            key = rsa.RSAPublicNumbers(e, n).public_key()
            try:
                key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
                return True
            except (InvalidSignature, ValueError):
                continue
        return False

    def offer_public_key(self, data: bytes) -> bool:
        """Handle an ``AUTH RSAPUBLICKEY``: accept (and remember) it unless keys are restricted."""
        try:
            key_id = _key_id(decode_android_pubkey(data))
        except ValueError:
            return False
        with self._keys_lock:
            if self._restrict_keys and key_id not in self._allowed:
                return False
            if key_id not in self._known:
                self._known.add(key_id)
                line = data.split(b"\0", 1)[0].strip()
                self.adb_keys_file.parent.mkdir(parents=True, exist_ok=True)
                with open(self.adb_keys_file, "ab") as fh:
                    fh.write(line + b"\n")
        return True

    def _load_known_keys(self) -> None:
        if not self.adb_keys_file.is_file():
            return
        for line in self.adb_keys_file.read_bytes().splitlines():
            if not line.strip():
                continue
            with contextlib.suppress(ValueError):
                key_id = _key_id(decode_android_pubkey(line))
                if not self._restrict_keys or key_id in self._allowed:
                    self._known.add(key_id)

    # -- storage and commands
    def host_path(self, device_path: str) -> str:
        """The host path of an absolute device path (``/data/x`` -> ``STORAGE/data/x``)."""
        if not device_path.startswith("/"):
            raise ValueError(f"device path must be absolute: {device_path!r}")
        normalised = posixpath.normpath("/" + device_path.lstrip("/"))
        if normalised == "/":
            return str(self.storage)
        return os.path.join(str(self.storage), normalised.lstrip("/"))

    def map_command(self, command: str) -> str:
        """Rewrite device roots that start a path in ``command`` to their storage paths."""
        storage = str(self.storage)
        return _ROOT_RE.sub(lambda m: storage + m.group(0), command)

    def unmap_output(self, data: bytes, final: bool) -> tuple[bytes, bytes]:
        """Turn storage paths in command output back into device paths; returns ``(ready, held_back)``."""
        sb = self._storage_bytes
        data = data.replace(sb + b"/", b"/").replace(sb, b"/")
        if final:
            return data, b""
        keep = 0
        for k in range(min(len(sb), len(data)), 0, -1):
            if sb.startswith(data[-k:]):
                keep = k
                break
        if keep:
            return data[:-keep], data[-keep:]
        return data, b""

    def shell_environment(self) -> dict[str, str]:
        env = dict(os.environ)
        storage = str(self.storage)
        env["PATH"] = f"{storage}/system/bin:{storage}/system/xbin:" + env.get("PATH", "/usr/bin:/bin")
        env["HOME"] = storage
        env["TMPDIR"] = f"{storage}/data/local/tmp"
        env["EXTERNAL_STORAGE"] = f"{storage}/sdcard"
        env["ANDROID_ROOT"] = f"{storage}/system"
        env["ANDROID_DATA"] = f"{storage}/data"
        if self.run_cost_s > 0:
            env[RUN_COST_ENV] = repr(self.run_cost_s)
        return env

    def throttle(self, nbytes: int) -> None:
        if self.sync_rate_limit_bps:
            time.sleep(nbytes / self.sync_rate_limit_bps)

    def track_process(self, proc: subprocess.Popen[bytes]) -> None:
        with self._state_lock:
            self._processes.add(proc)
        if self.stopping:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def untrack_process(self, proc: subprocess.Popen[bytes]) -> None:
        with self._state_lock:
            self._processes.discard(proc)

    def forget_connection(self, conn: _Connection) -> None:
        with self._state_lock:
            self._connections.discard(conn)

    def _prepare_storage(self) -> None:
        for folder in ("data/local/tmp", "data/misc/adb", "sdcard", "system/bin", "system/xbin", "vendor"):
            (self.storage / folder).mkdir(parents=True, exist_ok=True)
        for rel, content in _FAKE_SYSFS.items():
            target = self.storage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.write_text(content)
        self._load_known_keys()

    def _write_getprop(self) -> None:
        lines = [
            "#!/bin/sh",
            "# getprop of mobilekit.testing.adb_emulator: answers the emulator's fixed properties.",
            'if [ "$#" -eq 0 ]; then',
        ]
        for key in sorted(self.properties):
            lines.append(f"  printf '%s\\n' {shlex.quote(f'[{key}]: [{self.properties[key]}]')}")
        lines += ["  exit 0", "fi", 'case "$1" in']
        for key in sorted(self.properties):
            lines.append(f"  {shlex.quote(key)}) printf '%s\\n' {shlex.quote(self.properties[key])} ;;")
        lines += ['  *) if [ "$#" -ge 2 ]; then printf \'%s\\n\' "$2"; else echo; fi ;;', "esac", ""]
        target = self.storage / "system" / "bin" / "getprop"
        target.write_text("\n".join(lines))
        target.chmod(0o755)
        # taskset of the emulated phone: it checks the mask against the phone's cores (the fake sysfs), but the
        # computer running the emulator may have fewer cores, so the command runs unpinned
        taskset = self.storage / "system" / "bin" / "taskset"
        taskset.write_text("\n".join([
            "#!/bin/sh",
            "# taskset of mobilekit.testing.adb_emulator: accepts a hex mask of the emulated phone's cores.",
            'mask="$1"; shift',
            'case "$mask" in ""|*[!0-9a-fA-F]*) echo "taskset: bad mask $mask" >&2; exit 1 ;; esac',
            'exec "$@"', ""]))
        taskset.chmod(0o755)

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self.stopping:
            try:
                sock, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._state_lock:
                self._connections.add(conn)
            threading.Thread(target=conn.run, name="adb-emu-conn", daemon=True).start()


# ----------------------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    """Run an emulator until SIGTERM/SIGINT; print its port on stdout once it listens."""
    parser = argparse.ArgumentParser(prog="python -m mobilekit.testing.adb_emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--storage", required=True, help="folder that holds the device's file system")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 = pick a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--no-auth", action="store_true", help="skip the AUTH exchange")
    parser.add_argument("--authorized-keys", type=Path, help="file of adb public keys; refuse all others")
    parser.add_argument("--sync-rate-limit", type=float, default=None, help="limit SEND to this many bytes/s")
    parser.add_argument("--run-cost", type=float, default=0.0,
                        help="seconds every benchmark_model run takes on top (a phone-like device)")
    args = parser.parse_args(argv)

    keys = None
    if args.authorized_keys is not None:
        keys = [line for line in args.authorized_keys.read_text().splitlines() if line.strip()]
    emulator = AdbDeviceEmulator(
        args.storage,
        host=args.host,
        port=args.port,
        require_auth=not args.no_auth,
        authorized_keys=keys,
        sync_rate_limit_bps=args.sync_rate_limit,
        run_cost_s=args.run_cost,
    )
    done = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    emulator.start()
    sys.stdout.write(f"{emulator.port}\n")
    sys.stdout.flush()
    while not done.wait(0.5):
        pass
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
