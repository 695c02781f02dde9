"""Profiling over ADB, end to end against the device emulator (mobilekit.testing.adb_emulator) running the
LiteRT-backed benchmark_model stand-in as the device's benchmark binary: the same kind of table as on the host,
a device killed mid-table loses nothing and resumes, and a broken binary or runner fails with a clear error."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mobilekit.errors import DeviceError
from mobilekit.profile.devices import parse_device
from mobilekit.profile.model_files import ModelFileCache
from mobilekit.profile.profiler import profile_device
from mobilekit.profile.runners import AdbRunner, open_runner
from mobilekit.latency_table import LatencyTable
from mobilekit.space import get_space
from mobilekit.testing.adb_emulator import AdbDeviceEmulator
from mobilekit.testing.benchmark_model_litert import write_benchmark_model_wrapper

SPACE = get_space("mnasnet-k357", resolution=32)
DEVICE_DIR = "/data/local/tmp/mobilekit"
WORK_DIR = f"{DEVICE_DIR}/mobilekit-run"  # the runner's own folder inside device_dir


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "profile-model-files"  # shared with test_profile_host


@pytest.fixture(scope="module")
def host_side(tmp_path_factory):
    """This computer's side: the benchmark_model stand-in to push, and an adb key."""
    folder = tmp_path_factory.mktemp("adb-host")
    return {"binary": write_benchmark_model_wrapper(folder), "key": folder / "adbkey"}


def descriptor(host_side, address, **extra):
    return parse_device({"name": "emulator", "transport": "adb", "address": address, "use_server": False,
                         "key_path": str(host_side["key"]), "benchmark_binary": str(host_side["binary"]), **extra})


