"""Profiling this CPU: the table is complete and valid, spreads are plausible, resume measures only what is
missing, and model files are shared between identical positions and checked against PyTorch."""

import json
import os
import threading
import time
from pathlib import Path

import pytest

from mobilekit.errors import ExportError, TableError
from mobilekit.profile.devices import parse_device
from mobilekit.profile.model_files import ModelFileCache, export_network_file, is_checked
from mobilekit.profile.profiler import parse_positions, profile_device, summarize_table
from mobilekit.profile.runners import HostRunner, RunnerMeasurement, open_runner
from mobilekit.latency_table import LatencyTable
from mobilekit.space import LayerSpec, get_space, reference_architecture

SPACE = get_space("mnasnet-k357", resolution=32)  # 6 types per position, no SE: few files to export
RUNS = 10


def shared_work_dir(tmp_path_factory) -> Path:
    """One folder of model files for every profile test of the session (exports are the slow part)."""
    return tmp_path_factory.getbasetemp() / "profile-model-files"


class CountingRunner(HostRunner):
    """A host runner that remembers every file it was asked to measure."""

    def __init__(self, descriptor=None):
        super().__init__(descriptor or parse_device({"name": "host"}))
        self.measured: list[Path] = []

    def measure(self, model_paths, runs=50, warmup=5, on_result=None):
        self.measured.extend(model_paths)
        return super().measure(model_paths, runs, warmup, on_result)


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return shared_work_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory, work_dir):
    """Positions 0 (fixed), 2 and 3 (identical shapes, skip allowed), 2 rounds."""
    out = tmp_path_factory.mktemp("host") / "host.json"
    runner = CountingRunner()
    table = profile_device(runner, SPACE, out, runs=RUNS, repeats=2, positions=[0, 2, 3], progress=False,
                           work_dir=work_dir, warmup=2)
    return out, table, runner


def measured_entries(table):
    return [(p, n, e) for p, n, e in table.iter_entries() if e["measured"]] + \
        [(None, n, e) for n, e in table.fixed.items()]


def test_profile_writes_a_valid_table_with_every_entry(profiled):
    out, table, _ = profiled
    loaded = LatencyTable.load(out)
    assert loaded.to_dict() == table.to_dict()
    assert loaded.space == {"name": "mnasnet-k357", "width": 1.0, "resolution": 32, "num_classes": 1000}
    assert sorted(loaded.entries) == [0, 2, 3]
    assert set(loaded.entries[2]) == {op.name for op in SPACE.positions[2].candidates}
    assert loaded.fixed["stem"]["covers"] == ["stem"] and loaded.fixed["head"]["covers"] == ["head"]
    assert {"model", "abi", "runtime", "runtime_version", "threads", "os"} <= set(loaded.device)
    assert loaded.settings["runs"] == RUNS and loaded.settings["repeats"] == 2


def test_skip_is_zero_and_marked_identity(profiled):
    _, table, _ = profiled
    skip = table.entry(2, "skip")
    assert skip["median_ms"] == 0.0 and skip["measured"] is False and skip["note"] == "identity"


def test_entries_have_a_plausible_spread(profiled):
    _, table, _ = profiled
    for _, _, entry in measured_entries(table):
        assert 0 < entry["min_ms"] <= entry["median_ms"] <= entry["max_ms"] < 1000
        assert entry["std_ms"] >= 0 and entry["runs"] == 2 * RUNS
        assert len(entry["repeats"]) == 2 and entry["statistic"] == "median"
        assert entry["wall_s"] >= entry["export_s"] >= 0 and entry["inference_s"] > 0
    # more work costs more time: the expansion-6 kernel-7 layer is slower than the expansion-3 kernel-3 one
    assert table.latency_ms(2, "ir_k7_e6") > table.latency_ms(2, "ir_k3_e3")


