"""Keras -> TFLite, float32 or full-integer int8 (post-training quantization), through a SavedModel.

Converting through a SavedModel is the path seen to work here; converting from concrete functions once gave a
weightless model that printed NaN, which is why every export is verified afterwards (:mod:`.verify`).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from mobilekit import safewrite
from mobilekit.errors import ExportError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def export_tflite(keras_model, path: str | Path, int8: bool = False,
                  representative: np.ndarray | None = None, num_representative: int = 64, seed: int = 0,
                  recognise: safewrite.Recognise | None = None) -> Path:
    """Convert a Keras model to ``path``.

    Args:
        int8: full-integer quantization (int8 weights, activations, input and output).
        representative: (N, H, W, C) float32 samples for calibrating int8 ranges; random normal samples when
            None (fine for latency, poor for accuracy: pass real data for a model you deploy).
    """
    import tensorflow as tf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mobilekit-savedmodel-") as saved, contextlib.redirect_stdout(io.StringIO()):
        try:
            keras_model.export(saved, format="tf_saved_model", verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(saved)
            if int8:
                samples = _representative_samples(keras_model, representative, num_representative, seed)
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = lambda: ([s[None]] for s in samples)
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
            flatbuffer = converter.convert()
        except Exception as exc:
            raise ExportError(f"{path}: TFLite conversion failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    safewrite.write_bytes(path, flatbuffer, recognise=recognise)
    return path


def _representative_samples(keras_model, representative: np.ndarray | None, count: int, seed: int) -> Iterable[np.ndarray]:
    shape = tuple(int(d) for d in keras_model.inputs[0].shape[1:])
    if representative is None:
        return np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)
    representative = np.asarray(representative, dtype=np.float32)
    if representative.shape[1:] != shape:
        raise ExportError(f"representative data has shape {representative.shape[1:]}, the model expects {shape} (NHWC)")
    return representative[:count]
