"""Every bad input issue #15 found gives one line on stderr and exit 2 (or works, where the input is valid), and
nothing already written is lost: one behaviour per test. The Hypothesis fuzz suite (test_cli_fuzz.py) looks for
more of the same kind."""

import json
import os
from pathlib import Path

import pytest

from cli_helpers import (PIXEL1_TABLE, assert_one_line_failure, fitted_predictor_path, run_cli, snapshot,
                         unwritable_folder, valid_long_architecture)
from mobilekit.errors import ArchitectureError, ConfigError, TableError
from mobilekit.jsonio import write_json_atomic
from mobilekit.latency_table import LatencyTable
from mobilekit.profile.devices import load_device
from mobilekit.space import read_architecture

TABLE = str(PIXEL1_TABLE)


def table_with(tmp_path: Path, edit) -> str:
    """A copy of the shipped Pixel 1 table with ``edit(data)`` applied, written with Python's JSON (which
    writes NaN and Infinity as the tokens other tools produce)."""
    data = json.loads(PIXEL1_TABLE.read_text())
    edit(data)
    path = tmp_path / "table.json"
    path.write_text(json.dumps(data))
    return str(path)


def first_entry(data):
    position = next(iter(data["entries"]))
    name = next(n for n in data["entries"][position] if n != "skip")
    return data["entries"][position][name]


# ---- architectures ------------------------------------------------------------------------------------------
def test_a_valid_architecture_string_longer_than_255_characters_is_predicted():
    code, out, err = run_cli(["latency", "predict", valid_long_architecture(), "--table", TABLE, "--predictor",
                              str(fitted_predictor_path()), "--json"])
    assert code == 0, err
    assert json.loads(out)["architecture"] == valid_long_architecture()
    assert len(valid_long_architecture()) > 255


def test_a_valid_architecture_string_longer_than_255_characters_is_built_by_export(tmp_path):
    import torch

    weights = tmp_path / "other.pt"
    torch.save({"not_a_layer": torch.zeros(1)}, weights)
    code, _, err = run_cli(["export", "--arch", valid_long_architecture(), "--resolution", "32", "--weights",
                            str(weights), "--out", str(tmp_path / "out")])
    # the architecture was parsed and the network built: what fails is the (deliberately wrong) weights file
    assert_one_line_failure(code, err, "weights do not fit this architecture")


def test_an_invalid_architecture_string_longer_than_255_characters_names_the_layer():
    text = ",".join(["ir_k9_e6_se0.25"] * 22)
    with pytest.raises(ArchitectureError, match="k9|kernel"):
        read_architecture(text)


def test_a_folder_passed_as_the_architecture_is_one_line(tmp_path):
    assert_one_line_failure(*[run_cli(["latency", "predict", str(tmp_path), "--table", TABLE])[i] for i in (0, 2)],
                            "is a folder")


def test_a_folder_passed_as_export_arch_is_one_line(tmp_path):
    code, _, err = run_cli(["export", "--arch", str(tmp_path), "--out", str(tmp_path / "out")])
    assert_one_line_failure(code, err, "is a folder")


# ---- paths ----------------------------------------------------------------------------------------------
def test_a_folder_passed_as_table_is_one_line(tmp_path):
    code, _, err = run_cli(["latency", "predict", valid_long_architecture(), "--table", str(tmp_path)])
    assert_one_line_failure(code, err, "--table", "is a folder")


def test_a_folder_passed_as_predictor_is_one_line(tmp_path):
    code, _, err = run_cli(["latency", "predict", valid_long_architecture(), "--table", TABLE, "--predictor",
                            str(tmp_path)])
    assert_one_line_failure(code, err, "--predictor", "is a folder")


def test_a_folder_passed_as_device_is_one_line(tmp_path):
    code, _, err = run_cli(["profile", "--device", str(tmp_path), "--out", str(tmp_path / "t.json")])
    assert_one_line_failure(code, err, str(tmp_path))


def test_out_that_is_an_existing_folder_where_a_file_belongs_is_one_line(tmp_path):
    code, _, err = run_cli(["latency", "fit", "--table", TABLE, "--out", str(tmp_path)])
    assert_one_line_failure(code, err, "--out", "is a folder")


