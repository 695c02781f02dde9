"""Stage 2b: deployable files. ONNX (:mod:`.onnx_export`), TFLite float/int8 (:mod:`.tflite_export`), each
verified against PyTorch (:mod:`.verify`) and described in ``model.json`` (:mod:`.pipeline`); :mod:`.runtimes`
opens the files with onnxruntime / LiteRT."""

from mobilekit.export.onnx_export import export_onnx
from mobilekit.export.pipeline import FORMATS, ExportReport, export_model, load_weights
from mobilekit.export.runtimes import OnnxModel, TfliteModel, load_model_file

__all__ = ["FORMATS", "ExportReport", "OnnxModel", "TfliteModel", "export_model", "export_onnx", "load_model_file",
           "load_weights"]
