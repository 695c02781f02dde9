"""Device descriptors: the shipped files load, and every mistake is one ConfigError naming file and field."""

from pathlib import Path

import pytest

from mobilekit.errors import ConfigError
from mobilekit.profile.devices import HOST_TOML, default_device, load_device

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "dev.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_host_descriptor_is_the_embedded_default():
    assert (REPO / "devices" / "host.toml").read_text() == HOST_TOML
    host = load_device(REPO / "devices" / "host.toml")
    assert host == default_device() == load_device("host")
    assert (host.transport, host.runtime, host.threads, host.runs, host.warmup) == ("host", "tflite", 1, 50, 5)


def test_shipped_phone_descriptor_names_a_benchmark_binary_and_a_thermal_zone():
    phone = load_device(REPO / "devices" / "pixel1.toml")
    assert phone.transport == "adb" and phone.runtime == "tflite"
    assert phone.benchmark_binary == Path("~/android/benchmark_model").expanduser()
    assert phone.thermal_zone == "/sys/class/thermal/thermal_zone0/temp"
    assert phone.device_dir == "/data/local/tmp/mobilekit"
    assert "android_aarch64_benchmark_model" in (REPO / "devices" / "pixel1.toml").read_text()


def test_shipped_onnx_host_descriptor_runs_onnx_files():
    assert load_device(REPO / "devices" / "onnx-host.toml").model_suffix == ".onnx"


def test_missing_file_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: no such device file; start from devices/host.toml"):
        load_device(tmp_path / "nope.toml")


def test_invalid_toml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"dev\.toml: not valid TOML"):
        load_device(write(tmp_path, 'name = "x"\nthreads = \n'))


def test_unknown_field_is_named_with_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"dev\.toml: unknown field 'thread'; known fields are .*threads"):
        load_device(write(tmp_path, 'name = "x"\nthread = 2\n'))


@pytest.mark.parametrize("line, field", [
    ('threads = "two"', "threads"),
    ("threads = 0", "threads"),
    ("threads = true", "threads"),
    ('runtime = "tensorrt"', "runtime"),
    ('transport = "ssh"', "transport"),
    ("cooldown_s = -1", "cooldown_s"),
    ('cpu_affinity = "zero"', "cpu_affinity"),
    ("cpu_affinity = [-1]", "cpu_affinity"),
    ('thermal_zone = "thermal_zone0"', "thermal_zone"),
    ("runs = 1.5", "runs"),
])
def test_wrong_type_or_value_names_the_field_and_what_it_must_be(tmp_path, line, field):
    with pytest.raises(ConfigError, match=rf"dev\.toml: field '{field}' must be "):
        load_device(write(tmp_path, f'name = "x"\n{line}\n'))


def test_name_is_required(tmp_path):
    with pytest.raises(ConfigError, match="missing field 'name'"):
        load_device(write(tmp_path, "threads = 1\n"))


def test_adb_device_needs_a_benchmark_binary(tmp_path):
    with pytest.raises(ConfigError, match="missing field 'benchmark_binary'.*benchmark_model"):
        load_device(write(tmp_path, 'name = "p"\ntransport = "adb"\n'))


def test_adb_fields_on_a_host_device_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="field 'address' only applies to transport = \"adb\""):
        load_device(write(tmp_path, 'name = "x"\naddress = "1.2.3.4:5555"\n'))


@pytest.mark.parametrize("value, cores", [("[2, 0, 2]", (0, 2)), ('"0-2,5"', (0, 1, 2, 5)), ('"0x5"', (0, 2)), ("12", (2, 3))])
def test_cpu_affinity_accepts_lists_ranges_and_masks(tmp_path, value, cores):
    device = load_device(write(tmp_path, f'name = "x"\ncpu_affinity = {value}\n'))
    assert device.cpu_affinity == cores
    assert device.affinity_mask == sum(1 << c for c in cores)


def test_thermal_zone_number_becomes_its_sysfs_path(tmp_path):
    device = load_device(write(tmp_path, 'name = "x"\nthermal_zone = 3\nthermal_max_c = 40\n'))
    assert device.thermal_zone == "/sys/class/thermal/thermal_zone3/temp"
    assert device.thermal_max_c == 40.0


def test_devices_lists_the_host_and_shipped_descriptors_from_any_folder(tmp_path, monkeypatch):
    """Run from a folder without devices/: the host and every shipped descriptor are still listed; a local
    descriptor of the same name replaces the shipped one."""
    from mobilekit.cli.devices import SHIPPED_DEVICES, default_descriptors

    monkeypatch.chdir(tmp_path)
    shipped = sorted(p.name for p in SHIPPED_DEVICES.glob("*.toml"))
    assert "host.toml" in shipped and "pixel1.toml" in shipped
    assert sorted(Path(p).name for p in default_descriptors()) == shipped
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "pixel1.toml").write_text((SHIPPED_DEVICES / "pixel1.toml").read_text())
    listed = default_descriptors()
    assert tmp_path / "devices" / "pixel1.toml" in [Path(p).resolve() for p in listed]
    assert sorted(Path(p).name for p in listed) == shipped
    monkeypatch.setattr("mobilekit.cli.devices.SHIPPED_DEVICES", tmp_path / "none")
    assert default_descriptors(tmp_path / "empty") == ["host"]
