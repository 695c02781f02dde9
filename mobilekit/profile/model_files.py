"""Model files to measure on a device: one layer position alone, the stem, the head, or a whole network.

Every file has random weights (seeded from what it contains, so the same layer always gives the same file)
and the exact input shape it sees in the network: (1, C, H, W) for ONNX, (1, H, W, C) for TFLite. A file
checks itself once when it is written: it is run on a random input and compared with the PyTorch module it
came from (TFLite through the Keras twin), so a NaN or weightless conversion never reaches a latency table.

:class:`ModelFileCache` keeps files in a work folder under a content key (type and shapes, not the position),
so positions that see the same shapes share one file: in the reference space positions 2-4 are identical, as
are 6-8, 10-12, 14-16 and 18-20, and a full table converts about half as many models as it has entries.

Precision: ``"float32"`` (the default) or ``"int8"``: full-integer post-training quantization through the
exporter's int8 path (:func:`mobilekit.export.tflite_export.export_tflite` with ``int8=True``; int8 weights,
activations, input and output), calibrated on :data:`INT8_CALIBRATION_SAMPLES` seeded normal samples of the
file's input shape. int8 exists for TFLite only; an int8 file's key ends in ``-int8`` and its check compares the
dequantized output with PyTorch's float output by relative RMS error (:data:`INT8_TOLERANCE`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mobilekit import __version__
from mobilekit.errors import ArchitectureError, ConfigError, ExportError
from mobilekit import safewrite
from mobilekit.jsonio import json_field_is, write_json_atomic
from mobilekit.export.torch_threads import one_torch_thread
from mobilekit.space import Architecture, LayerSpec, SearchSpace
from mobilekit.validation.paths import os_error_reason, write_probe

RUNTIME_SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}
#: Bumped when the way files are built changes, so cached files of an older build are not reused.
FILE_FORMAT = 2
#: A file passes its check when max |file - PyTorch| <= CHECK_TOLERANCE * (1 + max |PyTorch|).
CHECK_TOLERANCE = 1e-4
#: An int8 file passes when rms(file - PyTorch) <= INT8_TOLERANCE * rms(PyTorch) (quantization noise, not a bug).
INT8_TOLERANCE = 0.25
INT8_CALIBRATION_SAMPLES = 16
PRECISIONS = ("float32", "int8")
ONNX_EXPORTER = "torchscript"  # the legacy exporter: ~10x faster than dynamo for the many small models of a table


@dataclass(frozen=True)
class ModelFile:
    """A checked model file. ``export_s`` is the time spent building, converting and checking it (0 if reused)."""

    path: Path
    export_s: float
    reused: bool


# ---- content keys -------------------------------------------------------------------------------------------
def layer_key(spec: LayerSpec) -> str:
    """Content key of a single-layer file: identical for positions with the same shapes and type."""
    if spec.op.is_skip:
        raise ArchitectureError(f"layer {spec.index}: skip is the identity and has no model file")
    h, w = spec.in_hw
    return f"mbconv-{spec.in_channels}x{h}x{w}-to{spec.out_channels}-s{spec.stride}-{spec.op.name}"


def stem_key(space: SearchSpace) -> str:
    return f"stem-{space.in_channels}x{space.resolution}x{space.resolution}-to{space.stem_channels}"


def head_key(space: SearchSpace) -> str:
    h, w = space.head_in_hw
    return f"head-{space.positions[-1].out_channels}x{h}x{w}-to{space.head_channels}-fc{space.num_classes}"


def network_key(arch: Architecture) -> str:
    space = arch.space
    digest = hashlib.sha256(",".join(c.name for c in arch.choices).encode()).hexdigest()[:12]
    return f"net-{space.name}-w{space.width:g}-r{space.resolution}-c{space.num_classes}-{digest}"


def _seed(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)


def _suffix(runtime: str) -> str:
    try:
        return RUNTIME_SUFFIX[runtime]
    except KeyError:
        raise ExportError(f"unknown runtime {runtime!r}: use 'tflite' or 'onnx'") from None


# ---- building and checking ---------------------------------------------------------------------------------
def _parts(seed: int, make_module: Callable, make_keras: Callable, prefix: str, input_nchw: tuple[int, ...]):
    """(PyTorch module with seeded random weights and BatchNorm statistics, factory of its Keras twin carrying
    the same weights, input shape NCHW). ``prefix`` is the module's path in the whole network."""
    import torch

    from mobilekit.models.torch_builder import randomize_batchnorm

    torch.manual_seed(seed)
    module = live_squeeze(randomize_batchnorm(make_module(), seed)).eval()

    def keras_model():
        from mobilekit.models.keras_builder import transfer_weights

        model = make_keras()
        transfer_weights(module, model, prefix=prefix)
        return model

    return module, keras_model, input_nchw


