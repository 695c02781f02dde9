"""One fixed training recipe for judging an architecture alone: every architecture a comparison looks at (found
by any method, sampled by the random-search or depth-matched protocol, or a hand-designed reference) is trained
from scratch with exactly this, so no method wins through its own training schedule.

Two recipes (:data:`RECIPES`, ``mobilekit compare --recipe``), both AdamW with a one-cycle learning rate
(``torch.optim.lr_scheduler.OneCycleLR``, 30 % warm-up, cosine decay) peaking at 3e-3, batch 64, ``epochs``
passes over the train split shuffled by the seed, the network built with ``torch.manual_seed(seed)``:

* ``standard``: weight decay 0.05, random crop (4-pixel reflection padding) + horizontal flip, label smoothing
  0.1 -- the recipe measured on this machine to take the 20-layer demo network to 85.0 % on 10 000
  Fashion-MNIST images in 15 epochs (issue 26), a standard small-convnet recipe;
* ``legacy``: weight decay 1e-4, no augmentation, plain cross-entropy (the comparisons before it).

Training runs in the channels-last layout on the CPU (the faster one, :func:`mobilekit.search.engine.
auto_channels_last`; the same losses to float32 rounding).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from mobilekit.errors import ConfigError
from mobilekit.models.torch_builder import MobileNet
from mobilekit.search.engine import auto_channels_last
from mobilekit.search.training import augment, load_batches
from mobilekit.space import Architecture


@dataclass(frozen=True)
class Recipe:
    """The fixed retraining recipe. ``steps_per_epoch`` caps batches per epoch (tiny tests); None = all.
    ``augment``: a :func:`mobilekit.search.training.augment` policy; ``label_smoothing`` of the cross-entropy."""

    epochs: int = 4
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_share: float = 0.3
    steps_per_epoch: int | None = None
    name: str = "legacy"
    augment: str = "none"
    label_smoothing: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def named(cls, name: str, **settings) -> "Recipe":
        """The recipe ``name`` (:data:`RECIPES`) with ``settings`` (epochs, batch_size, steps_per_epoch)."""
        if name not in RECIPES:
            raise ConfigError(f"--recipe {name!r} is unknown; use one of {', '.join(RECIPES)}")
        return replace(RECIPES[name], **settings)


RECIPES: dict[str, Recipe] = {
    "standard": Recipe(name="standard", lr=3e-3, weight_decay=0.05, augment="crop-flip", label_smoothing=0.1),
    "legacy": Recipe(name="legacy", lr=3e-3, weight_decay=1e-4, augment="none", label_smoothing=0.0),
}


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` in eval mode on a data set of (image (3, R, R), label) pairs: a
    ``TensorDataset`` or a streamed one such as ``folder:`` data's ``ImageFolderSplit``."""
    model.eval()
    order = torch.arange(len(dataset))
    index = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    correct = sum(int((model(images).argmax(1) == labels).sum()) for images, labels in load_batches(dataset, index))
    return correct / max(1, len(dataset))


def retrain(arch: Architecture, train: Dataset, recipe: Recipe, seed: int,
            evaluate_on: dict[str, Dataset] | None = None) -> dict:
    """Train ``arch`` (in the training space: its resolution and classes match ``train``) from scratch with
    ``recipe``; returns ``{"train_s": seconds of training, "last_loss": cross-entropy of the last batch,
    "<name>_accuracy": ... for each of evaluate_on}``."""
    torch.manual_seed(seed)
    model = MobileNet(arch)
    layout = torch.channels_last if auto_channels_last(torch.device("cpu"), "off") else torch.contiguous_format
    model = model.to(memory_format=layout)
    per_epoch = max(1, len(train) // recipe.batch_size)
    if recipe.steps_per_epoch is not None:
        per_epoch = min(per_epoch, recipe.steps_per_epoch)
    total = recipe.epochs * per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total,
                                                   pct_start=recipe.warmup_share, anneal_strategy="cos")
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    model.train()
    step = 0
    for _ in range(recipe.epochs):
        order = torch.randperm(len(train), generator=generator)
        index = [order[i * recipe.batch_size:(i + 1) * recipe.batch_size] for i in range(per_epoch)]
        for images, labels in load_batches(train, index):    # slices a TensorDataset, streams folder: data
            images = augment(images, recipe.augment, seed * 1_000_003 + step).contiguous(memory_format=layout)
            loss = F.cross_entropy(model(images), labels, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
    out = {"train_s": round(time.perf_counter() - started, 2), "last_loss": float(loss.detach())}
    model = model.to(memory_format=torch.contiguous_format)
    for name, dataset in (evaluate_on or {}).items():
        out[f"{name}_accuracy"] = accuracy(model, dataset)
    return out
