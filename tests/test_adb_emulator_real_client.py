"""The ADB device emulator checked against Debian's real `adb` client and server, so that it cannot drift
from the protocol: connect (with adb's own key and signature), push, shell, pull.

The adb server runs on a private port with a private HOME (its key is generated there) and TMPDIR (its log),
and is killed at the end; a user's own adb server and keys are never touched."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mobilekit.testing.adb_emulator import AdbDeviceEmulator, decode_android_pubkey

Adb = Callable[..., subprocess.CompletedProcess]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def adb_home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[AdbDeviceEmulator]:
    emu = AdbDeviceEmulator(tmp_path / "storage").start()
    yield emu
    emu.stop()


@pytest.fixture
def adb(adb_home: Path, tmp_path: Path) -> Iterator[Adb]:
    binary = shutil.which("adb")
    if binary is None:
        pytest.fail(
            "Debian's `adb` client is not installed, so the emulator cannot be checked against it: run `make test` "
            "(it installs the `adb` package), or `apt-get install adb`"
        )
    port = free_port()
    env = dict(os.environ, HOME=str(adb_home), TMPDIR=str(tmp_path), ANDROID_ADB_SERVER_PORT=str(port))
    env.pop("ANDROID_SDK_HOME", None)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([binary, "-P", str(port), *args], env=env, capture_output=True, timeout=30)
        if check and result.returncode != 0:
            pytest.fail(f"adb {' '.join(args)} exited {result.returncode}: {result.stdout!r} {result.stderr!r}")
        return result

    run("start-server")
    try:
        yield run
    finally:
        run("kill-server", check=False)


def connect(adb: Adb, emulator: AdbDeviceEmulator) -> None:
    adb("connect", emulator.address)
    adb("-s", emulator.serial, "wait-for-device")


def test_real_adb_connects_and_lists_the_emulator(adb: Adb, emulator: AdbDeviceEmulator, adb_home: Path):
    connect(adb, emulator)
    listing = adb("devices", "-l").stdout.decode()
    line = next(ln for ln in listing.splitlines() if ln.startswith(emulator.serial))
    assert line.split()[1] == "device"
    assert "model:MK_Emulator" in line and "device:mk_emulator" in line
    # The device was offered adb's own public key (generated in the private HOME) and accepted it.
    adb_pub = (adb_home / ".android" / "adbkey.pub").read_text()
    trusted = emulator.adb_keys_file.read_text()
    assert decode_android_pubkey(adb_pub).public_numbers() == decode_android_pubkey(trusted).public_numbers()
    assert emulator.auth_log == ["pubkey"]


def test_real_adb_reconnects_with_a_signature_the_emulator_verifies(adb: Adb, emulator: AdbDeviceEmulator):
    connect(adb, emulator)
    adb("disconnect", emulator.address)
    connect(adb, emulator)
    assert emulator.auth_log == ["pubkey", "signature"]


def test_real_adb_push_shell_pull(adb: Adb, emulator: AdbDeviceEmulator, tmp_path: Path):
    connect(adb, emulator)
    data = os.urandom(300_000) + bytes(range(256))
    source = tmp_path / "payload.bin"
    source.write_bytes(data)
    adb("-s", emulator.serial, "push", str(source), "/data/local/tmp/sub dir/payload.bin")
    assert Path(emulator.host_path("/data/local/tmp/sub dir/payload.bin")).read_bytes() == data

    assert adb("-s", emulator.serial, "shell", "echo", "hello").stdout == b"hello\n"
    sizes = adb("-s", emulator.serial, "shell", "wc -c < '/data/local/tmp/sub dir/payload.bin'").stdout
    assert int(sizes) == len(data)
    assert adb("-s", emulator.serial, "shell", "getprop", "ro.product.model").stdout == b"MK Emulator\n"

    back = tmp_path / "back.bin"
    adb("-s", emulator.serial, "pull", "/data/local/tmp/sub dir/payload.bin", str(back))
    assert back.read_bytes() == data


def test_real_adb_pull_of_a_missing_file_fails_cleanly(adb: Adb, emulator: AdbDeviceEmulator, tmp_path: Path):
    connect(adb, emulator)
    result = adb("-s", emulator.serial, "pull", "/data/local/tmp/missing", str(tmp_path / "x"), check=False)
    assert result.returncode != 0
    assert b"'/data/local/tmp/missing' does not exist" in result.stderr + result.stdout
    # The connection survives a failed pull.
    assert adb("-s", emulator.serial, "shell", "echo", "alive").stdout == b"alive\n"