def live_squeeze(module):
    """``module`` with every squeeze-and-excitation reduce convolution made non-negative (weights and biases, the
    biases at least 0.05), so its ReLU is never dead: its input is the mean of ReLU6 outputs (>= 0), so every
    squeeze channel is > 0 for every input.

    Why: a layer file's weights are random and its calibration inputs noise, whose spatial mean is nearly the same
    vector for every sample, so each squeeze channel is either always positive or always 0 after the ReLU. With
    few squeeze channels (2 for ``se0.25`` of 8 input channels at width 0.25) all can be dead; the int8
    converter then calibrates that tensor to the range [0, 0] (scale 7.8e-9) and XNNPACK refuses the file
    ("failed to prepare": the reduce convolution's requantization scale, input x weight / output scale, is
    above its limit of 256). Values do not change the time of an int8 or float kernel, so the latency measured
    is the layer's; only the file becomes one every runtime can load.
    """
    import torch

    from mobilekit.models.torch_builder import SqueezeExcite

    with torch.no_grad():
        for se in (m for m in module.modules() if isinstance(m, SqueezeExcite)):
            se.reduce.weight.abs_()
            se.reduce.bias.abs_().clamp_(min=0.05)
    return module


def _keras_builder():
    from mobilekit.models import keras_builder  # imports TensorFlow: only when a TFLite file is made

    return keras_builder


def _layer_parts(spec: LayerSpec, seed: int):
    from mobilekit.models.torch_builder import MBConv

    h, w = spec.in_hw
    return _parts(seed, lambda: MBConv(spec), lambda: _keras_builder().build_keras_layer_model(spec),
                  f"layers.{spec.index}.", (1, spec.in_channels, h, w))


def _stem_parts(space: SearchSpace, seed: int):
    from mobilekit.models.torch_builder import Stem

    return _parts(seed, lambda: Stem(space), lambda: _keras_builder().build_keras_stem_model(space), "stem.",
                  space.input_shape)


def _head_parts(space: SearchSpace, seed: int):
    from mobilekit.models.torch_builder import Head

    h, w = space.head_in_hw
    return _parts(seed, lambda: Head(space), lambda: _keras_builder().build_keras_head_model(space), "head.",
                  (1, space.positions[-1].out_channels, h, w))


def _network_parts(arch: Architecture, seed: int):
    from mobilekit.models.torch_builder import build_torch_model

    return _parts(seed, lambda: build_torch_model(arch), lambda: _keras_builder().build_keras_model(arch), "",
                  arch.space.input_shape)


def _export_checked(parts, runtime: str, path: Path, key: str, precision: str = "float32") -> float:
    """Convert ``parts`` (torch module, Keras factory, input NCHW shape) to ``path``, check it against PyTorch,
    and write the check record beside it. Returns the max abs difference."""
    with one_torch_thread():
        return _export_and_check(parts, runtime, path, key, precision)


