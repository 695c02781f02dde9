"""AdbTransport against the ADB device emulator: the direct adb-shell path in-process, the adb-server path
through Debian's real adb server, and an emulator process killed in the middle of an operation."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mobilekit.errors import DeviceError
from mobilekit.profile.benchmark_output import parse_benchmark_model
from mobilekit.profile.transports import (
    AdbTransport,
    DeviceAuthError,
    DeviceConnectionError,
    DeviceDisconnectedError,
    DeviceNotFoundError,
    DeviceTimeoutError,
    DeviceTransport,
    RemoteFileError,
    connect_adb,
    ensure_adb_key,
)
from mobilekit.testing.adb_emulator import AdbDeviceEmulator
from mobilekit.testing.benchmark_model_litert import write_benchmark_model_wrapper

REPO_ROOT = Path(__file__).resolve().parents[1]
TMP_DIR = "/data/local/tmp"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def shared_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One RSA key generated for the module (generation takes ~0.5 s), copied into each test's HOME."""
    return ensure_adb_key(tmp_path_factory.mktemp("key") / "adbkey")


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME without ~/.android, so nothing touches the user's keys or adb server."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.delenv("ANDROID_SDK_HOME", raising=False)
    monkeypatch.delenv("ANDROID_ADB_SERVER_PORT", raising=False)
    return path


@pytest.fixture
def home(empty_home: Path, shared_key: Path) -> Path:
    """A private HOME that already holds an adb key pair (mode 0600)."""
    android = empty_home / ".android"
    android.mkdir(mode=0o700)
    shutil.copy2(shared_key, android / "adbkey")
    shutil.copy2(shared_key.with_name("adbkey.pub"), android / "adbkey.pub")
    return empty_home


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[AdbDeviceEmulator]:
    emu = AdbDeviceEmulator(tmp_path / "storage").start()
    yield emu
    emu.stop()


@pytest.fixture
def transport(home: Path, emulator: AdbDeviceEmulator) -> Iterator[AdbTransport]:
    tr = connect_adb(emulator.address, use_server=False, timeout_s=5)
    yield tr
    tr.close()


def storage_file(emu: AdbDeviceEmulator, device_path: str) -> Path:
    return Path(emu.host_path(device_path))


# ----------------------------------------------------------------------------------------------------------
# connecting and keys


def test_connect_generates_the_adb_key_with_mode_0600(empty_home: Path, emulator: AdbDeviceEmulator):
    home = empty_home
    assert not (home / ".android").exists()
    tr = connect_adb(emulator.address, use_server=False, timeout_s=5)
    try:
        key = home / ".android" / "adbkey"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
        pub = (home / ".android" / "adbkey.pub").read_text().split()[0]
        # The device learned exactly this public key (the "Allow" prompt was accepted).
        assert emulator.adb_keys_file.read_text().split()[0] == pub
        assert emulator.auth_log == ["pubkey"]
        assert isinstance(tr, DeviceTransport)
        assert not tr.via_server
    finally:
        tr.close()


def test_second_connection_authenticates_with_a_signature(home: Path, emulator: AdbDeviceEmulator):
    connect_adb(emulator.address, use_server=False, timeout_s=5).close()
    connect_adb(emulator.address, use_server=False, timeout_s=5).close()
    assert emulator.auth_log == ["pubkey", "signature"]


def test_existing_key_is_reused_not_regenerated(home: Path, emulator: AdbDeviceEmulator):
    key = home / ".android" / "adbkey"
    before = key.read_bytes()
    connect_adb(emulator.address, use_server=False, timeout_s=5).close()
    assert key.read_bytes() == before


