"""Export a trained (or random) network to deployable files, verify each, and describe them in ``model.json``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mobilekit import __version__, safewrite
from mobilekit.errors import ExportError
from mobilekit.jsonio import write_json_atomic
from mobilekit.export.onnx_export import export_onnx
from mobilekit.export.runtimes import OnnxModel, TfliteModel
from mobilekit.export.scoring import FileScore, score_files
from mobilekit.export.tflite_metadata import LABELS_FILE, add_label_metadata, labels_text
from mobilekit.export.verify import ParityResult, check_parity, torch_outputs
from mobilekit.models.torch_builder import MobileNet, build_torch_model

FORMATS = ("onnx", "tflite", "tflite-int8")
FILE_NAMES = {"onnx": "model.onnx", "tflite": "model.tflite", "tflite-int8": "model_int8.tflite"}


@dataclass
class ExportReport:
    """What :func:`export_model` wrote: ``files[format]`` paths, ``checks[format]`` one-line verdicts."""

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    parity: dict[str, ParityResult] = field(default_factory=dict)
    quantization: dict[str, dict] = field(default_factory=dict)
    scores: dict[str, FileScore] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    evaluation: str | None = None
    model_json: Path | None = None


def at_resolution(model: MobileNet, resolution: int) -> MobileNet:
    """The same network and weights with a different input resolution (all layers are resolution-free)."""
    if resolution == model.arch.space.resolution:
        return model
    space = model.arch.space
    from mobilekit.space import get_space

    other = get_space(space.name, width=space.width, resolution=resolution, num_classes=space.num_classes)
    copy = build_torch_model(model.arch.with_space(other))
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def export_model(model: MobileNet, out_dir: str | Path, formats: Sequence[str] = ("onnx", "tflite"),
                 representative: np.ndarray | None = None, deploy_resolution: int | None = None,
                 mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
                 num_samples: int = 8, seed: int = 0, min_int8_agreement: float = 0.0,
                 class_names: Sequence[str] | None = None, evaluation: Dataset | None = None,
                 evaluation_name: str | None = None) -> ExportReport:
    """Export ``model`` to each of ``formats`` in ``out_dir`` and verify each file against PyTorch.

    Args:
        representative: (N, 3, H, W) float32 normalized inputs (as the PyTorch model takes them), used for int8
            calibration and as verification samples; random normal samples when None. Resized to the
            deployment resolution if needed.
        deploy_resolution: input resolution of the files (default: the architecture's own).
        mean, std: per-channel normalization the model expects, recorded in ``model.json``.
        class_names: the name of each output index in order (recorded in ``model.json``); None when unknown.
        evaluation: labelled images ((3, R, R) float32 at the deployment resolution, normalized with ``mean`` /
            ``std``, label) on which every written file is scored (:mod:`.scoring`), with the PyTorch network at
            the same resolution beside them; the accuracies go into the report and ``model.json``.
        evaluation_name: what ``evaluation`` is (e.g. ``digits test split (seed 0)``), for ``model.json``.

    Raises:
        ExportError: a conversion failed or a float file differs from PyTorch by more than 1e-4 x max(1, |max logit|) (the file is
            then renamed ``*.failed`` so nobody deploys it).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format {unknown[0]!r}: choose from {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    for name in [*(FILE_NAMES[f] for f in formats), *(FILE_NAMES[f] + ".failed" for f in formats), "model.json",
                 LABELS_FILE]:
        safewrite.claim(out_dir / name)  # never replace a file mobilekit did not write: refused before converting
    out_dir.mkdir(parents=True, exist_ok=True)
    model = at_resolution(model.eval(), deploy_resolution or model.arch.space.resolution)
    space = model.arch.space
    input_nchw = (1, space.in_channels, space.resolution, space.resolution)
    samples = _samples(representative, input_nchw, num_samples, seed)
    reference = torch_outputs(model, samples[:num_samples])
    report = ExportReport(out_dir)
    if class_names is not None:
        if len(class_names) != space.num_classes:
            raise ExportError(f"{len(class_names)} class names for a network with {space.num_classes} outputs; "
                              "pass the data the weights were trained on")
        safewrite.write_text(out_dir / LABELS_FILE, labels_text(class_names))
    keras_model = None
    for fmt in formats:
        path = out_dir / FILE_NAMES[fmt]
        if fmt == "onnx":
            export_onnx(model, path, input_nchw)
            exported: OnnxModel | TfliteModel = OnnxModel(path)
        else:
            if keras_model is None:
                from mobilekit.models.keras_builder import keras_model_from_torch

                keras_model = keras_model_from_torch(model)
            from mobilekit.export.tflite_export import export_tflite

            export_tflite(keras_model, path, int8=fmt == "tflite-int8", representative=samples.transpose(0, 2, 3, 1),
                          seed=seed)
            if class_names is not None:
                _add_metadata(path, class_names, mean, std, model)
                report.metadata[fmt] = (f"TFLite metadata: {LABELS_FILE} (TENSOR_AXIS_LABELS) on the output, RGB "
                                        "image input with NormalizationOptions (0-255 scale)")
            exported = TfliteModel(path)
        result = check_parity(fmt, exported, reference, samples[:num_samples], min_int8_agreement)
        if not result.passed:
            failed = path.with_suffix(path.suffix + ".failed")
            safewrite.rename(path, failed)  # a planted symlink, folder or user's file at the .failed name is refused
            raise ExportError(f"{failed}: {result.line()}; the file was kept for inspection but must not be deployed")
        report.files[fmt], report.checks[fmt], report.parity[fmt] = path, result.line(), result
        if isinstance(exported, TfliteModel) and exported.quantized:
            report.quantization[fmt] = quantization_parameters(exported)
    if evaluation is not None and len(evaluation):
        report.scores = score_files(report.files, evaluation, model=model)
        report.evaluation = evaluation_name or "labelled images"
    report.model_json = write_model_json(out_dir, model, report, mean, std, class_names)
    return report


def _add_metadata(path: Path, class_names: Sequence[str], mean: Sequence[float], std: Sequence[float],
                  model: MobileNet) -> None:
    """Rewrite the .tflite file at ``path`` with TFLite metadata and the zipped label file
    (:mod:`.tflite_metadata`)."""
    described = model.arch.space
    description = (f"mobilekit {described.name} network, {described.num_classes} classes, input "
                   f"{described.resolution}x{described.resolution} RGB; see model.json for the preprocessing")
    data = add_label_metadata(path.read_bytes(), class_names, mean, std, description, __version__)
    safewrite.write_bytes(path, data)


def quantization_parameters(model: TfliteModel) -> dict:
    """Input and output scale / zero point of an int8 TFLite file: ``real = scale * (q - zero_point)``; feed
    ``q = round(normalized / scale + zero_point)`` clipped to the dtype's range."""
    def one(details: dict) -> dict:
        scale, zero = details["quantization"]
        return {"dtype": np.dtype(details["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}

    return {"input": one(model.input), "output": one(model.output)}


def _samples(representative: np.ndarray | None, input_nchw: tuple[int, ...], count: int, seed: int) -> np.ndarray:
    if representative is None:
        return np.random.default_rng(seed).standard_normal((max(count, 64), *input_nchw[1:])).astype(np.float32)
    data = np.asarray(representative, dtype=np.float32)
    if data.ndim != 4 or data.shape[1] != input_nchw[1]:
        raise ExportError(f"representative data must be (N, {input_nchw[1]}, H, W) float32, got shape {data.shape}")
    if data.shape[2:] != input_nchw[2:]:
        data = torch.nn.functional.interpolate(torch.from_numpy(data), size=input_nchw[2:], mode="bilinear",
                                               align_corners=False).numpy()
    return data


PREPROCESSING = ("open the image, convert it to RGB (gray images are repeated on the 3 channels), resize it to "
                 "resolution x resolution with bilinear filtering (Pillow Image.BILINEAR), scale pixels to [0, 1] "
                 "(divide by 255), subtract mean and divide by std per channel (RGB order)")


def write_model_json(out_dir: Path, model: MobileNet, report: ExportReport, mean: Sequence[float],
                     std: Sequence[float], class_names: Sequence[str] | None = None) -> Path:
    """Describe the files beside them: architecture, input shape and layout, normalization, the preprocessing
    recipe, class names (output index order), checks, version."""
    if class_names is not None and len(class_names) != model.arch.space.num_classes:
        raise ExportError(f"{len(class_names)} class names for a network with {model.arch.space.num_classes} "
                          "outputs; pass the data the weights were trained on")
    space = model.arch.space
    path = out_dir / "model.json"
    info = json.loads(path.read_text()) if path.exists() else {}
    files = info.get("files", {}) if info.get("architecture") == model.arch.to_dict() else {}
    for fmt, file in report.files.items():
        nhwc = fmt.startswith("tflite")
        shape = [1, space.resolution, space.resolution, space.in_channels] if nhwc else \
            [1, space.in_channels, space.resolution, space.resolution]
        files[fmt] = {
            "file": file.name,
            "input_shape": shape,
            "layout": "NHWC" if nhwc else "NCHW",
            "input_dtype": "int8" if fmt == "tflite-int8" else "float32",
            "output": f"(1, {space.num_classes}) logits",
            "check": report.checks[fmt],
        }
        if fmt in report.quantization:
            files[fmt]["quantization"] = report.quantization[fmt]
        if fmt in report.scores:
            files[fmt]["test_accuracy"] = report.scores[fmt].to_dict()
        if fmt in report.metadata:
            files[fmt]["metadata"] = report.metadata[fmt]
    info = {
        "architecture": model.arch.to_dict(),
        "resolution": space.resolution,
        "num_classes": space.num_classes,
        "mean": list(map(float, mean)),
        "std": list(map(float, std)),
        "preprocessing": PREPROCESSING,
        "class_names": list(class_names) if class_names is not None else None,
        "labels_file": LABELS_FILE if class_names is not None else None,
        "files": files,
        "scored_on": report.evaluation if report.scores else info.get("scored_on"),
        "pytorch_test_accuracy": report.scores["pytorch"].to_dict() if "pytorch" in report.scores else None,
        "mobilekit_version": __version__,
    }
    return write_json_atomic(path, info)


def load_weights(model: MobileNet, weights: str | Path) -> MobileNet:
    """Load a ``state_dict`` saved with ``torch.save`` (read with ``weights_only=True``: tensors only, no code)."""
    path = Path(weights)
    if not path.is_file():
        raise ExportError(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"{path}: cannot read weights ({first[:160]}); expected a torch.save'd state_dict (the "
                          "file may be truncated)") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ExportError(f"{path}: not a state_dict (a mapping of parameter names to tensors, got "
                          f"{type(state).__name__}); save one with torch.save(model.state_dict(), path)")
    for name, tensor in state.items():  # a NaN/inf weight would export a model that outputs NaN
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise ExportError(f"{path}: tensor {name!r} holds NaN or inf values; export the weights of a run that "
                              "trained without diverging")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise ExportError(f"{path}: weights do not fit this architecture ({first}); pass the --arch they were "
                          "trained with") from None
    return model
