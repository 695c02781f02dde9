"""Pipelined profiling: a pool of worker processes makes the model files ahead of the device, the device
measures each file as soon as it exists, and the report says where the time went; int8 tables."""

from pathlib import Path

import pytest

from mobilekit.errors import ConfigError, TableError
from mobilekit.latency_table import LatencyTable
from mobilekit.profile.devices import parse_device
from mobilekit.profile.export_pool import ExportJob, ExportPool
from mobilekit.profile.model_files import ModelFileCache, is_checked
from mobilekit.profile.profiler import ProfileReport, profile_device
from mobilekit.profile.runners import HostRunner, open_runner
from mobilekit.space import LayerSpec, get_space
from mobilekit.testing.adb_emulator import AdbDeviceEmulator
from mobilekit.testing.benchmark_model_litert import write_benchmark_model_wrapper

SPACE = get_space("mnasnet-k357", resolution=32)


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "profile-model-files"  # shared with the other profile tests


class OrderRunner(HostRunner):
    """A host runner that remembers, for every file it measures, whether its check record existed."""

    def __init__(self, descriptor):
        super().__init__(descriptor)
        self.measured: list[Path] = []

    def measure(self, model_paths, runs=50, warmup=5, on_result=None):
        assert all(is_checked(p, self.runtime) for p in model_paths)  # never a file the pool has not finished
        self.measured.extend(model_paths)
        return super().measure(model_paths, runs, warmup, on_result)


def test_phone_measures_while_the_pool_converts_and_the_report_adds_up(tmp_path, work_dir):
    fresh = tmp_path / "cache"
    fresh.mkdir()
    for part in ("stem", "head"):  # already made by other tests (when they ran first): only the layers are new
        for found in work_dir.glob(f"{part}-3x32x32-*.tflite*") if part == "stem" else work_dir.glob("head-320x1x1-*.tflite*"):
            (fresh / found.name).write_bytes(found.read_bytes())
    binary = write_benchmark_model_wrapper(tmp_path)
    report = ProfileReport()
    with AdbDeviceEmulator(tmp_path / "storage", run_cost_s=0.2) as emulator:
        device = parse_device({"name": "phone", "transport": "adb", "address": emulator.address, "use_server": False,
                               "key_path": str(tmp_path / "adbkey"), "benchmark_binary": str(binary)})
        with open_runner(device) as runner:
            table = profile_device(runner, SPACE, tmp_path / "phone.json", runs=3, repeats=2, positions=[0, 21],
                                   progress=False, work_dir=fresh, warmup=0, export_workers=2,
                                   report=report)
    assert report.overlapped and report.export_workers == 2 and 2 <= report.files_made <= 4  # 0, 21 (stem, head)
    assert report.measurements == 8 and table.entry(21, "ir_k3_e6")["runs"] == 6
    assert 0 < report.device_busy_s < report.wall_s and report.ratio == report.wall_s / report.device_busy_s
    assert report.device_wait_s < report.wall_s
    assert "wall/device-busy" in report.line() and "while the device measured" in report.line()
    # each new file's export time is counted once, on the entry that caused it
    assert all(e["export_s"] > 0 for e in [table.entry(0, "ir_k3_e1"), table.entry(21, "ir_k3_e6")])


def test_unpinned_host_makes_every_file_before_measuring(tmp_path):
    report = ProfileReport()
    with OrderRunner(parse_device({"name": "onnx-host", "runtime": "onnx"})) as runner:  # ONNX: quick workers
        profile_device(runner, SPACE, tmp_path / "host.json", runs=3, repeats=1, positions=[21], progress=False,
                       work_dir=tmp_path / "cache", warmup=0, export_workers=2, report=report)
    assert (report.overlapped, report.files_made, report.export_workers) == (False, 3, 2)
    assert len(set(runner.measured)) == 3


def test_serial_export_workers_0_gives_the_same_entries(tmp_path, work_dir):
    report = ProfileReport()
    with OrderRunner(parse_device({"name": "host"})) as runner:
        table = profile_device(runner, SPACE, tmp_path / "serial.json", runs=3, repeats=1, positions=[0],
                               progress=False, work_dir=work_dir, warmup=0, export_workers=0, report=report)
    assert report.export_workers == 0 and table.has(0, "ir_k3_e1") and set(table.fixed) == {"stem", "head"}


def test_jobs_of_one_content_key_share_one_future(tmp_path):
    cache = ModelFileCache(tmp_path, "onnx")
    pool = ExportPool(cache, workers=0)
    first = pool.submit(ExportJob("layer", SPACE, LayerSpec(SPACE.positions[2], SPACE.positions[2].candidates[1])))
    second = pool.submit(ExportJob("layer", SPACE, LayerSpec(SPACE.positions[3], SPACE.positions[3].candidates[1])))
    assert first is second and first.result().path.exists()
    pool.close()