def test_key_material_is_not_logged(home: Path, emulator: AdbDeviceEmulator, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    tr = connect_adb(emulator.address, use_server=False, timeout_s=5)
    tr.shell(["true"])
    tr.close()
    pub = (home / ".android" / "adbkey.pub").read_text().split()[0]
    private_body = (home / ".android" / "adbkey").read_text().splitlines()[1]
    assert caplog.records, "adb-shell debug logging should be captured at all"
    assert pub[:40] not in caplog.text
    assert private_body not in caplog.text


def test_refused_key_raises_auth_error_naming_the_prompt(empty_home: Path, shared_key: Path, tmp_path: Path):
    # The device trusts only the shared key; this HOME gets a fresh, different one.
    other_pub = shared_key.with_name("adbkey.pub").read_text()
    with AdbDeviceEmulator(tmp_path / "locked", authorized_keys=[other_pub]) as emu:
        started = time.monotonic()
        with pytest.raises(DeviceAuthError) as excinfo:
            connect_adb(emu.address, use_server=False, timeout_s=5, auth_timeout_s=1)
        assert time.monotonic() - started < 5
    message = str(excinfo.value)
    assert "\n" not in message
    assert emu.address in message
    assert "accept the USB debugging prompt" in message


def test_authorized_key_is_accepted_by_signature(home: Path, tmp_path: Path):
    pub = (home / ".android" / "adbkey.pub").read_text()
    with AdbDeviceEmulator(tmp_path / "trusted", authorized_keys=[pub]) as emu:
        connect_adb(emu.address, use_server=False, timeout_s=5).close()
        assert emu.auth_log == ["signature"]


def test_no_address_no_serial_and_no_server_raises_not_found(home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(free_port()))
    with pytest.raises(DeviceNotFoundError) as excinfo:
        connect_adb(timeout_s=1)
    assert "address=" in str(excinfo.value)


def test_direct_usb_without_libusb_explains_the_alternatives(home: Path):
    try:
        import usb1  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("libusb1 is installed here; this checks the message shown without it")
    with pytest.raises(DeviceConnectionError) as excinfo:
        connect_adb(serial="R58M123ABC", use_server=False)
    message = str(excinfo.value)
    assert "R58M123ABC" in message and "adb-shell[usb]" in message and "adb start-server" in message


def test_connection_refused_raises_one_line_error_with_the_address(home: Path):
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(DeviceConnectionError) as excinfo:
        connect_adb(address, use_server=False, timeout_s=2)
    assert address in str(excinfo.value)
    assert "refused" in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


# ----------------------------------------------------------------------------------------------------------
# files


def test_push_sends_several_files_in_one_sync_session(transport: AdbTransport, emulator: AdbDeviceEmulator, tmp_path: Path):
    local = []
    for k, size in enumerate((0, 10, 70_000)):
        path = tmp_path / f"file{k}.bin"
        path.write_bytes(bytes((k + i) % 251 for i in range(size)))
        path.chmod(0o640 if k else 0o755)
        local.append(path)
    before = list(emulator.service_log)
    remotes = transport.push(local, f"{TMP_DIR}/batch")
    assert remotes == [f"{TMP_DIR}/batch/file{k}.bin" for k in range(3)]
    assert emulator.service_log[len(before) :] == ["sync:"]
    for path, remote in zip(local, remotes):
        on_device = storage_file(emulator, remote)
        assert on_device.read_bytes() == path.read_bytes()
        assert stat.S_IMODE(on_device.stat().st_mode) == stat.S_IMODE(path.stat().st_mode)
        assert int(on_device.stat().st_mtime) == int(path.stat().st_mtime)


def test_push_of_a_missing_local_file_sends_nothing(transport: AdbTransport, emulator: AdbDeviceEmulator, tmp_path: Path):
    present = tmp_path / "present.txt"
    present.write_text("x")
    with pytest.raises(FileNotFoundError):
        transport.push([present, tmp_path / "absent.txt"], TMP_DIR)
    assert not storage_file(emulator, f"{TMP_DIR}/present.txt").exists()


def test_stat_reports_size_mode_and_mtime_or_none(transport: AdbTransport, tmp_path: Path):
    path = tmp_path / "s.txt"
    path.write_text("12345")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    path.chmod(0o600)
    (remote,) = transport.push([path], TMP_DIR)
    st = transport.stat(remote)
    assert st is not None
    assert (st.size, stat.S_IMODE(st.mode), st.mtime, st.is_file) == (5, 0o600, 1_700_000_000, True)
    folder = transport.stat(TMP_DIR)
    assert folder is not None and folder.is_dir
    assert transport.stat(f"{TMP_DIR}/no-such-file") is None


def test_pull_round_trips_a_1mb_binary_file_byte_for_byte(transport: AdbTransport, tmp_path: Path):
    data = bytes(range(256)) * 4096 + os.urandom(1000)
    source = tmp_path / "blob.bin"
    source.write_bytes(data)
    (remote,) = transport.push([source], TMP_DIR)
    back = tmp_path / "back.bin"
    transport.pull(remote, back)
    assert back.read_bytes() == data
    assert not back.with_name("back.bin.part").exists()


def test_pull_refuses_a_planted_symlink_and_leaves_its_target_unchanged(transport: AdbTransport, tmp_path: Path):
    from mobilekit.safewrite import OutputError

    source = tmp_path / "blob.bin"
    source.write_bytes(b"from the device")
    (remote,) = transport.push([source], TMP_DIR)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "back.bin"
    link.symlink_to(victim)
    (tmp_path / "back.bin.part").symlink_to(victim)  # the old fixed temp name
    with pytest.raises(OutputError, match="symlink"):
        transport.pull(remote, link)
    assert victim.read_text() == "precious" and link.is_symlink()
    transport.pull(remote, tmp_path / "fresh.bin")
    assert (tmp_path / "fresh.bin").read_bytes() == b"from the device"
    assert victim.read_text() == "precious"


def test_key_generation_never_follows_a_planted_symlink(tmp_path: Path):
    from mobilekit.safewrite import OutputError

    victim = tmp_path / "not-yet"  # a dangling link: writing through it would create a file elsewhere
    folder = tmp_path / "android"
    folder.mkdir()
    (folder / "adbkey").symlink_to(victim)
    with pytest.raises(OutputError, match="symlink"):
        ensure_adb_key(folder / "adbkey")
    assert not victim.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["adbkey"]  # no scratch folder left behind


def test_pull_of_a_missing_file_raises_remote_file_error(transport: AdbTransport, tmp_path: Path):
    with pytest.raises(RemoteFileError) as excinfo:
        transport.pull(f"{TMP_DIR}/missing.bin", tmp_path / "out.bin")
    assert "No such file" in str(excinfo.value)
    assert not (tmp_path / "out.bin").exists()
    assert transport.shell(["echo", "still usable"]).output == "still usable\n"


def test_pull_into_a_missing_local_folder_raises_before_touching_the_device(transport: AdbTransport, tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        transport.pull(f"{TMP_DIR}/anything", tmp_path / "no-such-folder" / "out.bin")
    assert transport.shell(["true"]).exit_code == 0


def test_push_refused_by_the_device_raises_remote_file_error(transport: AdbTransport, tmp_path: Path):
    blocker, payload = tmp_path / "blocker", tmp_path / "payload.txt"
    blocker.write_text("a file where a folder is wanted")
    payload.write_text("x")
    transport.push([blocker], TMP_DIR)
    with pytest.raises(RemoteFileError) as excinfo:
        transport.push([payload], f"{TMP_DIR}/blocker")
    assert "payload.txt" in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert transport.shell(["echo", "usable"]).output == "usable\n"


def test_remove_deletes_files_and_ignores_missing_ones(transport: AdbTransport, emulator: AdbDeviceEmulator, tmp_path: Path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a")
    b.write_text("b")
    remotes = transport.push([a, b], TMP_DIR)
    transport.remove([*remotes, f"{TMP_DIR}/never-existed"])
    assert transport.stat(remotes[0]) is None
    assert not storage_file(emulator, remotes[1]).exists()


# ----------------------------------------------------------------------------------------------------------
# shell


def test_shell_returns_exit_codes(transport: AdbTransport):
    assert transport.shell(["true"]).exit_code == 0
    assert transport.shell(["false"]).exit_code == 1
    result = transport.shell(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert result.exit_code == 7
    assert result.output == "out\nerr\n"
    assert not result.ok


def test_shell_output_without_trailing_newline_keeps_its_text(transport: AdbTransport):
    result = transport.shell(["printf", "%s", "no newline"])
    assert (result.output, result.exit_code) == ("no newline", 0)


def test_shell_sees_device_paths_and_properties(transport: AdbTransport):
    assert transport.shell(["getprop", "ro.product.cpu.abi"]).output == "arm64-v8a\n"
    assert transport.shell(["cat", "/sys/class/thermal/thermal_zone0/temp"]).output == "36500\n"
    assert transport.shell(["pwd"]).output == "/\n"


def test_shell_timeout_raises_quickly_and_the_transport_stays_usable(transport: AdbTransport):
    started = time.monotonic()
    with pytest.raises(DeviceTimeoutError) as excinfo:
        transport.shell(["sleep", "5"], timeout_s=0.5)
    assert time.monotonic() - started < 3.5
    assert "'sleep'" in str(excinfo.value)
    assert transport.shell(["echo", "ok"]).output == "ok\n"


HOSTILE_NAMES = [
    "with space.txt",
    "it's.txt",
    'double"quote.txt',
    "semi;colon.txt",
    "$(touch PWNED).txt",
    "`touch PWNED2`.txt",
    "dollar$HOME&amp|pipe>redir.txt",
]


def test_hostile_file_names_round_trip_and_execute_nothing(transport: AdbTransport, emulator: AdbDeviceEmulator, tmp_path: Path):
    local_dir = tmp_path / "hostile"
    local_dir.mkdir()
    local = []
    for k, name in enumerate(HOSTILE_NAMES):
        path = local_dir / name
        path.write_text(f"content {k}\n")
        local.append(path)
    remote_dir = f"{TMP_DIR}/names; touch PWNED3"
    remotes = transport.push(local, remote_dir)
    listing = transport.shell(["ls", "-1", remote_dir])
    assert listing.exit_code == 0
    assert sorted(listing.output.splitlines()) == sorted(HOSTILE_NAMES)
    for k, remote in enumerate(remotes):
        assert transport.shell(["cat", remote]).output == f"content {k}\n"
        assert transport.stat(remote) is not None
        back = tmp_path / f"back{k}"
        transport.pull(remote, back)
        assert back.read_text() == f"content {k}\n"
    transport.remove(remotes)
    assert transport.shell(["ls", "-A", remote_dir]).output == ""
    pwned = [p for p in emulator.storage.rglob("*") if p.name.startswith("PWNED")]
    assert pwned == []
    assert not any(p.name.startswith("PWNED") for p in Path.cwd().iterdir())


def test_the_pwned_check_would_catch_an_executed_command(transport: AdbTransport, emulator: AdbDeviceEmulator):
    # Control for the test above: a command the shell does run leaves its mark where that test looks.
    transport.shell(["sh", "-c", "touch PWNED_CONTROL"])
    assert [p.name for p in emulator.storage.rglob("PWNED*")] == ["PWNED_CONTROL"]


# ----------------------------------------------------------------------------------------------------------
# emulator protocol details, with a minimal raw ADB host


class RawAdbHost:
    """Just enough of the host side of the ADB wire protocol to drive the emulator message by message."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def send(self, cmd: bytes, arg0: int, arg1: int, data: bytes = b"", checksum: int | None = None) -> None:
        c = int.from_bytes(cmd, "little")
        check = sum(data) & 0xFFFFFFFF if checksum is None else checksum
        self.sock.sendall(struct.pack("<6I", c, arg0, arg1, len(data), check, c ^ 0xFFFFFFFF) + data)

    def recv(self) -> tuple[bytes, int, int, bytes]:
        header = self._exact(24)
        c, arg0, arg1, length, _check, magic = struct.unpack("<6I", header)
        assert magic == c ^ 0xFFFFFFFF
        return c.to_bytes(4, "little"), arg0, arg1, self._exact(length)

    def _exact(self, size: int) -> bytes:
        buf = b""
        while len(buf) < size:
            chunk = self.sock.recv(size - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def open_emulator(tmp_path: Path) -> Iterator[AdbDeviceEmulator]:
    emu = AdbDeviceEmulator(tmp_path / "open-storage", require_auth=False).start()
    yield emu
    emu.stop()


def handshake(host: RawAdbHost, version: int = 0x01000000) -> tuple[int, int, bytes]:
    host.send(b"CNXN", version, 1024 * 1024, b"host::features=\0")
    cmd, arg0, arg1, banner = host.recv()
    assert cmd == b"CNXN"
    return arg0, arg1, banner


def test_emulator_answers_cnxn_with_the_negotiated_version_and_no_features(open_emulator: AdbDeviceEmulator):
    for version, expected in ((0x01000000, 0x01000000), (0x01000001, 0x01000001), (0x01000002, 0x01000001)):
        host = RawAdbHost(open_emulator.port)
        try:
            got, maxdata, banner = handshake(host, version)
        finally:
            host.close()
        assert got == expected
        assert 4096 <= maxdata <= 1024 * 1024
        assert banner.startswith(b"device::") and b"shell_v2" not in banner
        assert b"ro.product.model=MK Emulator" in banner


def test_emulator_serves_two_interleaved_streams(open_emulator: AdbDeviceEmulator):
    host = RawAdbHost(open_emulator.port)
    try:
        handshake(host)
        host.send(b"OPEN", 11, 0, b"shell:sleep 0.3; echo first\0")
        host.send(b"OPEN", 12, 0, b"shell:echo second\0")
        outputs: dict[int, bytes] = {11: b"", 12: b""}
        closed: set[int] = set()
        local_ids: set[int] = set()
        while closed != {11, 12}:
            cmd, arg0, arg1, data = host.recv()
            if cmd == b"OKAY":
                local_ids.add(arg0)
            elif cmd == b"WRTE":
                outputs[arg1] += data
                host.send(b"OKAY", arg1, arg0)
            elif cmd == b"CLSE":
                closed.add(arg1)
        assert outputs == {11: b"first\n", 12: b"second\n"}
        assert len(local_ids) == 2
    finally:
        host.close()


def test_emulator_refuses_unknown_services_with_clse(open_emulator: AdbDeviceEmulator):
    host = RawAdbHost(open_emulator.port)
    try:
        handshake(host)
        host.send(b"OPEN", 5, 0, b"reboot:bootloader\0")
        assert host.recv()[:3] == (b"CLSE", 0, 5)
    finally:
        host.close()


def test_emulator_drops_a_connection_with_a_bad_checksum(open_emulator: AdbDeviceEmulator):
    host = RawAdbHost(open_emulator.port)
    try:
        handshake(host)  # version 0x01000000: checksums are checked
        host.send(b"OPEN", 5, 0, b"shell:echo hi\0", checksum=1)
        with pytest.raises((ConnectionError, OSError)):
            host.recv()
    finally:
        host.close()


def test_emulator_exec_service_returns_stdout_only(home: Path, emulator: AdbDeviceEmulator):
    from adb_shell.adb_device import AdbDeviceTcp
    from adb_shell.auth.sign_cryptography import CryptographySigner

    device = AdbDeviceTcp("127.0.0.1", emulator.port, default_transport_timeout_s=5)
    device.connect(rsa_keys=[CryptographySigner(str(home / ".android" / "adbkey"))], auth_timeout_s=5)
    try:
        assert device.exec_out("echo out; echo err >&2") == "out\n"
        assert device.shell("echo out; echo err >&2") == "out\nerr\n"
        names = sorted(f.filename for f in device.list("/sys/class/thermal/thermal_zone0"))
        assert names == [b"temp", b"type"]
    finally:
        device.close()


# ----------------------------------------------------------------------------------------------------------
# benchmark_model over ADB


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Conv2D + Dense Keras model converted with TFLiteConverter (in a subprocess, to keep
    TensorFlow out of the test process)."""
    out = tmp_path_factory.mktemp("model") / "tiny model.tflite"
    code = (
        "import os, sys\n"
        "os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n"
        "import tensorflow as tf\n"
        "m = tf.keras.Sequential([tf.keras.Input((16, 16, 3)), tf.keras.layers.Conv2D(8, 3, activation='relu'),\n"
        "    tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(10), tf.keras.layers.Softmax()])\n"
        "open(sys.argv[1], 'wb').write(tf.lite.TFLiteConverter.from_keras_model(m).convert())\n"
    )
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, capture_output=True, timeout=120)
    return out


def test_benchmark_model_wrapper_runs_over_adb_and_its_output_parses(
    transport: AdbTransport, emulator: AdbDeviceEmulator, tiny_tflite: Path, tmp_path: Path
):
    wrapper = write_benchmark_model_wrapper(tmp_path)
    assert wrapper.name == "benchmark_model" and os.access(wrapper, os.X_OK)
    binary, model = transport.push([wrapper, tiny_tflite], TMP_DIR)
    result = transport.shell(
        [binary, f"--graph={model}", "--num_threads=1", "--num_runs=30", "--warmup_runs=3",
         "--min_secs=0", "--warmup_min_secs=0", "--enable_op_profiling=true", "--use_caching=true"],
        timeout_s=60,
    )
    assert result.exit_code == 0, result.output
    assert f"Loaded model {model}\n" in result.output  # storage paths are shown as device paths
    parsed = parse_benchmark_model(result.output)
    assert parsed.count == 30
    assert parsed.avg_us > 0 and parsed.init_us > 0 and parsed.std_us is not None
    assert parsed.min_us <= parsed.avg_us <= parsed.max_us
    types = [op.node_type for op in parsed.ops]
    assert "CONV_2D" in types and "FULLY_CONNECTED" in types and types[-1] == "SOFTMAX"
    assert parsed.ops[-1].cdf_percent == pytest.approx(100.0, abs=0.01)
    assert [op.node_index for op in parsed.ops] == list(range(len(parsed.ops)))


def test_benchmark_model_wrapper_failure_is_reported_by_the_parser(transport: AdbTransport, tmp_path: Path):
    (binary,) = transport.push([write_benchmark_model_wrapper(tmp_path)], TMP_DIR)
    result = transport.shell([binary, f"--graph={TMP_DIR}/missing.tflite"], timeout_s=60)
    assert result.exit_code == 1
    with pytest.raises(DeviceError) as excinfo:
        parse_benchmark_model(result.output)
    assert "Benchmarking failed." in str(excinfo.value)


# ----------------------------------------------------------------------------------------------------------
# through the real adb server


@pytest.fixture
def adb_server(home: Path, tmp_path: Path, emulator: AdbDeviceEmulator) -> Iterator[int]:
    """Debian's adb server on a private port with a private HOME, connected to the emulator."""
    adb = shutil.which("adb")
    if adb is None:
        pytest.fail("the `adb` binary is missing: run `make test`, which installs Debian's adb package")
    port = free_port()
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp_path), ANDROID_ADB_SERVER_PORT=str(port))
    env.pop("ANDROID_SDK_HOME", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([adb, "-P", str(port), *args], env=env, capture_output=True, text=True, timeout=30)

    try:
        assert run("start-server").returncode == 0
        run("connect", emulator.address)
        assert run("-s", emulator.serial, "wait-for-device").returncode == 0
        yield port
    finally:
        run("kill-server")


def test_server_path_push_stat_pull_shell_remove(adb_server: int, emulator: AdbDeviceEmulator, tmp_path: Path):
    tr = connect_adb(serial=emulator.serial, use_server=True, server_port=adb_server, timeout_s=5)
    try:
        assert tr.via_server
        data = os.urandom(300_000)
        files = [tmp_path / "one.bin", tmp_path / "two $(touch PWNED).txt"]
        files[0].write_bytes(data)
        files[1].write_text("two\n")
        before = len(emulator.service_log)
        remotes = tr.push(files, f"{TMP_DIR}/srv")
        assert emulator.service_log[before:] == ["sync:"]
        assert tr.stat(remotes[0]).size == len(data)
        tr.pull(remotes[0], tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == data
        assert tr.shell(["cat", remotes[1]]).output == "two\n"
        assert tr.shell(["sh", "-c", "exit 4"]).exit_code == 4
        tr.remove(remotes)
        assert tr.stat(remotes[1]) is None
        assert not list(emulator.storage.rglob("PWNED*"))
    finally:
        tr.close()


def test_server_is_chosen_automatically_when_it_lists_the_device(adb_server: int, emulator: AdbDeviceEmulator, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(adb_server))
    with connect_adb(emulator.address) as tr:
        assert tr.via_server
        assert tr.shell(["echo", "via server"]).output == "via server\n"


def test_server_path_unknown_serial_raises_not_found(adb_server: int):
    with pytest.raises(DeviceNotFoundError) as excinfo:
        connect_adb(serial="no-such-serial", use_server=True, server_port=adb_server, timeout_s=5)
    assert "no-such-serial" in str(excinfo.value)


def test_no_server_and_use_server_true_raises_connection_error(home: Path):
    port = free_port()
    with pytest.raises(DeviceConnectionError) as excinfo:
        connect_adb(serial="x", use_server=True, server_port=port, timeout_s=1)
    assert f"127.0.0.1:{port}" in str(excinfo.value) and "adb start-server" in str(excinfo.value)


# ----------------------------------------------------------------------------------------------------------
# an emulator process killed mid-operation


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    storage = tmp_path / "proc-storage"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mobilekit.testing.adb_emulator", "--port", "0", "--storage", str(storage),
         "--sync-rate-limit", "4000000"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        port = int(proc.stdout.readline())
        yield proc, port, storage
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()


def assert_one_line_device_error(exc: BaseException, address: str) -> None:
    message = str(exc)
    assert "\n" not in message and "Traceback" not in message
    assert address in message


def test_killing_the_device_during_shell_raises_disconnected(home: Path, emulator_process):
    proc, port, _storage = emulator_process
    address = f"127.0.0.1:{port}"
    tr = connect_adb(address, use_server=False, timeout_s=5)
    killer = threading.Timer(0.5, lambda: os.kill(proc.pid, signal.SIGKILL))
    killer.start()
    started = time.monotonic()
    with pytest.raises(DeviceDisconnectedError) as excinfo:
        tr.shell(["sleep", "3"], timeout_s=20)
    killer.join()
    assert time.monotonic() - started < 3
    assert_one_line_device_error(excinfo.value, address)
    assert "connection lost" in str(excinfo.value)
    with pytest.raises(DeviceDisconnectedError):
        tr.shell(["true"])


def test_killing_the_device_during_push_raises_disconnected(home: Path, emulator_process, tmp_path: Path):
    proc, port, storage = emulator_process
    address = f"127.0.0.1:{port}"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 * 1024 * 1024))  # ~2 s at the emulator's 4 MB/s limit
    tr = connect_adb(address, use_server=False, timeout_s=5)

    def kill_once_receiving() -> None:
        deadline = time.monotonic() + 10
        target = storage / "data" / "local" / "tmp"
        while time.monotonic() < deadline and not (target / "big.bin").exists():
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_once_receiving)
    killer.start()
    started = time.monotonic()
    with pytest.raises(DeviceDisconnectedError) as excinfo:
        tr.push([big], TMP_DIR)
    killer.join()
    assert time.monotonic() - started < 8
    assert_one_line_device_error(excinfo.value, address)
    # like adbd, the emulator writes to the target path: a device killed mid-push leaves a partial file there
    partial = storage / "data" / "local" / "tmp" / "big.bin"
    assert partial.stat().st_size < big.stat().st_size


def test_connecting_to_a_killed_device_raises_connection_error(home: Path, emulator_process):
    proc, port, _storage = emulator_process
    proc.kill()
    proc.wait(timeout=10)
    with pytest.raises(DeviceConnectionError) as excinfo:
        connect_adb(f"127.0.0.1:{port}", use_server=False, timeout_s=2)
    assert_one_line_device_error(excinfo.value, f"127.0.0.1:{port}")
