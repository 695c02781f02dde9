"""A phone farm: several emulated phones profiled at once (one table each, one shared model-file cache), and
`mobilekit devices` listing what is reachable."""

from pathlib import Path

import pytest

from mobilekit.cli import main
from mobilekit.errors import ConfigError
from mobilekit.latency_table import LatencyTable
from mobilekit.profile.devices import parse_device
from mobilekit.profile.farm import profile_farm
from mobilekit.profile.inventory import list_devices
from mobilekit.space import get_space
from mobilekit.testing.adb_emulator import AdbDeviceEmulator
from mobilekit.testing.benchmark_model_litert import write_benchmark_model_wrapper

SPACE = get_space("mnasnet-k357", resolution=32)


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "profile-model-files"  # shared with the other profile tests


@pytest.fixture
def two_phones(tmp_path):
    binary = write_benchmark_model_wrapper(tmp_path)
    with AdbDeviceEmulator(tmp_path / "a", properties={"ro.product.model": "Phone A"}) as a, \
            AdbDeviceEmulator(tmp_path / "b", properties={"ro.product.model": "Phone B",
                                                          "ro.build.version.release": "12"}) as b:
        files = []
        for name, emulator in (("phone-a", a), ("phone-b", b)):
            path = tmp_path / f"{name}.toml"
            path.write_text(f'name = "{name}"\ntransport = "adb"\naddress = "{emulator.address}"\n'
                            f'use_server = false\nkey_path = "{tmp_path / "adbkey"}"\nbenchmark_binary = "{binary}"\n')
            files.append(path)
        yield files, (a, b)


def test_two_phones_are_profiled_at_once_into_one_table_each(two_phones, tmp_path, work_dir):
    files, _ = two_phones
    descriptors = [parse_device({"name": n, "transport": "adb", "address": a, "use_server": False,
                                 "key_path": str(tmp_path / "adbkey"), "benchmark_binary": str(tmp_path / "benchmark_model")})
                   for n, a in (("a", files[0].read_text().split('address = "')[1].split('"')[0]),
                                ("b", files[1].read_text().split('address = "')[1].split('"')[0]))]
    results = profile_farm(descriptors, SPACE, [tmp_path / "a.json", tmp_path / "b.json"], work_dir=work_dir,
                           runs=3, repeats=1, positions=[0], warmup=0)
    assert [r.error for r in results] == [None, None]
    models = [LatencyTable.load(tmp_path / f"{n}.json").device["model"] for n in "ab"]
    assert models == ["mobilekit Phone A", "mobilekit Phone B"]
    for result in results:
        assert result.table.has(0, "ir_k3_e1") and set(result.table.fixed) == {"stem", "head"}
        assert result.report.measurements == 3
    # one shared cache: both tables name the same files (no per-device copies)
    stems = sorted(p.name for p in Path(work_dir).glob("stem-3x32x32-*.tflite") if "int8" not in p.name)
    assert stems == ["stem-3x32x32-to32.tflite"]


def test_a_farm_refuses_two_host_devices_and_shared_tables(tmp_path):
    host = parse_device({"name": "host"})
    with pytest.raises(ConfigError, match="all this computer"):
        profile_farm([host, parse_device({"name": "host2"})], SPACE, [tmp_path / "1.json", tmp_path / "2.json"])
    with pytest.raises(ConfigError, match="same table"):
        profile_farm([host, parse_device({"name": "x", "transport": "adb", "benchmark_binary": "/bin/sh"})], SPACE,
                     [tmp_path / "1.json", tmp_path / "1.json"])


def test_cli_farm_writes_one_table_per_device_and_reports_a_dead_one(two_phones, tmp_path, work_dir, capsys):
    files, _ = two_phones
    dead = tmp_path / "dead.toml"
    dead.write_text(f'name = "dead"\ntransport = "adb"\naddress = "127.0.0.1:9"\nuse_server = false\n'
                    f'key_path = "{tmp_path / "adbkey"}"\nbenchmark_binary = "{tmp_path / "benchmark_model"}"\n')
    code = main(["profile", "--device", str(files[0]), "--device", str(files[1]), "--device", str(dead),
                 "--space", "mnasnet-k357", "--resolution", "32", "--positions", "0", "--runs", "3", "--repeats", "1",
                 "--out", str(tmp_path / "tables"), "--work-dir", str(work_dir), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 2  # one device failed
    assert "phone-a (mobilekit Phone A): wrote" in text and "phone-b (mobilekit Phone B): wrote" in text
    assert "dead: FAILED: " in text and "127.0.0.1:9" in text
    assert sorted(p.name for p in (tmp_path / "tables").glob("*.json")) == ["phone-a.json", "phone-b.json"]


def test_devices_lists_model_abi_android_governor_and_temperature(two_phones, tmp_path, capsys):
    files, (a, _) = two_phones
    (a.storage / "sys/devices/system/cpu/cpu7/cpufreq/scaling_governor").write_text("performance\n")
    statuses = list_devices(files, server=False)
    assert [s.model for s in statuses] == ["mobilekit Phone A", "mobilekit Phone B"]
    assert statuses[0].governor == "schedutil x7, performance x1" and statuses[0].temperature_c == 36.5
    assert statuses[1].android == "Android 12 (SDK 34)" and statuses[1].abi == "arm64-v8a"
    assert main(["devices", "--device", str(files[0]), "--device", str(tmp_path / "missing.toml"), "--no-server"]) == 0
    text = capsys.readouterr().out
    assert "Phone A" in text and "missing.toml: no such device file" in text