def test_int8_table_is_recorded_and_resuming_it_as_float_is_refused(tmp_path, work_dir):
    out = tmp_path / "int8.json"
    with OrderRunner(parse_device({"name": "host"})) as runner:
        table = profile_device(runner, SPACE, out, runs=3, repeats=1, positions=[0], progress=False,
                               work_dir=work_dir, warmup=0, export_workers=0, precision="int8")
    assert table.settings["precision"] == "int8" and "int8" in table.settings["model_files"]
    assert all(p.name.endswith("-int8.tflite") for p in runner.measured)
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(runner.measured[0])).get_input_details()[0]
    assert details["dtype"].__name__ == "int8"  # full-integer: int8 input, not a float model
    assert LatencyTable.load(out).has(0, "ir_k3_e1")
    with HostRunner(parse_device({"name": "host"})) as runner, pytest.raises(TableError, match="holds int8 latencies"):
        profile_device(runner, SPACE, out, runs=3, repeats=1, positions=[0], progress=False, work_dir=work_dir,
                       warmup=0)


def test_int8_needs_a_tflite_device(tmp_path):
    with HostRunner(parse_device({"name": "onnx-host", "runtime": "onnx"})) as runner, \
            pytest.raises(ConfigError, match="precision 'int8' needs runtime 'tflite'"):
        profile_device(runner, SPACE, tmp_path / "x.json", precision="int8", progress=False)


def test_pinned_host_measures_while_the_pool_converts_on_the_other_cores(tmp_path):
    import os

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs two cores: one to measure on, one for the pool")
    report = ProfileReport()
    with OrderRunner(parse_device({"name": "onnx-host", "runtime": "onnx", "cpu_affinity": [cores[0]]})) as runner:
        profile_device(runner, SPACE, tmp_path / "host.json", runs=3, repeats=1, positions=[21], progress=False,
                       work_dir=tmp_path / "cache", warmup=0, report=report)
    assert report.overlapped and report.files_made == 3 and len(set(runner.measured)) == 3
    assert "while the device measured" in report.line()


def test_progress_bars_stay_out_of_redirected_output(tmp_path, capsys):
    """With progress on but stderr not a terminal (a redirected log), no bar, carriage return or cursor code."""
    with OrderRunner(parse_device({"name": "onnx-host", "runtime": "onnx"})) as runner:
        profile_device(runner, SPACE, tmp_path / "host.json", runs=3, repeats=1, positions=[21], progress=True,
                       work_dir=tmp_path / "cache", warmup=0)
    assert LatencyTable.load(tmp_path / "host.json").entries        # it did profile
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b[" not in err and "measure on" not in err, err


def _narrow_se_layer() -> LayerSpec:
    """Position 1 of the reference space at width 0.25, 32 px as ``ir_k3_e3_se0.25``: 8 -> 24 channels, an SE
    squeeze of 2 channels (the int8 file XNNPACK refused before the squeeze was kept alive)."""
    from mobilekit.space import Architecture, parse_layer_type

    space = get_space("spnas-mnasnet", width=0.25, resolution=32)
    op = parse_layer_type("ir_k3_e3_se0.25")
    arch = Architecture(space, tuple(op if p.index == 1 else p.candidates[0] for p in space.positions))
    spec = arch.layers()[1]
    assert (spec.in_channels, spec.mid_channels, spec.se_channels) == (8, 24, 2)
    return spec


def test_the_seeded_squeeze_of_a_narrow_se_layer_was_dead_and_is_now_alive():
    """The cause: noise inputs pool to nearly one vector, so both squeeze channels of the seeded random layer are
    0 after the ReLU for every calibration sample (int8 range [0, 0]); :func:`live_squeeze` keeps them > 0."""
    import numpy as np
    import torch

    from mobilekit.models.torch_builder import MBConv, SqueezeExcite, randomize_batchnorm
    from mobilekit.profile.model_files import INT8_CALIBRATION_SAMPLES, _seed, layer_key, live_squeeze

    spec = _narrow_se_layer()
    key = layer_key(spec)  # the int8 file shares the float key (the tag is in the file name only)
    samples = torch.from_numpy(np.random.default_rng(_seed(key) + 2).standard_normal(
        (INT8_CALIBRATION_SAMPLES, spec.in_channels, *spec.in_hw)).astype(np.float32))

    def squeezed(module: MBConv) -> torch.Tensor:
        pooled = []
        se = next(m for m in module.modules() if isinstance(m, SqueezeExcite))
        hook = se.register_forward_pre_hook(lambda _m, args: pooled.append(args[0].mean((2, 3), keepdim=True)))
        with torch.no_grad():
            module(samples)
            hook.remove()
            return torch.relu(se.reduce(pooled[0]))

    torch.manual_seed(_seed(key))
    dead = randomize_batchnorm(MBConv(spec), _seed(key)).eval()
    assert float(squeezed(dead).abs().max()) == 0.0
    assert float(squeezed(live_squeeze(dead)).min()) > 0.0


def test_an_int8_narrow_se_layer_file_loads_in_xnnpack_and_is_measured(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    path = ModelFileCache(tmp_path, "tflite", "int8").layer(_narrow_se_layer()).path
    interpreter = Interpreter(model_path=str(path))  # the default resolver applies XNNPACK
    interpreter.allocate_tensors()
    squeeze = [t for t in interpreter.get_tensor_details() if "se_reduce" in t["name"] and len(t["shape"]) == 4
               and t["shape"][-1] == 2]
    assert squeeze and min(float(t["quantization_parameters"]["scales"][0]) for t in squeeze) > 1e-6
    with HostRunner(parse_device({"name": "host"})) as runner:
        (measurement,) = runner.measure([path], runs=3, warmup=0)
    assert measurement.runs == 3 and measurement.median_ms > 0