def test_out_that_is_an_existing_file_where_a_folder_belongs_is_one_line_and_kept(tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    code, _, err = run_cli(["export", "--arch", valid_long_architecture(), "--out", str(existing)])
    assert_one_line_failure(code, err, "--out", "existing file")
    assert existing.read_text() == "mine"


def test_out_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("mine")
    code, _, err = run_cli(["latency", "fit", "--table", TABLE, "--out", str(tmp_path / "file" / "p.json")])
    assert_one_line_failure(code, err, "--out", "is a file, so nothing can be written under it")


def test_out_in_a_folder_that_is_not_writable_is_one_line(tmp_path):
    readonly = unwritable_folder(tmp_path)  # a real failure, for root too
    code, _, err = run_cli(["latency", "fit", "--table", TABLE, "--out", str(readonly / "p.json")])
    assert_one_line_failure(code, err, "--out", str(readonly), "permission denied", "choose another path")


@pytest.mark.parametrize("command", ["export", "profile --work-dir", "farm"])
def test_an_existing_out_folder_that_refuses_writes_is_one_line_before_anything_runs(tmp_path, command):
    """The folder exists and ``os.access`` says yes to root, but creating a file fails: probed by a real write."""
    readonly = str(unwritable_folder(tmp_path))
    argv = {"export": ["export", "--arch", valid_long_architecture(), "--resolution", "32", "--out", readonly],
            "profile --work-dir": ["profile", "--resolution", "32", "--positions", "0", "--runs", "1", "--out",
                                   str(tmp_path / "t.json"), "--work-dir", readonly],
            "farm": ["profile", "--resolution", "32", "--positions", "0", "--runs", "1", "--device", "host",
                     "--device", "host", "--out", readonly]}[command]
    option = "--work-dir" if "work-dir" in command else "--out"
    code, _, err = run_cli(argv)
    assert_one_line_failure(code, err, option, readonly, "not writable", "choose another folder")
    assert not (tmp_path / "t.json").exists()


# ---- latency tables -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -1.0], ids=["nan", "inf", "zero", "negative"])
def test_a_table_with_a_bad_layer_latency_is_one_line_naming_the_field(tmp_path, value):
    table = table_with(tmp_path, lambda d: first_entry(d).update(median_ms=value))
    code, _, err = run_cli(["latency", "fit", "--table", table, "--out", str(tmp_path / "p.json")])
    assert_one_line_failure(code, err, "median_ms")
    assert not (tmp_path / "p.json").exists()


def test_a_table_with_a_nan_fixed_latency_is_refused_instead_of_printing_invalid_json(tmp_path):
    table = table_with(tmp_path, lambda d: next(iter(d["fixed"].values())).update(median_ms=float("nan")))
    code, out, err = run_cli(["latency", "predict", valid_long_architecture(), "--table", table, "--json"])
    assert_one_line_failure(code, err, "fixed.", "finite")
    assert out == ""


@pytest.mark.parametrize("entries", [[], "x", 3, True], ids=["list", "string", "number", "bool"])
def test_a_table_whose_entries_are_not_an_object_is_one_line(tmp_path, entries):
    table = table_with(tmp_path, lambda d: d.update(entries=entries))
    code, _, err = run_cli(["latency", "fit", "--table", table, "--out", str(tmp_path / "p.json")])
    assert_one_line_failure(code, err, "entries")


def test_a_table_with_a_non_numeric_space_width_is_one_line(tmp_path):
    table = table_with(tmp_path, lambda d: d["space"].update(width="wide"))
    code, _, err = run_cli(["latency", "predict", valid_long_architecture(), "--table", table])
    assert_one_line_failure(code, err, "space.width")


def test_a_skip_entry_may_take_zero_ms(tmp_path):
    data = json.loads(PIXEL1_TABLE.read_text())
    data["entries"]["2"] = {"skip": {"median_ms": 0.0}, **data["entries"]["2"]}
    LatencyTable.from_dict(data)  # no error


# ---- devices --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["cooldown_s", "timeout_s"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_device_with_a_non_finite_time_is_refused(tmp_path, field, value):
    path = tmp_path / "dev.toml"
    path.write_text(f'name = "x"\n{field} = {value}\n')
    with pytest.raises(ConfigError, match=rf"field '{field}' must be a finite number") as caught:
        load_device(path)
    assert "\n" not in str(caught.value)


def test_profile_with_a_nan_cooldown_device_is_one_line(tmp_path):
    path = tmp_path / "dev.toml"
    path.write_text('name = "x"\ncooldown_s = nan\n')
    code, _, err = run_cli(["profile", "--device", str(path), "--out", str(tmp_path / "t.json")])
    assert_one_line_failure(code, err, "cooldown_s")


# ---- numeric options ------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, option", [
    (["check", "model.tflite", "--runs", "0"], "--runs"),
    (["profile", "--resolution", "0"], "--resolution"),
    (["profile", "--num-classes", "0"], "--num-classes"),
    (["profile", "--positions", ""], "--positions"),
    (["profile", "--width", "nan"], "--width"),
    (["export", "--arch", "x", "--out", "o", "--resolution", "0"], "--resolution"),
    (["export", "--arch", "x", "--out", "o", "--num-classes", "0"], "--num-classes"),
    (["latency", "fit", "--table", "t", "--out", "o", "--cv", "0"], "--cv"),
], ids=["check-runs-0", "resolution-0", "num-classes-0", "positions-empty", "width-nan", "export-resolution-0",
        "export-num-classes-0", "fit-cv-0"])