def test_identical_positions_share_one_model_file(profiled):
    _, table, runner = profiled
    entries = len(measured_entries(table))
    assert entries == 1 + 6 + 6 + 2
    assert len(set(runner.measured)) == 1 + 6 + 2  # position 3 reuses position 2's files
    assert len(runner.measured) == 2 * entries  # every entry once per round


def test_resume_of_a_complete_table_measures_nothing(profiled, work_dir):
    out, table, _ = profiled
    runner = CountingRunner()
    again = profile_device(runner, SPACE, out, runs=RUNS, repeats=2, positions=[0, 2, 3], progress=False,
                           work_dir=work_dir, warmup=2)
    assert runner.measured == []
    assert again.to_dict()["entries"] == table.to_dict()["entries"]


def test_resume_measures_only_missing_positions_and_rounds(tmp_path, work_dir):
    out = tmp_path / "t.json"
    first = CountingRunner()
    profile_device(first, SPACE, out, runs=RUNS, repeats=1, positions=[0], progress=False, work_dir=work_dir, warmup=1)
    assert len(first.measured) == 3  # stem, layer 0, head
    second = CountingRunner()
    table = profile_device(second, SPACE, out, runs=RUNS, repeats=2, positions=[0, 2], progress=False,
                           work_dir=work_dir, warmup=1)
    # the 3 finished entries get their second round only; the 6 new ones get both
    assert len(second.measured) == 3 + 2 * 6
    assert all(len(e["repeats"]) == 2 for _, _, e in measured_entries(table))


def test_resume_of_a_table_for_another_resolution_is_refused(profiled, work_dir):
    out, _, _ = profiled
    with pytest.raises(TableError, match=r"cannot resume: this table is for resolution 32, this run asks for 64; "
                                         r"pass another --out"):
        profile_device(CountingRunner(), get_space("mnasnet-k357", resolution=64), out, runs=RUNS, progress=False,
                       work_dir=work_dir, warmup=2)


def test_no_resume_starts_over(profiled, tmp_path, work_dir):
    out = tmp_path / "copy.json"
    out.write_text(profiled[0].read_text())
    runner = CountingRunner()
    profile_device(runner, SPACE, out, runs=RUNS, repeats=1, positions=[0], resume=False, progress=False,
                   work_dir=work_dir, warmup=1)
    assert len(runner.measured) == 3
    assert sorted(LatencyTable.load(out).entries) == [0]


def test_summary_finds_fastest_and_slowest_network_once_every_position_is_measured(profiled, tmp_path, work_dir):
    _, table, _ = profiled
    assert summarize_table(table).fastest is None  # positions 1, 4-21 are missing
    summary = summarize_table(table)
    assert summary.entries == 15 and summary.skips == 2
    # a complete (tiny) table: fake every other position by copying position 3's entries
    full = LatencyTable.from_dict(table.to_dict())
    for position in SPACE.positions:
        if position.index not in full.entries:
            for op in position.candidates:
                source = full.entry(3, op.name) or full.entry(0, "ir_k3_e1")
                full.set_entry(position.index, op, dict(source))
    summary = summarize_table(full)
    assert summary.fastest_ms < summary.slowest_ms
    assert summary.fastest_ms == pytest.approx(full.lookup_ms(summary.fastest))
    assert "skip" in summary.fastest.to_string() and "ir_k7_e6" in summary.slowest.to_string()


def test_parse_positions_reads_lists_and_ranges():
    space = get_space()
    assert parse_positions("1,2,5-8", space) == [1, 2, 5, 6, 7, 8]
    from mobilekit.errors import SpaceError
    with pytest.raises(SpaceError, match="position 22 is out of range: space 'spnas-mnasnet' has positions 0-21"):
        parse_positions("20-22", space)
    with pytest.raises(SpaceError, match="cannot read positions"):
        parse_positions("one", space)


