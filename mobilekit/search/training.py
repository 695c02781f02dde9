"""Training helpers shared by the searchers: seeded batches, the resumable phase loop, evaluation, BN
re-calibration and the training of a derived network."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from mobilekit.search.runfolder import RunFolder, pack, unpack
from mobilekit.space import Architecture, SearchSpace


def batches(dataset: TensorDataset, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Index batches of one epoch, shuffled by (seed, epoch) only, so a resumed run sees the same order."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(dataset), generator=gen)
    return [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)] or [order]


def cosine_lr(base_lr: float, step: int, total: int) -> float:
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


@torch.no_grad()
def evaluate(model: nn.Module, dataset: TensorDataset, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on a TensorDataset of (images (N, 3, R, R), labels (N,))."""
    if len(dataset) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    images, labels = dataset.tensors
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += int((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / len(images)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, dataset: TensorDataset, batch_size: int = 64, steps: int = 20,
                          seed: int = 0) -> None:
    """Recompute BN running statistics with the current weights (after a search changed the active subsets)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                                   # cumulative average over the batches below
    was_training = model.training
    model.train()
    images = dataset.tensors[0]
    for index in batches(dataset, batch_size, seed, epoch=-1)[:steps]:
        model(images[index])
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.train(was_training)


@dataclass
class SearchContext:
    """What every searcher gets: the settings, the runtime model of the table, the data, the training space
    (the table's space at the training resolution, with the data's classes), the run folder and its latest
    checkpoint, a progress bar (or None) and a per-step callback (or None)."""

    config: Any
    runtime: Any
    splits: Any
    train_space: SearchSpace
    run: RunFolder
    checkpoint: tuple[dict, dict] | None = None
    progress: Any = None
    on_step: Callable[[dict[str, Any]], None] | None = None

    def phase_kwargs(self, name: str, dataset: TensorDataset | None = None, epochs: int | None = None) -> dict[str, Any]:
        cfg = self.config
        return dict(name=name, run=self.run, dataset=self.splits.train if dataset is None else dataset,
                    epochs=cfg.epochs if epochs is None else epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                    steps_per_epoch=cfg.steps_per_epoch, checkpoint_every=cfg.checkpoint_every,
                    progress=self.progress, on_step=self.on_step)


@dataclass
class SearchOutcome:
    """A searcher's result: the architecture (inside the latency window when repair could do it), the network
    with the weights the search trained (for ``final_init = "inherit"``), and facts for the summary.
    ``recalibrate_bn``: the network's BN statistics come from a supernet and must be recomputed."""

    arch: Architecture
    model: nn.Module
    search_s: float
    info: dict[str, Any] = field(default_factory=dict)
    recalibrate_bn: bool = True


@dataclass
class Phase:
    """One resumable training loop over epochs of a TensorDataset, checkpointed into a run folder.

    ``step`` is called once per batch with (epoch, global step, images, labels) and returns the metrics record
    for that step. ``modules``/``optimizers`` and the JSON-able ``state`` dict are saved in every checkpoint and
    restored when the run folder's checkpoint belongs to this phase.
    """

    name: str
    run: RunFolder
    dataset: TensorDataset
    epochs: int
    batch_size: int
    seed: int
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    state: dict[str, Any] = field(default_factory=dict)
    steps_per_epoch: int | None = None
    checkpoint_every: int = 20
    progress: Any = None                       # a tqdm bar (or None)
    on_step: Callable[[dict[str, Any]], None] | None = None
    elapsed_s: float = 0.0

    @property
    def batches_per_epoch(self) -> int:
        n = len(batches(self.dataset, self.batch_size, self.seed, 0))
        return n if self.steps_per_epoch is None else min(n, self.steps_per_epoch)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.batches_per_epoch

    def restore(self, checkpoint: tuple[dict, dict] | None) -> int:
        """Load this phase's checkpoint if the run folder holds one; returns the step to continue from."""
        if checkpoint is None or checkpoint[1].get("phase") != self.name:
            return 0
        tensors, meta = checkpoint
        unpack(tensors, meta, self.modules, self.optimizers)
        self.state.update(meta.get("state", {}))
        self.elapsed_s = float(meta.get("elapsed_s", 0.0))
        self.run.truncate_metrics(int(meta.get("records", 0)))
        return int(meta["next_step"])

    def save(self, next_step: int, extra_meta: dict[str, Any] | None = None) -> None:
        tensors, meta = pack(self.modules, self.optimizers)
        meta.update(phase=self.name, next_step=next_step, state=self.state, elapsed_s=self.elapsed_s,
                    **(extra_meta or {}))
        self.run.save_checkpoint(tensors, meta)

    def run_loop(self, start_step: int = 0, extra_meta: dict[str, Any] | None = None) -> None:
        per_epoch = self.batches_per_epoch
        step = start_step
        if self.progress is not None:
            self.progress.reset(total=self.total_steps)
            self.progress.set_description(self.name)
            self.progress.update(step)
        images, labels = self.dataset.tensors
        while step < self.total_steps:
            epoch, index = divmod(step, per_epoch)
            batch = batches(self.dataset, self.batch_size, self.seed, epoch)[index]
            started = time.perf_counter()
            record = self.step(epoch, step, images[batch], labels[batch])
            self.elapsed_s += time.perf_counter() - started
            step += 1
            record = {"phase": self.name, "step": step - 1, "epoch": epoch, **record}
            self.run.log(record)
            if self.progress is not None:
                self.progress.update(1)
            if self.on_step is not None:
                self.on_step(record)
            if step % self.checkpoint_every == 0 or step % per_epoch == 0 or step == self.total_steps:
                self.save(step, extra_meta)

    def step(self, epoch: int, step: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError


class TrainPhase(Phase):
    """Plain supervised training of a network: Adam, cosine learning rate, CE loss."""

    def __init__(self, *, model: nn.Module, lr: float, tags: dict[str, Any] | None = None, **kwargs: Any) -> None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        super().__init__(modules={"model": model}, optimizers={"opt": optimizer}, **kwargs)
        self.model, self.optimizer, self.lr = model, optimizer, lr
        self.tags = tags or {}

    def step(self, epoch: int, step: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        for group in self.optimizer.param_groups:
            group["lr"] = cosine_lr(self.lr, step, self.total_steps)
        self.model.train()
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.progress is not None:
            self.progress.set_postfix_str(f"CE {loss.item():.3f}")
        return {"ce": loss.item(), "accuracy": float((logits.argmax(1) == y).float().mean()), **self.tags}
