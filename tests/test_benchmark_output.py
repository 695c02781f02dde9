"""The benchmark output parsers read real tool output (tests/fixtures/benchmark_output, see SOURCES.md) to the
exact numbers printed, and refuse output that is truncated, failed or not the tool's."""

from __future__ import annotations

from pathlib import Path

import pytest

from mobilekit.errors import DeviceError
from mobilekit.profile.benchmark_output import (
    BenchmarkOutputError,
    BenchmarkResult,
    parse_benchmark_model,
    parse_onnxruntime_perf_test,
)

FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_output"
OP_PROFILE = "tflite_v2.8_riscv64_mobilenet_v1_op_profiling.txt"


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_every_fixture_is_listed_in_sources_md():
    sources = (FIXTURES / "SOURCES.md").read_text(encoding="utf-8")
    names = sorted(p.name for p in FIXTURES.glob("*.txt"))
    assert len(names) >= 7
    for name in names:
        assert f"`{name}`" in sources


def test_riscv_op_profiling_summary_numbers():
    result = parse_benchmark_model(fixture_text(OP_PROFILE))
    assert result.tool == "benchmark_model"
    assert result.init_us == 17187
    assert result.first_us == 3512391
    assert result.warmup_us == pytest.approx(3.51239e06)
    assert result.avg_us == pytest.approx(2.95034e06)
    assert result.avg_ms == pytest.approx(2950.34)
    assert result.count == 50
    assert result.std_us == 109798
    assert result.min_us == 2727568
    assert result.max_us == 3189954
    assert result.percentiles_us == ()


def test_riscv_op_profiling_reads_the_regular_run_order_table():
    ops = parse_benchmark_model(fixture_text(OP_PROFILE)).ops
    # 31 rows of the regular runs' "Run Order", not the init table nor the "Top by Computation Time" copy.
    assert len(ops) == 31
    assert [op.node_index for op in ops] == list(range(31))
    first = ops[0]
    assert first.node_type == "CONV_2D"
    assert first.name == "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0"
    assert (first.start_ms, first.first_ms, first.avg_ms) == (0.066, 87.754, 60.957)
    assert (first.percent, first.cdf_percent, first.mem_kb, first.times_called) == (2.066, 2.066, 0.0, 1)
    tenth = ops[10]
    assert (tenth.node_type, tenth.start_ms, tenth.avg_ms, tenth.percent) == ("CONV_2D", 898.426, 277.374, 9.403)
    last = ops[-1]
    assert (last.node_type, last.name, last.start_ms, last.first_ms, last.avg_ms) == (
        "SOFTMAX",
        "[MobilenetV1/Predictions/Reshape_1]:30",
        2950.011,
        0.230,
        0.233,
    )
    assert last.cdf_percent == 100.0


def test_riscv_op_profile_agrees_with_the_summary_by_node_type():
    ops = parse_benchmark_model(fixture_text(OP_PROFILE)).ops
    counts: dict[str, int] = {}
    for op in ops:
        counts[op.node_type] = counts.get(op.node_type, 0) + 1
    # "Summary by node type" in the same file: 15 CONV_2D, 13 DEPTHWISE_CONV_2D, 1 each of the rest.
    assert counts == {"CONV_2D": 15, "DEPTHWISE_CONV_2D": 13, "AVERAGE_POOL_2D": 1, "SOFTMAX": 1, "SQUEEZE": 1}
    conv_ms = sum(op.avg_ms for op in ops if op.node_type == "CONV_2D")
    assert conv_ms == pytest.approx(2651.853, abs=0.02)


def test_android_yolov5s_cpu_numbers():
    result = parse_benchmark_model(fixture_text("tflite_v2.4_android_mi11_yolov5s_cpu.txt"))
    assert (result.init_us, result.first_us, result.warmup_us, result.avg_us) == (16242, 360262, 304586, 249684)
    assert (result.count, result.std_us, result.min_us, result.max_us) == (50, 1442, 247067, 254474)
    assert result.ops == ()


def test_wasm_info_prefixed_numbers_use_the_measured_not_the_warmup_count_line():
    result = parse_benchmark_model(fixture_text("tflite_wasm_mobilenet_v1_quant_xnnpack.txt"))
    assert (result.init_us, result.first_us) == (7003, 56903)
    assert result.warmup_us == pytest.approx(56415.2)
    assert result.avg_us == pytest.approx(56283.9)
    # The warm-up line is "count=9 ... std=245"; the measured one "count=50 ... std=79".
    assert (result.count, result.std_us, result.min_us, result.max_us) == (50, 79, 56227, 56707)


def test_am62x_percentile_variant_numbers():
    result = parse_benchmark_model(fixture_text("tflite_v2.18_am62x_ssd_mobilenet_v2_percentiles.txt"))
    assert (result.init_us, result.first_us) == (5579, 1357602)
    assert result.warmup_us == pytest.approx(1.3576e06)
    assert result.avg_us == pytest.approx(1.24027e06)
    assert (result.count, result.std_us, result.min_us, result.max_us) == (50, 2565, 1238588, 1252566)
    assert result.percentiles_us == ((5.0, 1238753.0), (50.0, 1239807.0), (95.0, 1247415.0))
    assert result.percentile_us(50) == 1239807.0
    assert result.percentile_us(99) is None


