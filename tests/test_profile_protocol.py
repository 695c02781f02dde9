"""The measurement protocol: big cores by default, governor set to performance and restored, core state read
before and after and recorded in the table, frequency changes reported, noisy rounds measured again."""

import threading
from pathlib import Path

import pytest

from mobilekit.errors import ConfigError
from mobilekit.latency_table import LatencyTable
from mobilekit.profile.devices import parse_device
from mobilekit.profile.model_files import ModelFileCache
from mobilekit.profile.profiler import ProfileReport, profile_device
from mobilekit.profile.protocol import CoreState, ProtocolSession, big_cores, parse_cpu_list
from mobilekit.profile.runners import AdbRunner, HostRunner, RunnerMeasurement, open_runner
from mobilekit.space import get_space
from mobilekit.testing.adb_emulator import AdbDeviceEmulator
from mobilekit.testing.benchmark_model_litert import write_benchmark_model_wrapper

SPACE = get_space("mnasnet-k357", resolution=32)
CPU = "sys/devices/system/cpu"


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "profile-model-files"  # shared with the other profile tests


@pytest.fixture
def phone(tmp_path):
    with AdbDeviceEmulator(tmp_path / "storage") as emulator:
        binary = write_benchmark_model_wrapper(tmp_path)
        yield emulator, {"name": "phone", "transport": "adb", "address": emulator.address, "use_server": False,
                         "key_path": str(tmp_path / "adbkey"), "benchmark_binary": str(binary)}


def governor(emulator, cpu: int) -> str:
    return (emulator.storage / CPU / f"cpu{cpu}/cpufreq/scaling_governor").read_text().strip()


class SpyAdbRunner(AdbRunner):
    """Records the shell commands; ``after_first`` runs once after the first result."""

    def __init__(self, desc, after_first=None):
        self.commands: list[list[str]] = []
        self._after_first = after_first
        super().__init__(desc)

    def _shell(self, argv, timeout_s=None):
        self.commands.append(list(argv))
        return super()._shell(argv, timeout_s)

    def measure(self, model_paths, runs=50, warmup=5, on_result=None):
        def hook(index, measurement):
            on_result(index, measurement)
            if self._after_first is not None:
                self._after_first()
                self._after_first = None

        return super().measure(model_paths, runs, warmup, hook)


def test_phone_is_pinned_to_its_big_cores_with_performance_governor_restored_after(phone, tmp_path, work_dir):
    emulator, fields = phone
    out = tmp_path / "phone.json"
    report = ProfileReport()
    with SpyAdbRunner(parse_device(fields)) as runner:
        profile_device(runner, SPACE, out, runs=3, repeats=1, positions=[0], progress=False, work_dir=work_dir,
                       warmup=0, report=report)
        benchmark_runs = [c for c in runner.commands if any(a.startswith("--graph=") for a in c)]
    assert benchmark_runs and all(c[:2] == ["taskset", "f0"] for c in benchmark_runs)  # cores 4-7
    record = LatencyTable.load(out).settings["protocol"][-1]
    assert record["cpu_affinity"] == [4, 5, 6, 7] and record["affinity_source"].startswith("big cores")
    assert record["held"] and record["violations"] == []
    assert record["cores_before"]["4"] == {"governor": "performance", "cur_khz": 1814400, "max_khz": 2419200}
    assert "set to 'performance'" in record["governor"]["note"]
    assert LatencyTable.load(out).device["cpu_affinity"] == [4, 5, 6, 7]
    assert all(governor(emulator, cpu) == "schedutil" for cpu in range(8))  # restored afterwards
    assert report.protocol.startswith("protocol held (cores 4,5,6,7")


def test_a_frequency_change_during_the_profile_is_reported(phone, tmp_path, work_dir):
    emulator, fields = phone
    out = tmp_path / "phone.json"
    throttle = lambda: (emulator.storage / CPU / "cpu5/cpufreq/scaling_cur_freq").write_text("998400\n")  # noqa: E731
    with SpyAdbRunner(parse_device({**fields, "cpu_affinity": [5], "protocol": {"governor": "keep"}}),
                      after_first=throttle) as runner:
        profile_device(runner, SPACE, out, runs=3, repeats=1, positions=[0], progress=False, work_dir=work_dir,
                       warmup=0)
    record = LatencyTable.load(out).settings["protocol"][-1]
    assert record["affinity_source"] == "descriptor" and record["cpu_affinity"] == [5]
    assert not record["held"] and record["violations"] == ["core 5: frequency changed from 1814400 to 998400 kHz"]
    assert governor(emulator, 5) == "schedutil" and "left as it was" in record["governor"]["note"]