def _export_and_check(parts, runtime: str, path: Path, key: str, precision: str = "float32") -> float:
    import torch

    module, keras_factory, input_nchw = parts
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = _record_path(path)
    # A cache file from an older mobilekit (before manifests) is replaced only when its check record names
    # this key; anything else at these names is refused (safewrite.claim), never overwritten.
    ours = json_field_is(record, "key", key)
    safewrite.adopt(path, (lambda p: ours) if ours else None)
    safewrite.remove(record, recognise=lambda p: json_field_is(p, "key", key))
    started = time.perf_counter()
    sample = np.random.default_rng(_seed(key) + 1).standard_normal(input_nchw).astype(np.float32)
    with torch.no_grad():
        reference = module(torch.from_numpy(sample)).numpy()
    if runtime == "onnx":
        from mobilekit.export.onnx_export import export_onnx
        from mobilekit.export.runtimes import OnnxModel

        export_onnx(module, path, input_nchw, exporter=ONNX_EXPORTER)
        output = OnnxModel(path).run(sample)
    elif runtime == "tflite":
        with _quiet_native_stderr():  # TensorFlow logs a dozen C++ lines per converted model
            import keras

            from mobilekit.export.runtimes import TfliteModel
            from mobilekit.export.tflite_export import export_tflite

            if precision == "int8":
                rng = np.random.default_rng(_seed(key) + 2)
                calibration = rng.standard_normal((INT8_CALIBRATION_SAMPLES, *input_nchw[1:])).astype(np.float32)
                export_tflite(keras_factory(), path, int8=True, representative=calibration.transpose(0, 2, 3, 1))
            else:
                export_tflite(keras_factory(), path)
            keras.backend.clear_session()  # a table converts ~120 models: keep Keras' global state small
            output = TfliteModel(path).run(sample.transpose(0, 2, 3, 1))
        if reference.ndim == 4:
            reference = reference.transpose(0, 2, 3, 1)
    else:
        raise ExportError(f"unknown runtime {runtime!r}: use 'tflite' or 'onnx'")
    diff = _check_output(path, output, reference, precision)
    elapsed = time.perf_counter() - started
    _write_json(record, {"key": key, "runtime": runtime, "precision": precision, "file_format": FILE_FORMAT,
                         "mobilekit": __version__, "max_abs_diff": diff, "export_s": round(elapsed, 3)})
    return diff


@contextlib.contextmanager
def _quiet_native_stderr():
    """Send what native code writes to file descriptor 2 elsewhere (Python exceptions still propagate)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters): nothing to silence
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _check_output(path: Path, output: np.ndarray, reference: np.ndarray, precision: str = "float32") -> float:
    def reject(reason: str) -> ExportError:
        safewrite.remove(path)  # mobilekit just wrote it
        return ExportError(f"{path.name}: {reason}; the file was deleted (a broken conversion must not be measured)")

    if output.shape != reference.shape:
        raise reject(f"output shape {output.shape} differs from PyTorch's {reference.shape}")
    if not np.all(np.isfinite(output)):
        raise reject("the converted model outputs NaN or inf")
    diff = float(np.abs(output - reference).max())
    if precision == "int8":
        error = float(np.sqrt(np.mean((output - reference) ** 2)))
        scale = float(np.sqrt(np.mean(reference ** 2)))
        if error > INT8_TOLERANCE * scale:
            raise reject(f"int8 output differs from PyTorch by {error / max(scale, 1e-12):.0%} RMS (limit "
                         f"{INT8_TOLERANCE:.0%}): the quantized conversion is broken")
        return diff
    limit = CHECK_TOLERANCE * (1.0 + float(np.abs(reference).max()))
    if diff > limit:
        raise reject(f"output differs from PyTorch by {diff:.3g} (limit {limit:.3g}): weights were lost or changed "
                     "in conversion")
    return diff


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".check.json")


def _write_json(path: Path, data: dict) -> None:
    write_json_atomic(path, data, indent=1)


def is_checked(path: str | Path, runtime: str | None = None) -> bool:
    """True if ``path`` exists and passed its check with the current way of building files."""
    path = Path(path)
    try:
        record = json.loads(_record_path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (path.is_file() and record.get("file_format") == FILE_FORMAT
            and (runtime is None or record.get("runtime") == runtime))


# ---- public exporters -----------------------------------------------------------------------------------------
def export_layer_file(spec: LayerSpec, runtime: str, path: str | Path) -> Path:
    """Write one layer position alone, input (1, in_channels, H, W) as that position sees it, to ``path``
    (``runtime`` ``"tflite"``: NHWC float32; ``"onnx"``: NCHW) and check it against PyTorch.

    Raises:
        ArchitectureError: ``spec`` is a skip (it has no file).
        ExportError: conversion failed or the file does not compute what PyTorch computes.
    """
    key = layer_key(spec)
    _export_checked(_layer_parts(spec, _seed(key)), runtime, Path(path), key)
    return Path(path)


def export_stem_file(space: SearchSpace, runtime: str, path: str | Path) -> Path:
    """Write the stem, (1, 3, R, R) -> (1, stem_channels, R/2, R/2), to ``path`` and check it."""
    key = stem_key(space)
    _export_checked(_stem_parts(space, _seed(key)), runtime, Path(path), key)
    return Path(path)


def export_head_file(space: SearchSpace, runtime: str, path: str | Path) -> Path:
    """Write the head (1x1 conv, pooling, classifier) on the last position's output to ``path`` and check it."""
    key = head_key(space)
    _export_checked(_head_parts(space, _seed(key)), runtime, Path(path), key)
    return Path(path)