def test_failed_run_raises_quoting_the_error_and_the_last_line():
    with pytest.raises(BenchmarkOutputError) as excinfo:
        parse_benchmark_model(fixture_text("tflite_v2.4_android_mi11_nnapi_failed.txt"))
    message = str(excinfo.value)
    assert "\n" not in message
    assert "'Benchmarking failed.'" in message
    assert "ANEURALNETWORKS_OP_FAILED" in message


def test_output_cut_before_the_summary_raises_quoting_the_last_line():
    text = fixture_text("tflite_wasm_mobilenet_v1_quant_xnnpack.txt")
    cut = text[: text.index("INFO: Inference timings")]
    with pytest.raises(BenchmarkOutputError) as excinfo:
        parse_benchmark_model(cut)
    assert "INFO: count=50 first=56282" in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_output_cut_inside_the_summary_line_raises_quoting_that_line():
    text = fixture_text("tflite_v2.4_android_mi11_yolov5s_cpu.txt")
    cut = text[: text.index("Warmup (avg)")]
    with pytest.raises(BenchmarkOutputError) as excinfo:
        parse_benchmark_model(cut)
    assert "malformed 'Inference timings in us' line" in str(excinfo.value)
    assert "First inference: 360262" in str(excinfo.value)


def test_output_cut_inside_the_operator_table_raises():
    text = fixture_text(OP_PROFILE)
    marker = "[MobilenetV1/MobilenetV1/Conv2d_4_pointwise/Relu6]:8\n"
    start = text.index("Operator-wise Profiling Info")
    cut = text[: text.index(marker, start) + len(marker)]
    with pytest.raises(BenchmarkOutputError) as excinfo:
        parse_benchmark_model(cut)
    assert "ends inside the operator profile" in str(excinfo.value)
    assert "Conv2d_4_pointwise" in str(excinfo.value)


def test_operator_row_with_a_missing_column_raises_quoting_the_row():
    text = fixture_text(OP_PROFILE)
    start = text.index("Operator-wise Profiling Info")
    row_start = text.index("\t       DEPTHWISE_CONV_2D\t           61.033", start)
    row_end = text.index("\n", row_start)
    broken = text[:row_start] + text[row_start:row_end].replace("\t   53.628", "", 1) + text[row_end:]
    with pytest.raises(BenchmarkOutputError) as excinfo:
        parse_benchmark_model(broken)
    assert "8 columns, expected 9" in str(excinfo.value)
    assert "61.033" in str(excinfo.value)


def test_unknown_output_raises_quoting_the_last_line():
    with pytest.raises(BenchmarkOutputError) as excinfo:
        parse_benchmark_model("/system/bin/sh: benchmark_model: not found\n")
    assert "'/system/bin/sh: benchmark_model: not found'" in str(excinfo.value)


def test_empty_output_raises():
    with pytest.raises(BenchmarkOutputError, match="printed nothing"):
        parse_benchmark_model("\n  \n")


def test_onnxruntime_output_is_not_benchmark_model_output():
    with pytest.raises(BenchmarkOutputError):
        parse_benchmark_model(fixture_text("onnxruntime_perf_test_spacemit_k1_yolov8n.txt"))


def test_benchmark_output_error_is_a_device_error():
    assert issubclass(BenchmarkOutputError, DeviceError)


def test_onnxruntime_spacemit_numbers_converted_to_microseconds():
    result = parse_onnxruntime_perf_test(fixture_text("onnxruntime_perf_test_spacemit_k1_yolov8n.txt"))
    assert isinstance(result, BenchmarkResult)
    assert result.tool == "onnxruntime_perf_test"
    assert result.avg_us == pytest.approx(82338.2)
    assert result.avg_ms == pytest.approx(82.3382)
    assert result.init_us == pytest.approx(1.14476e6)
    assert result.first_us == pytest.approx(248000.0)
    assert result.count == 10
    assert result.min_us == pytest.approx(80812.9)
    assert result.max_us == pytest.approx(83881.7)
    assert result.warmup_us is None and result.std_us is None
    pcts = dict(result.percentiles_us)
    assert sorted(pcts) == [50.0, 90.0, 95.0, 99.0, 99.9]
    assert pcts[50.0] == pytest.approx(82609.5)
    assert pcts[99.9] == pytest.approx(83881.7)


def test_onnxruntime_old_android_acl_numbers():
    result = parse_onnxruntime_perf_test(fixture_text("onnxruntime_perf_test_v1.3_android_acl_squeezenet.txt"))
    assert result.avg_us == pytest.approx(144871.0)
    assert result.init_us == pytest.approx(127918.0)
    assert result.count == 10
    assert result.first_us is None
    assert result.percentiles_us == ()


def test_onnxruntime_truncated_output_raises_quoting_the_last_line():
    text = fixture_text("onnxruntime_perf_test_spacemit_k1_yolov8n.txt")
    cut = text[: text.index("Average inference time cost")]
    with pytest.raises(BenchmarkOutputError) as excinfo:
        parse_onnxruntime_perf_test(cut)
    assert "'Total inference requests: 10'" in str(excinfo.value)


def test_onnxruntime_parser_refuses_benchmark_model_output():
    with pytest.raises(BenchmarkOutputError):
        parse_onnxruntime_perf_test(fixture_text("tflite_v2.4_android_mi11_yolov5s_cpu.txt"))