def test_an_out_of_range_option_is_one_line_naming_it(argv, option):
    code, _, err = run_cli(argv)
    assert_one_line_failure(code, err, option)


def test_a_missing_required_option_is_one_line():
    code, _, err = run_cli(["latency", "fit", "--table", TABLE])
    assert_one_line_failure(code, err, "--out")


# ---- weights --------------------------------------------------------------------------------------------
def test_a_truncated_weights_file_is_one_line(tmp_path):
    import torch

    full = tmp_path / "full.pt"
    torch.save({"w": torch.zeros(100)}, full)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[:200])
    code, _, err = run_cli(["export", "--arch", valid_long_architecture(), "--resolution", "32", "--weights",
                            str(cut), "--out", str(tmp_path / "out")])
    assert_one_line_failure(code, err, "cut.pt")


# ---- writes ---------------------------------------------------------------------------------------------
def test_a_failed_atomic_write_removes_its_temp_file_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "t.json"
    write_json_atomic(target, {"old": True})  # a file mobilekit wrote (listed in the folder's manifest)
    manifest = (tmp_path / ".mobilekit-manifest").read_bytes()

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_json_atomic(target, {"new": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mobilekit-manifest", "t.json"]
    assert json.loads(target.read_text()) == {"old": True}
    assert (tmp_path / ".mobilekit-manifest").read_bytes() == manifest


def test_atomic_writes_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    write_json_atomic(tmp_path / "t.json", {"a": 1})
    assert len(synced) >= 1


def test_data_that_is_not_json_changes_no_file(tmp_path):
    target = tmp_path / "t.json"
    target.write_text("{}\n")
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})
    assert target.read_text() == "{}\n" and sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]


# ---- profile --no-resume --------------------------------------------------------------------------------
def test_no_resume_keeps_the_old_table_until_the_first_new_entry(tmp_path_factory, tmp_path, monkeypatch):
    from mobilekit.profile import profiler
    from mobilekit.profile.devices import parse_device
    from mobilekit.profile.profiler import profile_device
    from mobilekit.profile.runners import HostRunner
    from mobilekit.space import get_space

    class InterruptedRunner(HostRunner):
        def measure(self, model_paths, runs=50, warmup=5, on_result=None):
            raise KeyboardInterrupt  # Ctrl-C before the first entry is measured

    monkeypatch.setattr(profiler.ModelFileCache, "has", lambda self, key: True)  # no model files needed: none runs
    out = tmp_path / "old.json"
    out.write_text(PIXEL1_TABLE.read_text())
    before = snapshot(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        profile_device(InterruptedRunner(parse_device({"name": "host"})), get_space("mnasnet-k357", resolution=32),
                       out, runs=2, repeats=1, positions=[0], resume=False, progress=False, warmup=0,
                       work_dir=tmp_path_factory.getbasetemp() / "profile-model-files")
    assert snapshot(tmp_path) == before


def test_table_error_type_is_unchanged_for_library_callers(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"format": "mobilekit-latency-table/1", "space": {"name": "spnas-mnasnet"},
                                "entries": {"1": {"ir_k3_e3": {"median_ms": float("nan")}}}}))
    with pytest.raises(TableError, match=r"t\.json: field 'entries\.1\.ir_k3_e3\.median_ms' must be a finite"):
        LatencyTable.load(path)
