"""A search with an int8 table delivers and measures the int8 TFLite file, whose latency the table predicts."""

from pathlib import Path

from mobilekit.latency_table import LatencyTable
from mobilekit.search.run import _measure, deliverable_formats, measured_format, table_precision

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_int8_table_reads_as_int8_and_the_float_table_as_float():
    assert table_precision(LatencyTable.load(ROOT / "latency_tables/host-int8.json")) == "int8"
    assert table_precision(LatencyTable.load(ROOT / "latency_tables/host.json")) == "float32"


def test_int8_table_adds_the_int8_tflite_file_to_the_exports():
    assert deliverable_formats(("onnx", "tflite"), "int8") == ("onnx", "tflite", "tflite-int8")
    assert deliverable_formats(("tflite", "tflite-int8"), "int8") == ("tflite", "tflite-int8")


def test_float_table_exports_what_was_asked():
    assert deliverable_formats(("onnx", "tflite"), "float32") == ("onnx", "tflite")
    assert deliverable_formats(("onnx",), "int8") == ("onnx",)


def test_a_tflite_device_measures_the_file_of_the_tables_precision():
    assert measured_format(".tflite", "int8") == "tflite-int8"
    assert measured_format(".tflite", "float32") == "tflite"
    assert measured_format(".onnx", "float32") == "onnx"


def test_an_onnx_device_is_not_used_to_measure_an_int8_table_result():
    measured, note, device = _measure(str(ROOT / "devices/onnx-host.toml"), {}, runs=1, precision="int8")
    assert measured is None and device is not None
    assert "int8 TFLite table" in note
