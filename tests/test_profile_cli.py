"""``mobilekit profile``: exit 0 with a summary, exit 2 with one line for every user-fixable problem."""

import subprocess
import sys
from pathlib import Path

import pytest

from mobilekit.cli import main
from mobilekit.latency_table import LatencyTable
from mobilekit.testing.adb_emulator import AdbDeviceEmulator
from mobilekit.testing.benchmark_model_litert import write_benchmark_model_wrapper

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--space", "mnasnet-k357", "--resolution", "32", "--positions", "0", "--runs", "5", "--repeats", "1",
         "--no-progress"]


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return str(tmp_path_factory.getbasetemp() / "profile-model-files")  # shared with the other profile tests


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("mobilekit profile: error: ")
    return err


def test_profile_of_the_host_writes_the_table_and_prints_a_summary(tmp_path, work_dir, capsys):
    out = tmp_path / "host.json"
    code = main(["profile", "--device", str(REPO / "devices" / "host.toml"), *SMALL, "--out", str(out),
                 "--work-dir", work_dir])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"wrote {out}" in printed and "3 measured entries" in printed
    table = LatencyTable.load(out)
    assert table.has(0, "ir_k3_e1") and set(table.fixed) == {"stem", "head"}


def test_profile_over_adb_against_the_emulator_exits_0(tmp_path, work_dir, capsys):
    binary = write_benchmark_model_wrapper(tmp_path)
    with AdbDeviceEmulator(tmp_path / "storage") as emulator:
        device = tmp_path / "emulator.toml"
        device.write_text(f'name = "emulator"\ntransport = "adb"\naddress = "{emulator.address}"\nuse_server = false\n'
                          f'key_path = "{tmp_path / "adbkey"}"\nbenchmark_binary = "{binary}"\n')
        out = tmp_path / "emulator.json"
        code = main(["profile", "--device", str(device), *SMALL, "--out", str(out), "--work-dir", work_dir])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "MK Emulator" in printed and "3 measured entries" in printed
    assert LatencyTable.load(out).device["abi"] == "arm64-v8a"


def test_missing_device_file_exits_2_with_one_line(tmp_path, capsys):
    assert main(["profile", "--device", str(tmp_path / "phone.toml")]) == 2
    assert "phone.toml: no such device file" in one_error_line(capsys)


def test_positions_outside_the_space_exit_2(capsys):
    assert main(["profile", "--positions", "3,40"]) == 2
    assert "position 40 is out of range" in one_error_line(capsys)


def test_unreachable_phone_exits_2_with_the_address(tmp_path, capsys):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    binary = write_benchmark_model_wrapper(tmp_path)
    device = tmp_path / "phone.toml"
    device.write_text(f'name = "phone"\ntransport = "adb"\naddress = "127.0.0.1:{port}"\nuse_server = false\n'
                      f'key_path = "{tmp_path / "adbkey"}"\nbenchmark_binary = "{binary}"\n')
    assert main(["profile", "--device", str(device)]) == 2
    assert f"127.0.0.1:{port}: connection refused" in one_error_line(capsys)


def test_resuming_a_table_of_another_resolution_exits_2(tmp_path, work_dir, capsys):
    out = tmp_path / "t.json"
    assert main(["profile", *SMALL, "--out", str(out), "--work-dir", work_dir]) == 0
    capsys.readouterr()
    other = [a if a != "32" else "64" for a in SMALL]
    assert main(["profile", *other, "--out", str(out), "--work-dir", work_dir]) == 2
    assert "cannot resume: this table is for resolution 32" in one_error_line(capsys)


def test_cli_module_imports_no_heavy_library():
    code = "import sys, mobilekit.cli.profile; print(sorted({'torch', 'tensorflow', 'keras'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
