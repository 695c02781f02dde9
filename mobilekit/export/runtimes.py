"""Load and run exported model files with onnxruntime and the LiteRT interpreter, with clear errors.

Inputs are float32 arrays in the file's own layout: NCHW (N, 3, H, W) for ONNX, NHWC (N, H, W, 3) for TFLite.
int8 TFLite models are fed and read through their quantization parameters, so callers always see float32.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mobilekit.errors import ExportError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _check_file(path: Path, kind: str) -> None:
    if not path.is_file():
        raise ExportError(f"{path}: no such {kind} file")
    if path.stat().st_size == 0:
        raise ExportError(f"{path}: the {kind} file is empty; export it again")


class OnnxModel:
    """An ONNX file in an onnxruntime session (CPU, ``threads`` intra-op threads)."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        _check_file(self.path, "ONNX")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for every kind of damage
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"{self.path}: not a valid ONNX model ({first[:160]}); export it again") from None
        self.input = self.session.get_inputs()[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) if isinstance(d, int) else 1 for d in self.input.shape)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 -> (N, classes) float32, one sample at a time (the file has batch 1)."""
        outputs = [self.session.run(None, {self.input.name: sample[None].astype(np.float32)})[0] for sample in batch]
        return np.concatenate(outputs)


class TfliteModel:
    """A .tflite file in the LiteRT interpreter."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        _check_file(self.path, "TFLite")
        data = self.path.read_bytes()
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ExportError(f"{self.path}: not a TFLite flatbuffer (missing the 'TFL3' identifier); export it again")
        try:
            self.interpreter = Interpreter(model_content=data, num_threads=threads)
            self.interpreter.allocate_tensors()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"{self.path}: the TFLite model cannot be loaded ({first[:160]}); export it again") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input["shape"])

    @property
    def quantized(self) -> bool:
        return self.input["dtype"] in (np.int8, np.uint8)

    def invoke(self) -> None:
        self.interpreter.invoke()

    def set_input(self, sample: np.ndarray) -> None:
        """Set one (H, W, C) float32 sample, quantizing it for int8 models."""
        if self.quantized:
            scale, zero = self.input["quantization"]
            info = np.iinfo(self.input["dtype"])
            sample = np.clip(np.round(sample / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], sample[None].astype(self.input["dtype"]))

    def get_output(self) -> np.ndarray:
        out = self.interpreter.get_tensor(self.output["index"])
        if self.output["dtype"] in (np.int8, np.uint8):
            scale, zero = self.output["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out.astype(np.float32)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, C) float32 -> (N, classes) float32."""
        outputs = []
        for sample in batch:
            self.set_input(sample)
            self.invoke()
            outputs.append(self.get_output())
        return np.concatenate(outputs)


def load_model_file(path: str | Path, threads: int = 1) -> OnnxModel | TfliteModel:
    """Open a ``.onnx`` or ``.tflite`` file by its extension."""
    path = Path(path)
    if path.suffix == ".onnx":
        return OnnxModel(path, threads)
    if path.suffix == ".tflite":
        return TfliteModel(path, threads)
    raise ExportError(f"{path}: unknown model file type {path.suffix!r}; expected .onnx or .tflite")
