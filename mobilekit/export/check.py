"""``mobilekit check FILE --data SPEC``: the accuracy of an exported file on labelled images, its confusion
matrix, and (given PyTorch weights) its agreement with them.

The file is fed as ``model.json`` beside it (or the one named) says: its resolution is the file's own input
shape, the images are normalized with ``model.json``'s mean / std, ONNX NCHW, TFLite NHWC (int8 through its
quantization parameters). Nothing is guessed: a file without a ``model.json`` is refused with one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mobilekit.errors import ExportError
from mobilekit.export.runtimes import OnnxModel, TfliteModel, load_model_file
from mobilekit.export.scoring import predictions, stratified_subset

SPLITS = ("test", "val", "train")


@dataclass
class CheckResult:
    """Accuracy of ``file`` on ``images`` images of ``data``'s ``split`` at ``resolution`` px;
    ``confusion[true, predicted]`` counts; ``pytorch_accuracy`` / ``agreement`` when weights were given."""

    file: str
    data: str
    split: str
    images: int
    resolution: int
    accuracy: float
    class_names: list[str]
    confusion: list[list[int]]
    pytorch_accuracy: float | None = None
    agreement: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def read_model_json(model_file: Path, model_json: str | Path | None = None) -> dict:
    """``model.json`` beside ``model_file`` (or ``model_json``), checked for the fields scoring needs."""
    path = Path(model_json) if model_json else model_file.parent / "model.json"
    if not path.is_file():
        raise ExportError(f"{model_file}: no model.json beside it to say how its inputs are normalized; pass "
                          "--model-json PATH (the one `mobilekit export` wrote with it)")
    try:
        info = json.loads(path.read_text())
        mean, std = [float(v) for v in info["mean"]], [float(v) for v in info["std"]]
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError("mean and std need 3 values, std > 0")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{path}: not a mobilekit model.json ({exc}); export the model again") from None
    return info


def check_on_data(model_file: str | Path, data: str, split: str = "test", seed: int = 0, images: int | None = None,
                  model_json: str | Path | None = None, weights: str | Path | None = None,
                  threads: int = 1) -> CheckResult:
    """Score ``model_file`` on ``data``'s ``split`` (seeded like a search with ``seed``; ``images``: a stratified
    subset), optionally beside the PyTorch network of ``model.json``'s architecture with ``weights``.

    Raises:
        ExportError: no / bad model.json, a class count that differs from the data's, weights that do not fit.
        DataError: a bad data spec.
    """
    from mobilekit.data import load_dataset

    if split not in SPLITS:
        raise ExportError(f"split {split!r} is unknown; use {', '.join(SPLITS)}")
    path = Path(model_file)
    model = load_model_file(path, threads)
    info = read_model_json(path, model_json)
    shape = model.input_shape
    resolution = shape[2] if isinstance(model, OnnxModel) else shape[1]
    splits = load_dataset(data, resolution=max(8, min(resolution, 32)), seed=seed)
    notes = []
    classes = int(info.get("num_classes") or splits.num_classes)
    if classes != splits.num_classes:
        raise ExportError(f"{path}: the model has {classes} classes, --data {data} has {splits.num_classes}; "
                          "pass the data set it was trained on")
    names = info.get("class_names")
    if names and list(names) != list(splits.class_names):
        notes.append(f"class names differ: model.json {list(names)[:5]}..., data {list(splits.class_names)[:5]}...; "
                     "outputs are compared by index")
    dataset = _split_at(splits, split, resolution, info["mean"], info["std"], data, seed)
    dataset = stratified_subset(dataset, images, seed)
    predicted, labels = predictions(model, dataset)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    result = CheckResult(str(path), splits.name, split, len(labels), resolution, float((predicted == labels).mean()),
                         list(names or splits.class_names), confusion.tolist(), notes=notes)
    if weights is not None:
        reference = _pytorch_twin(info, resolution, weights)
        torch_predicted, _ = predictions(reference, dataset)
        result.pytorch_accuracy = float((torch_predicted == labels).mean())
        result.agreement = float((torch_predicted == predicted).mean())
    return result


def _split_at(splits, split: str, resolution: int, mean, std, data: str, seed: int):
    """The ``split`` of ``data`` at ``resolution`` px, normalized with ``mean`` / ``std``: the test split is
    resized from its sources on access; val / train are loaded at that resolution (in memory) and re-normalized."""
    if split == "test":
        return splits.test_at(resolution, mean, std)
    from mobilekit.data import load_dataset

    full = load_dataset(data, resolution=resolution, seed=seed)
    return Renormalized(getattr(full, split), full.mean, full.std, mean, std)


class Renormalized(torch.utils.data.Dataset):
    """``dataset``'s images normalized with ``mean`` / ``std`` instead of its own ``old_mean`` / ``old_std``."""

    def __init__(self, dataset, old_mean, old_std, mean, std) -> None:
        def column(values):
            return torch.tensor(tuple(values), dtype=torch.float32)[:, None, None]

        self.dataset, self.old_mean, self.old_std = dataset, column(old_mean), column(old_std)
        self.mean, self.std = column(mean), column(std)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return (image * self.old_std + self.old_mean - self.mean) / self.std, label


def _pytorch_twin(info: dict, resolution: int, weights: str | Path) -> torch.nn.Module:
    from mobilekit.export.pipeline import load_weights
    from mobilekit.models import build_torch_model
    from mobilekit.space import Architecture, get_space

    try:
        arch = Architecture.from_dict(info["architecture"])
    except Exception as exc:  # noqa: BLE001 - any failure means model.json lacks a usable architecture
        raise ExportError(f"model.json: no usable architecture to build the PyTorch network for --weights ({exc})") \
            from None
    described = arch.space.describe()
    space = get_space(described["name"], width=described["width"], resolution=resolution,
                      num_classes=described["num_classes"])
    return load_weights(build_torch_model(arch.with_space(space)), weights).eval()


def plot_confusion(result: CheckResult, path: str | Path) -> Path:
    """The confusion matrix (rows: true class, columns: predicted), counts in the cells, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mobilekit import safewrite

    matrix = np.asarray(result.confusion)
    n = len(matrix)
    size = min(12.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    labels = [str(name)[:14] for name in result.class_names]
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{Path(result.file).name} on {result.data} {result.split} ({result.images} images, "
                 f"{result.resolution} px): accuracy {result.accuracy:.3f}", fontsize=9)
    fig.tight_layout()
    try:
        return safewrite.save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