def start_emulator_process(storage: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "mobilekit.testing.adb_emulator", "--port", "0",
                             "--storage", str(storage)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    port = int(proc.stdout.readline())
    return proc, f"127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
    proc.wait(timeout=10)
    proc.stdout.close()


def leftover_files(storage: Path) -> list[Path]:
    folder = storage / DEVICE_DIR.lstrip("/")
    return sorted(folder.iterdir()) if folder.exists() else []


class CountingAdbRunner(AdbRunner):
    """An ADB runner that counts the files it measures and can SIGKILL the device after N results."""

    def __init__(self, desc, kill: subprocess.Popen | None = None, kill_after: int = 0):
        super().__init__(desc)
        self.measured: list[Path] = []
        self.results = 0
        self._kill, self._kill_after = kill, kill_after

    def measure(self, model_paths, runs=50, warmup=5, on_result=None):
        def counted(index, measurement):
            on_result(index, measurement)
            self.measured.append(model_paths[index])
            self.results += 1
            if self._kill is not None and self.results == self._kill_after:
                # SIGKILL the device while the next benchmark is running on it
                threading.Timer(0.3, self._kill.kill).start()

        return super().measure(model_paths, runs, warmup, counted)


def test_adb_profile_against_the_emulator_builds_the_same_kind_of_table_as_the_host(tmp_path, host_side, work_dir):
    storage = tmp_path / "storage"
    proc, address = start_emulator_process(storage)
    try:
        with open_runner(descriptor(host_side, address)) as runner:
            table = profile_device(runner, SPACE, tmp_path / "emu.json", runs=5, repeats=1, positions=[0, 2],
                                   progress=False, work_dir=work_dir, warmup=1)
    finally:
        stop(proc)
    loaded = LatencyTable.load(tmp_path / "emu.json")
    assert loaded.to_dict() == table.to_dict()
    assert loaded.device["model"] == "mobilekit MK Emulator" and loaded.device["abi"] == "arm64-v8a"
    assert loaded.device["os"] == "Android 14 (SDK 34)" and loaded.device["transport"] == "adb"
    assert sorted(loaded.entries) == [0, 2]
    assert set(loaded.entries[2]) == {op.name for op in SPACE.positions[2].candidates}
    assert set(loaded.fixed) == {"stem", "head"}
    for _, name, entry in loaded.iter_entries():
        if name == "skip":
            continue
        assert entry["measured"] and entry["runs"] == 5
        assert entry["statistic"] == "mean"  # this benchmark_model prints avg/std but no median
        assert 0 < entry["min_ms"] <= entry["median_ms"] <= entry["max_ms"]
        assert entry["wall_s"] - entry["export_s"] > entry["inference_s"]  # transfers and start-up cost time
    assert leftover_files(storage) == []  # the runner cleaned up after itself


def test_device_killed_mid_table_keeps_every_finished_entry_and_resumes(tmp_path, host_side, work_dir):
    storage, out = tmp_path / "storage", tmp_path / "killed.json"
    proc, address = start_emulator_process(storage)
    runner = CountingAdbRunner(descriptor(host_side, address), kill=proc, kill_after=5)
    try:
        with pytest.raises(DeviceError) as caught, runner:
            profile_device(runner, SPACE, out, runs=5, repeats=2, positions=[0, 21], progress=False,
                           work_dir=work_dir, warmup=1, batch_size=2)
    finally:
        stop(proc)
    message = str(caught.value)
    assert address in message and "\n" not in message
    assert f"measured entries are saved in {out}" in message and "re-run the same command to resume" in message

    # the file is valid and holds exactly the results that were reported before the device died
    saved = json.loads(out.read_text())
    table = LatencyTable.from_dict(saved)
    rounds = sum(len(e["repeats"]) for _, _, e in table.iter_entries() if e["measured"]) + \
        sum(len(e["repeats"]) for e in table.fixed.values())
    assert rounds == runner.results and 5 <= runner.results < 8

    # a new device process on the same storage; the resumed run measures only the missing rounds
    proc, address = start_emulator_process(storage)
    try:
        with CountingAdbRunner(descriptor(host_side, address)) as resumed:
            final = profile_device(resumed, SPACE, out, runs=5, repeats=2, positions=[0, 21], progress=False,
                                   work_dir=work_dir, warmup=1, batch_size=2)
    finally:
        stop(proc)
    assert len(resumed.measured) == 8 - rounds
    assert all(len(e["repeats"]) == 2 for e in [final.fixed["stem"], final.fixed["head"],
                                               final.entry(0, "ir_k3_e1"), final.entry(21, "ir_k3_e6")])
    for part in ("stem", "head"):  # finished rounds were kept, not measured again
        assert final.fixed[part]["repeats"][0] == saved["fixed"][part]["repeats"][0]
    assert leftover_files(storage) == []


@pytest.fixture
def emulator(tmp_path):
    with AdbDeviceEmulator(tmp_path / "storage") as emu:
        yield emu


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_a_binary_for_another_abi_is_reported_with_the_fix(tmp_path, host_side, emulator):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF" + os.urandom(64))  # not runnable here: the shell cannot execute it
    binary.chmod(0o755)
    desc = descriptor({**host_side, "binary": binary}, emulator.address)
    with pytest.raises(DeviceError, match=r"does not run on the device .*built for its ABI \(arm64-v8a\)"):
        open_runner(desc)


def test_a_binary_that_is_not_benchmark_model_is_refused(tmp_path, host_side, emulator):
    binary = write_script(tmp_path / "benchmark_model", "echo hello\n")
    with pytest.raises(DeviceError, match="does not look like benchmark_model"):
        open_runner(descriptor({**host_side, "binary": binary}, emulator.address))


def test_a_runner_crash_mid_table_stops_with_a_clear_message_and_keeps_finished_entries(
        tmp_path, host_side, emulator, work_dir):
    # the real stand-in, except that it crashes (exit 139, output cut short) on the head model
    binary = write_script(tmp_path / "benchmark_model", f"""\
case "$*" in
  *head-*) echo "STARTING!"; echo "Loaded model"; exit 139 ;;
esac
exec {host_side['binary']} "$@"
""")
    out = tmp_path / "crash.json"
    with open_runner(descriptor({**host_side, "binary": binary}, emulator.address)) as runner:
        with pytest.raises(DeviceError, match=r"benchmark_model failed on head-.*\.tflite \(exit 139\).* 2 measured "
                                              r"entries are saved"):
            profile_device(runner, SPACE, out, runs=3, repeats=1, positions=[0], progress=False, work_dir=work_dir,
                           warmup=0)
    table = LatencyTable.load(out)
    assert table.has(0, "ir_k3_e1") and table.fixed["stem"]["measured"] and "head" not in table.fixed


def test_adb_runner_waits_while_the_thermal_zone_is_hot(tmp_path, host_side, emulator, work_dir):
    zone = emulator.storage / "sys/class/thermal/thermal_zone0/temp"
    zone.write_text("70000\n")
    desc = descriptor(host_side, emulator.address, thermal_zone=0, thermal_max_c=45.0, thermal_poll_s=0.1)
    model = ModelFileCache(work_dir, "tflite").stem(SPACE).path
    with open_runner(desc) as runner:
        def cool_down():  # replaced whole, as the kernel's file reads: a truncate-then-write could be read empty
            (zone.parent / "temp.new").write_text("41500\n")
            (zone.parent / "temp.new").replace(zone)
        threading.Timer(1.0, cool_down).start()
        started = time.perf_counter()
        (measurement,) = runner.measure([model], runs=2, warmup=0)
        assert time.perf_counter() - started > 1.0
    assert measurement.temperature_c == 41.5


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "benchmark_output"


class ScriptedTransport:
    """A DeviceTransport double that answers like a phone whose benchmark tool printed ``output``."""

    label = "phone:5555"

    def __init__(self, output: str, usage: str):
        self.output, self.usage = output, usage
        self.commands: list[list[str]] = []
        self.pushed: list[tuple[list[str], str]] = []
        self.removed: list[str] = []
        self.closed = False

    def push(self, local_paths, remote_dir):
        self.pushed.append(([Path(p).name for p in local_paths], remote_dir))
        return [f"{remote_dir}/{Path(p).name}" for p in local_paths]

    def shell(self, argv, timeout_s=600):
        from mobilekit.profile.transports import ShellResult

        self.commands.append(list(argv))
        if argv[:2] == ["sh", "-c"] and "readlink -f" in argv[2]:  # device_dir resolution: no symlinks here
            return ShellResult(f"mobilekit-resolved\n{argv[3]}\n{argv[3]}\n", 0)
        if argv[0] == "getprop":
            return ShellResult("[ro.product.manufacturer]: [Google]\n[ro.product.model]: [Pixel]\n"
                               "[ro.product.cpu.abi]: [arm64-v8a]\n[ro.build.version.release]: [10]\n", 0)
        if argv[-1] in ("--help", "-h"):
            return ShellResult(self.usage, 1)
        if any(a.endswith((".onnx", ".tflite")) for a in argv):
            return ShellResult(self.output, 0)
        return ShellResult("", 0)

    def remove(self, remote_paths):
        self.removed.extend(remote_paths)

    def stat(self, remote_path):
        return None  # a fresh phone: neither device_dir nor the work folder exist yet

    def close(self):
        self.closed = True


def test_onnx_runtime_runs_onnxruntime_perf_test_pinned_and_reads_its_median(tmp_path):
    binary = tmp_path / "onnxruntime_perf_test"
    binary.write_bytes(b"\x7fELF")
    model = tmp_path / "layer.onnx"
    model.write_bytes(b"onnx")
    transport = ScriptedTransport((FIXTURES / "onnxruntime_perf_test_spacemit_k1_yolov8n.txt").read_text(),
                                  "usage: ./onnxruntime_perf_test [options...] model_path [result_file]\n")
    desc = parse_device({"name": "phone", "transport": "adb", "runtime": "onnx", "benchmark_binary": str(binary),
                         "cpu_affinity": [1, 2]})
    with AdbRunner(desc, transport=transport) as runner:
        assert runner.info()["model"] == "Google Pixel" and runner.info()["os"] == "Android 10 (SDK None)"
        (m,) = runner.measure([model], runs=10, warmup=2)
    remote_binary = f"{WORK_DIR}/onnxruntime_perf_test"
    assert [c for c in transport.commands if c[0] == "taskset"] == [
        ["taskset", "6", remote_binary, "-e", "cpu", "-m", "times", "-r", "10", "-x", "1", "-y", "1", "-I", "-s",
         f"{WORK_DIR}/layer.onnx"]]
    assert (m.statistic, m.median_ms, m.min_ms, m.max_ms, m.runs) == ("median", 82.6095, 80.8129, 83.8817, 10)
    assert transport.pushed == [(["onnxruntime_perf_test"], WORK_DIR), (["layer.onnx"], WORK_DIR)]
    assert transport.removed == [f"{WORK_DIR}/layer.onnx", remote_binary, f"{WORK_DIR}/.mobilekit-manifest",
                                 f"{WORK_DIR}/.mobilekit-owned"] and transport.closed


def test_benchmark_model_gets_exact_run_counts_and_its_printed_median_is_used(tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    model = tmp_path / "layer.tflite"
    model.write_bytes(b"tfl3")
    text = (FIXTURES / "tflite_v2.18_am62x_ssd_mobilenet_v2_percentiles.txt").read_text()
    transport = ScriptedTransport(text, "STARTING!\nERROR: Please specify the name of your TF Lite input file\n")
    desc = parse_device({"name": "phone", "transport": "adb", "benchmark_binary": str(binary), "threads": 2,
                         "benchmark_args": ["--use_xnnpack=true"]})
    with AdbRunner(desc, transport=transport) as runner:
        (m,) = runner.measure([model], runs=7, warmup=3)
    (command,) = [c for c in transport.commands if any(a.startswith("--graph=") for a in c)]
    assert command == [f"{WORK_DIR}/benchmark_model", f"--graph={WORK_DIR}/layer.tflite", "--num_threads=2",
                       "--num_runs=7", "--warmup_runs=3", "--min_secs=0", "--warmup_min_secs=0", "--use_xnnpack=true"]
    from mobilekit.profile.benchmark_output import parse_benchmark_model

    parsed = parse_benchmark_model(text)
    assert m.statistic == "median" and m.median_ms == parsed.percentile_us(50) / 1e3
    assert m.runs == parsed.count and m.std_ms == parsed.std_us / 1e3


# ---- the runner deletes only what it created (issue #15) -----------------------------------------------------
def put_user_files(storage: Path, device_folder: str) -> dict[Path, bytes]:
    """A user's own models on the phone, in ``device_folder``: they must survive every run."""
    folder = storage / device_folder.lstrip("/")
    folder.mkdir(parents=True, exist_ok=True)
    files = {folder / "my_model.tflite": b"user tflite", folder / "my_model.onnx": b"user onnx"}
    for path, content in files.items():
        path.write_bytes(content)
    return files


def test_a_users_own_models_beside_ours_survive_a_profile_run(tmp_path, host_side, emulator, work_dir):
    user_files = put_user_files(emulator.storage, "/data/local/tmp")
    desc = descriptor(host_side, emulator.address, device_dir="/data/local/tmp")
    with open_runner(desc) as runner:
        profile_device(runner, SPACE, tmp_path / "t.json", runs=2, repeats=1, positions=[0], progress=False,
                       work_dir=work_dir, warmup=0)
    assert {path: path.read_bytes() for path in user_files} == user_files
    assert not (emulator.storage / "data/local/tmp/mobilekit-run").exists()  # ours is gone, theirs is not


def test_leftovers_of_an_interrupted_run_are_removed_by_manifest_and_a_users_files_kept(
        tmp_path, host_side, emulator, work_dir):
    user_files = put_user_files(emulator.storage, DEVICE_DIR)
    model = ModelFileCache(work_dir, "tflite").stem(SPACE).path
    runner = open_runner(descriptor(host_side, emulator.address))
    runner._folder.push([model])  # as if a run died after pushing, before it could clean up: the file is on
    runner.transport.close()      # the phone and in the manifest, and the connection drops without close()
    work = emulator.storage / WORK_DIR.lstrip("/")
    assert (work / model.name).exists()
    with open_runner(descriptor(host_side, emulator.address)) as again:
        assert not (work / model.name).exists()  # the stale file was removed at start
        again.measure([model], runs=1, warmup=0)
    assert {path: path.read_bytes() for path in user_files} == user_files
    assert not work.exists() and (emulator.storage / DEVICE_DIR.lstrip("/")).is_dir()  # theirs keep the folder


def test_a_work_folder_without_the_mobilekit_marker_is_never_touched(tmp_path, host_side, emulator):
    foreign = emulator.storage / WORK_DIR.lstrip("/")
    foreign.mkdir(parents=True)
    (foreign / "theirs.tflite").write_bytes(b"not ours")
    with pytest.raises(DeviceError, match="was not created by mobilekit") as caught:
        open_runner(descriptor(host_side, emulator.address))
    assert "\n" not in str(caught.value)
    assert (foreign / "theirs.tflite").read_bytes() == b"not ours"


@pytest.mark.parametrize("device_dir", ["/sdcard/Download", "/data/local/tmp/../../../sdcard/Download", "/",
                                        "/data/local/tmpfoo", "data/local/tmp/x"])
def test_a_device_dir_outside_data_local_tmp_is_refused_in_one_line(host_side, device_dir):
    with pytest.raises(DeviceError, match=r"device_dir .* use a folder in /data/local/tmp") as caught:
        descriptor(host_side, "127.0.0.1:1", device_dir=device_dir)
    assert "\n" not in str(caught.value)


def test_a_hostile_device_dir_is_refused_before_the_phone_is_touched(tmp_path, host_side, emulator):
    user_files = put_user_files(emulator.storage, "/sdcard/Download")
    desc = descriptor(host_side, emulator.address)
    hostile = type(desc)(**{**{f: getattr(desc, f) for f in desc.__dataclass_fields__},
                            "device_dir": "/data/local/tmp/../../../sdcard/Download"})  # built without parse_device
    with pytest.raises(DeviceError, match="outside /data/local/tmp"):
        open_runner(hostile)
    assert {path: path.read_bytes() for path in user_files} == user_files
    assert emulator.service_log == []  # refused before any connection


def test_a_device_dir_through_a_symlink_out_of_data_local_tmp_is_refused_on_the_device(host_side, emulator):
    """Resolved on the device (readlink -f) before mkdir/rm: /data/local/tmp/link -> /sdcard must not make mobilekit
    create (or later remove) folders in /sdcard."""
    sdcard = emulator.storage / "sdcard"
    sdcard.mkdir(parents=True, exist_ok=True)
    (sdcard / "photo.jpg").write_bytes(b"a user's photo")
    tmp = emulator.storage / "data/local/tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "link").symlink_to(sdcard)
    def listing():
        return sorted(str(p.relative_to(emulator.storage)) for folder in (sdcard, tmp) for p in folder.rglob("*"))

    before = listing()
    for device_dir in ("/data/local/tmp/link/sub", "/data/local/tmp/link", "/data/local/tmp/link/a/b"):
        with pytest.raises(DeviceError, match="resolves on the device to /sdcard") as caught:
            open_runner(descriptor(host_side, emulator.address, device_dir=device_dir))
        assert "\n" not in str(caught.value)
    assert listing() == before
    assert (sdcard / "photo.jpg").read_bytes() == b"a user's photo"
    # a link that stays inside /data/local/tmp is fine: the work folder is made (and removed) in the real folder
    (tmp / "real").mkdir()
    (tmp / "inside").symlink_to(tmp / "real")
    with open_runner(descriptor(host_side, emulator.address, device_dir="/data/local/tmp/inside/m")) as runner:
        assert runner._folder.path == "/data/local/tmp/real/m/mobilekit-run"
        assert (tmp / "real/m/mobilekit-run").is_dir()
    assert not (tmp / "real/m").exists() and (tmp / "inside").is_symlink()


def test_device_dir_is_normalised():
    from mobilekit.profile.device_folder import check_device_dir

    assert check_device_dir("/data/local/tmp/a/../b//") == "/data/local/tmp/b"
    assert check_device_dir("/data/local/tmp") == "/data/local/tmp"