def test_host_runner_pins_to_the_requested_core_and_restores(profiled):
    before = os.sched_getaffinity(0)
    runner = open_runner(parse_device({"name": "pinned", "cpu_affinity": [0]}))
    with runner:
        assert os.sched_getaffinity(0) == {0}
        (m,) = runner.measure([profiled[2].measured[0]], runs=3, warmup=0)
        assert isinstance(m, RunnerMeasurement) and m.runs == 3
    assert os.sched_getaffinity(0) == before


def test_host_runner_waits_for_the_thermal_zone_to_cool_down(profiled, tmp_path):
    zone = tmp_path / "temp"
    zone.write_text("80000\n")  # 80 degrees C, in milli-degrees as sysfs reports it
    device = parse_device({"name": "hot", "thermal_zone": str(zone), "thermal_max_c": 45.0, "thermal_poll_s": 0.05,
                           "cooldown_s": 0.2})
    timer = threading.Timer(0.5, lambda: zone.write_text("40000\n"))
    path = profiled[2].measured[0]
    with open_runner(device) as runner:
        started = time.perf_counter()
        timer.start()
        first, second = runner.measure([path, path], runs=2, warmup=0)
        elapsed = time.perf_counter() - started
    assert elapsed >= 0.5 + 0.2  # waited for the zone, then cooled down between the two files
    assert first.temperature_c == second.temperature_c == 40.0


def test_a_weightless_conversion_is_caught_and_deleted(tmp_path, monkeypatch):
    import mobilekit.export.tflite_export as tflite_export
    from mobilekit.models.keras_builder import build_keras_layer_model

    real = tflite_export.export_tflite
    spec = LayerSpec(SPACE.positions[21], SPACE.positions[21].candidates[0])
    # a converter that loses the transferred weights: it converts a freshly initialised twin instead
    monkeypatch.setattr(tflite_export, "export_tflite", lambda model, path, **kw: real(build_keras_layer_model(spec), path))
    cache = ModelFileCache(tmp_path, "tflite")
    with pytest.raises(ExportError, match="differs from PyTorch .* weights were lost"):
        cache.layer(spec)
    assert list(tmp_path.glob("*.tflite")) == []


def test_a_conversion_that_outputs_nan_is_caught(tmp_path, monkeypatch):
    import torch

    import mobilekit.export.onnx_export as onnx_export

    real = onnx_export.export_onnx

    def poisoned(module, path, input_shape, exporter="dynamo"):
        with torch.no_grad():
            next(module.parameters()).fill_(float("nan"))
        try:
            return real(module, path, input_shape, exporter=exporter)
        finally:
            with torch.no_grad():
                next(module.parameters()).fill_(0.5)

    monkeypatch.setattr(onnx_export, "export_onnx", poisoned)
    with pytest.raises(ExportError, match="outputs NaN"):
        ModelFileCache(tmp_path, "onnx").stem(SPACE)


def test_network_file_is_exported_once_and_reused(tmp_path):
    arch = reference_architecture(get_space(resolution=32))
    path = export_network_file(arch, tmp_path, "onnx")
    assert path.suffix == ".onnx" and is_checked(path, "onnx")
    record = json.loads(path.with_name(path.name + ".check.json").read_text())
    assert record["max_abs_diff"] < 1e-3
    stamp = path.stat().st_mtime_ns
    assert export_network_file(arch, tmp_path, "onnx") == path and path.stat().st_mtime_ns == stamp


def test_onnx_host_device_profiles_onnx_files(tmp_path, work_dir):
    runner = CountingRunner(parse_device({"name": "onnx-host", "runtime": "onnx"}))
    table = profile_device(runner, SPACE, tmp_path / "onnx.json", runs=RUNS, repeats=1, positions=[21],
                           progress=False, work_dir=work_dir, warmup=1)
    assert {p.suffix for p in runner.measured} == {".onnx"} and len(runner.measured) == 3
    assert table.device["runtime"] == "onnx" and table.device["runtime_version"].startswith("onnxruntime ")
    assert table.has(21, "ir_k3_e6") and table.fixed["head"]["median_ms"] > 0
