"""Accuracy of the exported files themselves: each file is run (onnxruntime / the LiteRT interpreter) on
labelled images at its own resolution, so the accuracy a run reports is the accuracy of what is deployed.

The int8 file is also compared with the float model on the same images (top-1 agreement): with the float
TFLite file when it was exported, else the ONNX file, else the PyTorch network at the deployed resolution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from mobilekit.export.runtimes import OnnxModel, TfliteModel, load_model_file

#: which float file an int8 file is compared with, first present wins (then PyTorch)
FLOAT_REFERENCES = ("tflite", "onnx", "pytorch")


@dataclass(frozen=True)
class FileScore:
    """Top-1 accuracy of one model on ``images`` labelled images at ``resolution`` x ``resolution`` pixels.
    ``agreement`` (int8 files): share of those images on which its top-1 class equals ``agreement_with``'s."""

    format: str
    file: str | None
    accuracy: float
    images: int
    resolution: int
    agreement: float | None = None
    agreement_with: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("file",)}

    def line(self) -> str:
        where = self.file or "PyTorch"
        text = f"{where}: test accuracy {self.accuracy:.4f} on {self.images} images at {self.resolution}x{self.resolution}"
        if self.agreement is not None:
            text += f"; top-1 agreement with {self.agreement_with} {self.agreement:.1%} on the same images"
        return text


def labels_of(dataset: Dataset) -> np.ndarray:
    """The int labels of a data set of (image, label) pairs, in order (read from ``labels`` or ``tensors``
    when the data set has them, so no image is opened)."""
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[np.asarray(dataset.indices)]
    if hasattr(dataset, "dataset"):         # a wrapper that keeps its data set's order (e.g. re-normalized)
        return labels_of(dataset.dataset)
    if hasattr(dataset, "labels"):
        return np.asarray(dataset.labels, dtype=np.int64)
    if hasattr(dataset, "tensors"):
        return dataset.tensors[1].numpy().astype(np.int64)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def stratified_subset(dataset: Dataset, count: int | None, seed: int = 0) -> Dataset:
    """``count`` images of ``dataset`` drawn stratified by label with ``seed`` (all of them when ``count`` is None
    or at least its size)."""
    if count is None or count >= len(dataset):
        return dataset
    from mobilekit.data.datasets import _stratified_subset

    labels = labels_of(dataset)
    return Subset(dataset, [int(i) for i in _stratified_subset(np.arange(len(labels)), labels, count, seed,
                                                                "the scored images")])


def _batches(dataset: Dataset, batch_size: int = 32) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield (torch.stack([x for x, _ in items]).numpy().astype(np.float32),
               np.asarray([int(y) for _, y in items], dtype=np.int64))


def predictions(model: OnnxModel | TfliteModel | torch.nn.Module, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 predictions (N,), labels (N,)) of ``model`` on ``dataset``'s (3, R, R) normalized images: NCHW for
    ONNX and PyTorch, transposed to NHWC for TFLite."""
    predicted, labels = [], []
    for x, y in _batches(dataset):
        if isinstance(model, torch.nn.Module):
            with torch.no_grad():
                out = model.eval()(torch.from_numpy(x)).numpy()
        elif isinstance(model, TfliteModel):
            out = model.run(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        else:
            out = model.run(x)
        predicted.append(out.argmax(1))
        labels.append(y)
    return np.concatenate(predicted), np.concatenate(labels)


def score_files(files: Mapping[str, str | Path], dataset: Dataset, model: torch.nn.Module | None = None,
                threads: int = 1) -> dict[str, FileScore]:
    """Score every exported file (``files[format]`` paths) on ``dataset`` (images already at the files'
    resolution, normalized as ``model.json`` says), and ``model`` (the PyTorch network at that resolution,
    key ``"pytorch"``) when given. int8 files get their top-1 agreement with the float reference
    (:data:`FLOAT_REFERENCES`)."""
    if len(dataset) == 0:
        return {}
    resolution = int(dataset[0][0].shape[-1])
    preds: dict[str, np.ndarray] = {}
    labels = None
    runs: list[tuple[str, object, str | None]] = [(fmt, load_model_file(path, threads), Path(path).name)
                                                  for fmt, path in files.items()]
    if model is not None:
        runs.append(("pytorch", model, None))
    for fmt, runner, _ in runs:
        preds[fmt], labels = predictions(runner, dataset)
    scores = {}
    for fmt, _, name in runs:
        agreement = reference = None
        if fmt == "tflite-int8":
            reference = next((r for r in FLOAT_REFERENCES if r in preds), None)
            agreement = float((preds[fmt] == preds[reference]).mean()) if reference else None
        scores[fmt] = FileScore(fmt, name, float((preds[fmt] == labels).mean()), len(labels), resolution,
                                agreement, reference)
    return scores


def deliverable_format(scores: Mapping[str, FileScore], precision: str = "float32") -> str | None:
    """The file that is the deliverable: the int8 TFLite file for an int8 latency table, else the float TFLite
    file, else ONNX (the file whose latency the table predicts and the device measures)."""
    order = ("tflite-int8", "tflite", "onnx") if precision == "int8" else ("tflite", "onnx", "tflite-int8")
    return next((fmt for fmt in order if fmt in scores), None)