def export_network_file(arch: Architecture, out_dir: str | Path, runtime: str) -> Path:
    """The whole network of ``arch`` with random weights as one checked file in ``out_dir`` (reused when the
    same architecture, space and runtime were exported there before). Input (1, 3, R, R) NCHW for ONNX,
    (1, R, R, 3) NHWC for TFLite; output (1, num_classes) logits."""
    return ModelFileCache(out_dir, runtime).network(arch).path


class ModelFileCache:
    """Checked model files in ``work_dir``, one per content key (see the module docstring)."""

    def __init__(self, work_dir: str | Path, runtime: str, precision: str = "float32") -> None:
        self.work_dir = Path(work_dir).expanduser()
        self.runtime = runtime
        self.suffix = _suffix(runtime)
        self.precision = check_precision(precision, runtime)

    def path_for(self, key: str) -> Path:
        tag = "" if self.precision == "float32" else f"-{self.precision}"
        return self.work_dir / f"{key}{tag}{self.suffix}"

    def has(self, key: str) -> bool:
        """True if the checked file of ``key`` is already in the work folder."""
        return is_checked(self.path_for(key), self.runtime)

    def layer(self, spec: LayerSpec) -> ModelFile:
        key = layer_key(spec)
        return self._get(key, lambda: _layer_parts(spec, _seed(key)))

    def stem(self, space: SearchSpace) -> ModelFile:
        key = stem_key(space)
        return self._get(key, lambda: _stem_parts(space, _seed(key)))

    def head(self, space: SearchSpace) -> ModelFile:
        key = head_key(space)
        return self._get(key, lambda: _head_parts(space, _seed(key)))

    def network(self, arch: Architecture) -> ModelFile:
        key = network_key(arch)
        return self._get(key, lambda: _network_parts(arch, _seed(key)))

    def _get(self, key: str, parts: Callable) -> ModelFile:
        path = self.path_for(key)
        if is_checked(path, self.runtime):
            return ModelFile(path, 0.0, True)
        started = time.perf_counter()
        _export_checked(parts(), self.runtime, path, key, self.precision)
        return ModelFile(path, time.perf_counter() - started, False)


def check_precision(precision: str, runtime: str) -> str:
    """``precision`` if it is one this runtime's files can have.

    Raises:
        ConfigError: an unknown precision, or int8 for ONNX files.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is unknown: use one of {', '.join(PRECISIONS)}")
    if precision == "int8" and runtime != "tflite":
        raise ConfigError(f"precision 'int8' needs runtime 'tflite' (full-integer TFLite files), the device runs "
                          f"{runtime!r}; use --precision float32 or a TFLite device")
    return precision


def default_work_dir() -> Path:
    """Where profiles keep their model files: ``$MOBILEKIT_CACHE`` or ``~/.cache/mobilekit`` + ``/model-files``,
    created if missing.

    Raises:
        ConfigError: that folder cannot be used (a file is in the way, it is read-only): one line naming the
            path, the variable it came from and the fix.
    """
    if os.environ.get("MOBILEKIT_CACHE"):
        base, source = Path(os.environ["MOBILEKIT_CACHE"]), "MOBILEKIT_CACHE"
    elif os.environ.get("XDG_CACHE_HOME"):
        base, source = Path(os.environ["XDG_CACHE_HOME"]) / "mobilekit", "XDG_CACHE_HOME"
    else:
        base, source = Path(os.path.expanduser("~/.cache")) / "mobilekit", "HOME"
    folder = base / "model-files"
    fix = "set MOBILEKIT_CACHE to a writable folder, or pass --work-dir"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"model cache {folder} (from {source}): a file is in the way of the folder; {fix}") from None
    except OSError as exc:
        raise ConfigError(f"model cache {folder} (from {source}): cannot create it ({os_error_reason(exc)}); "
                          f"{fix}") from None
    if not folder.is_dir():
        raise ConfigError(f"model cache {folder} (from {source}): is not a folder; {fix}")
    failure = write_probe(folder)  # a real write: os.access says yes to root on a read-only mount
    if failure is not None:
        raise ConfigError(f"model cache {folder} (from {source}): not writable ({os_error_reason(failure)}); "
                          f"{fix}")
    return folder
