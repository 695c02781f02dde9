"""Validation against a device: sampling over the latency range, interleaved repeats, report files.

The device here is a small fake runner that times ONNX files with onnxruntime in this process.
"""

import csv
import json
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from mobilekit.latency.features import layer_feature_dict
from mobilekit.latency.regression import LayerLatencyRegressor
from mobilekit.latency.validate import NOISE, PREDICTORS, cross_fitted_correction, sample_spread, validate_predictor
from mobilekit.profile.measurement import Measurement
from mobilekit.latency_table import LatencyTable
from mobilekit.space import LayerSpec, get_space

PIXEL1 = Path(__file__).parents[1] / "latency_tables" / "pixel1-spnas.json"


class OnnxRuntimeRunner:
    """Measures ONNX files with onnxruntime, one thread; records the order it was asked to measure in."""

    runtime = "onnx"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def info(self) -> dict:
        import onnxruntime

        return {"model": "test host", "runtime": "onnx", "runtime_version": onnxruntime.__version__, "threads": 1}

    def measure(self, model_paths, runs=50, warmup=5):
        import onnxruntime

        self.calls.append([Path(p).name for p in model_paths])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        results = []
        for path in model_paths:
            started = time.perf_counter()
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: np.zeros(session.get_inputs()[0].shape, dtype=np.float32)}
            for _ in range(warmup):
                session.run(None, feed)
            samples = []
            for _ in range(runs):
                begin = time.perf_counter()
                session.run(None, feed)
                samples.append((time.perf_counter() - begin) * 1e3)
            results.append(Measurement.from_samples(samples, wall_s=time.perf_counter() - started))
        return results


def export_onnx(arch, out_dir: Path, runtime: str) -> Path:
    """A small ONNX graph standing in for the network: one MatMul + Relu per non-skip layer, so heavier
    architectures take longer (exporting real networks is the profiler's business, and slow)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    assert runtime == "onnx"
    width = 64
    nodes, weights, current = [], [], "x"
    for spec in arch.layers():
        if spec.op.is_skip:
            continue
        name = f"w{spec.index}"
        weights.append(numpy_helper.from_array(np.full((width, width), 0.01, dtype=np.float32), name))
        nodes += [helper.make_node("MatMul", [current, name], [f"m{spec.index}"]),
                  helper.make_node("Relu", [f"m{spec.index}"], [f"r{spec.index}"])]
        current = f"r{spec.index}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128, width])], weights)
    path = out_dir / f"{zlib.crc32(arch.to_string().encode()):08x}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def synthetic_table(space) -> LatencyTable:
    """A table for ``space`` whose entries grow with MACs (ms), as a measured one would."""
    table = LatencyTable(space=space.describe(), device={"name": "test", "runtime": "onnx"},
                         fixed={"stem": {"median_ms": 0.05, "covers": ["stem"]},
                                "head": {"median_ms": 0.05, "covers": ["head"]}})
    for position in space.positions:
        for op in position.candidates:
            macs = 0.0 if op.is_skip else layer_feature_dict(LayerSpec(position, op))["macs"]
            table.set_entry(position.index, op, {"median_ms": 0.01 + macs * 2e-8, "measured": True})
    return table


def test_sampled_networks_spread_over_the_latency_range():
    table = LatencyTable.load(PIXEL1)
    archs = sample_spread(table, 20, seed=0)
    latency = sorted(table.lookup_ms(a) for a in archs)
    assert len({a.to_string() for a in archs}) == 20
    assert all(not op.se_ratio for a in archs for op in a.choices)      # only measured types
    gaps = np.diff(latency)
    assert latency[-1] - latency[0] > 50                                 # light to heavy: ~45 to ~120 ms
    assert gaps.max() < 3 * (latency[-1] - latency[0]) / 19


def test_cross_fitted_correction_never_sees_its_own_network():
    predicted = np.linspace(10, 50, 20)
    measured = 1.1 * predicted + 1.0
    corrected = cross_fitted_correction(predicted, measured)
    np.testing.assert_allclose(corrected, measured, rtol=1e-9)
    measured[3] += 30.0                          # an outlier cannot pull its own prediction towards itself
    assert abs(cross_fitted_correction(predicted, measured)[3] - (1.1 * predicted[3] + 1.0)) < 5.0


def test_validate_reports_predictors_next_to_repeat_noise(tmp_path):
    space = get_space(width=0.25, resolution=32)
    runner = OnnxRuntimeRunner()
    table = synthetic_table(space)
    predictor = LayerLatencyRegressor(model="opcost", cv=0).fit_table(table)
    report = validate_predictor(runner, table, samples=5, repeats=2, out_dir=tmp_path, progress=False, runs=5,
                                warmup=1, batch=2, predictor=predictor, export_fn=export_onnx)
    assert len(report.rows) == 5 and report.repeats == 2
    for name in PREDICTORS + (NOISE,):
        metrics = report.metrics[name]
        assert metrics["n"] == 5 and np.isfinite(metrics["rmse_ms"]) and metrics["mape_pct"] >= 0
        assert 0 <= metrics["within_5_pct"] <= metrics["within_10_pct"] <= 100
    assert report.noise_ratio() > 0
    # every network measured once per repeat, the repeats in different orders
    first = [name for call in runner.calls[:3] for name in call]
    second = [name for call in runner.calls[3:] for name in call]
    assert sorted(first) == sorted(second) and len(first) == 5
    rows = list(csv.DictReader((tmp_path / "validation.csv").open()))
    assert len(rows) == 5 and {"lookup_ms", "regression_corrected_ms", "measured_ms", "repeat_2_ms"} <= set(rows[0])
    assert float(rows[0]["measured_ms"]) == pytest.approx(
        (float(rows[0]["repeat_1_ms"]) + float(rows[0]["repeat_2_ms"])) / 2, abs=1e-3)
    assert (tmp_path / "validation.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "validation.json").read_text())
    assert summary["metrics"][NOISE]["n"] == 5
    saved = json.loads((tmp_path / "predictor.json").read_text())
    assert saved["network_correction"]["n_networks"] == 5
    assert "repeat noise" in report.format()


def test_validate_needs_two_repeats():
    with pytest.raises(ValueError, match="repeats must be at least 2"):
        validate_predictor(OnnxRuntimeRunner(), LatencyTable.load(PIXEL1), samples=3, repeats=1, progress=False)


def test_validate_runs_on_the_host_runner(tmp_path):
    from mobilekit.profile.devices import parse_device
    from mobilekit.profile.runners import open_runner

    space = get_space(width=0.25, resolution=32)
    table = synthetic_table(space)
    predictor = LayerLatencyRegressor(model="opcost", cv=0).fit_table(table)
    descriptor = parse_device({"name": "test-host", "transport": "host", "runtime": "onnx", "threads": 1})
    with open_runner(descriptor) as runner:
        report = validate_predictor(runner, table, samples=3, progress=False, runs=3, warmup=1, predictor=predictor,
                                    export_fn=export_onnx)
    assert report.device["runtime"] == "onnx" and report.device["threads"] == 1
    assert all(row["repeat_1_ms"] > 0 and row["repeat_2_ms"] > 0 for row in report.rows)
    assert report.files == {}                   # no out_dir: nothing but the model files is written