class NoisyThenCalmRunner(HostRunner):
    """A host runner whose first measurement of every file is noisy (CV 0.5) and later ones calm (CV 0.01)."""

    def __init__(self, descriptor):
        super().__init__(descriptor)
        self.seen: dict[Path, int] = {}

    def measure(self, model_paths, runs=50, warmup=5, on_result=None):
        results = []
        for index, path in enumerate(model_paths):
            self.seen[path] = self.seen.get(path, 0) + 1
            std = 0.5 if self.seen[path] == 1 else 0.01
            m = RunnerMeasurement(median_ms=1.0, std_ms=std, min_ms=0.5, max_ms=2.0, runs=runs, wall_s=0.01,
                                  inference_s=runs * 1e-3)
            results.append(m)
            on_result(index, m)
        return results


def test_rounds_above_the_cv_limit_are_measured_again_and_the_calm_one_kept(tmp_path, work_dir):
    out = tmp_path / "noisy.json"
    report = ProfileReport()
    with NoisyThenCalmRunner(parse_device({"name": "host", "runtime": "onnx"})) as runner:
        table = profile_device(runner, SPACE, out, runs=20, repeats=2, positions=[0], progress=False,
                               work_dir=work_dir, warmup=0, report=report, export_workers=0)
    entry = table.entry(0, "ir_k3_e1")
    assert entry["remeasured"] == 1 and len(entry["repeats"]) == 2 and entry["cv"] == 0.01
    assert report.remeasured == 3  # stem, layer 0, head: once each
    assert table.settings["protocol"][-1]["held"]


def test_a_few_runs_are_never_judged_by_their_cv(tmp_path, work_dir):
    with NoisyThenCalmRunner(parse_device({"name": "host", "runtime": "onnx"})) as runner:
        table = profile_device(runner, SPACE, tmp_path / "few.json", runs=5, repeats=1, positions=[0],
                               progress=False, work_dir=work_dir, warmup=0, export_workers=0)
    assert table.entry(0, "ir_k3_e1")["remeasured"] == 0 and table.entry(0, "ir_k3_e1")["cv"] == 0.5


def test_big_cores_are_the_ones_with_the_highest_max_frequency():
    states = {c: CoreState(c, "schedutil", 1, 1804800 if c < 4 else 2419200) for c in range(8)}
    assert big_cores(states) == (4, 5, 6, 7)
    assert big_cores({c: CoreState(c, None, None, 2000000) for c in range(4)}) == ()  # all equal: no pinning
    assert big_cores({0: CoreState(0, None, None, None)}) == ()
    assert parse_cpu_list("0-3,6") == [0, 1, 2, 3, 6] and parse_cpu_list("garbage") == []


def test_host_without_cpufreq_says_frequencies_are_not_controlled(tmp_path):
    class NoSysfs:
        def read(self, paths):
            return {p: None for p in paths}

        def write(self, path, value):
            return False

    with HostRunner(parse_device({"name": "host"})) as runner:
        session = ProtocolSession.start(runner, sysfs=NoSysfs())
        session.finish()
    assert session.held and "no cpufreq governor" in session.governor_note


def test_a_phone_that_refuses_the_governor_is_said_so():
    class Refusing:
        def __init__(self):
            self.values = {"/sys/devices/system/cpu/online": "0-1"}
            for cpu in (0, 1):
                base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/"
                self.values.update({base + "scaling_governor": "schedutil", base + "scaling_cur_freq": "1000",
                                    base + "cpuinfo_max_freq": str(1000 * (cpu + 1))})

        def read(self, paths):
            return {p: self.values.get(p) for p in paths}

        def write(self, path, value):
            return False  # permission denied: not rooted

    class FakeRunner:
        descriptor = parse_device({"name": "p", "transport": "adb", "benchmark_binary": "/bin/sh"})

    session = ProtocolSession.start(FakeRunner(), sysfs=Refusing())
    session.finish()
    assert session.affinity == (1,) and "could not set 'performance' on cores [1]" in session.governor_note
    assert session.held  # refused is recorded, not a violation: nothing changed during the run


def test_a_bad_protocol_field_names_the_file_and_the_field():
    with pytest.raises(ConfigError, match=r"phone.toml: field 'protocol.cv_max' must be a number > 0"):
        parse_device({"name": "p", "protocol": {"cv_max": -1}}, source="phone.toml")
    with pytest.raises(ConfigError, match=r"unknown field 'protocol.governer'"):
        parse_device({"name": "p", "protocol": {"governer": "performance"}}, source="phone.toml")


def test_a_run_refused_before_measuring_still_restores_the_governor(phone, tmp_path, work_dir):
    from mobilekit.errors import TableError

    emulator, fields = phone
    out = tmp_path / "other.json"
    LatencyTable(space=get_space("mnasnet-k357", resolution=64).describe()).save(out)  # another resolution
    with SpyAdbRunner(parse_device(fields)) as runner, pytest.raises(TableError, match="cannot resume"):
        profile_device(runner, SPACE, out, runs=3, repeats=1, positions=[0], progress=False, work_dir=work_dir)
    assert all(governor(emulator, cpu) == "schedutil" for cpu in range(8))
