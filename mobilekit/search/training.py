"""Training shared by the searchers: seeded batches (in-memory or streamed), the resumable phase loop with
``torch.optim`` optimisers and ``torch.optim.lr_scheduler`` schedules, augmentation, evaluation, BN
re-calibration.

A data set is either a ``TensorDataset`` (images held in memory, indexed directly) or any map-style ``Dataset``
of (image (3, R, R), label) pairs, read through a ``DataLoader`` with workers (e.g. ``folder:DIR``, decoded and
resized on the fly). Either way the batches of an epoch are the same seeded index lists, so a resumed run sees
the same order and skips straight to its step.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from mobilekit.interrupts import raise_if_stop_requested, stop_requested
from mobilekit.search.engine import Engine
from mobilekit.search.runfolder import RunFolder, damaged_checkpoint, pack, unpack
from mobilekit.space import SearchSpace

# True while a phase runs its per-epoch monitoring validation (metrics.jsonl's val_accuracy): the comparison's
# image counter leaves these passes out, like the final validation/test evaluation (compare/budget.py).
MONITORING: contextvars.ContextVar[bool] = contextvars.ContextVar("mobilekit_monitoring", default=False)


# ---- batches -------------------------------------------------------------------------------------------------------
def batches(dataset: Dataset, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Index batches of one epoch, shuffled by (seed, epoch) only, so a resumed run sees the same order."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(dataset), generator=gen)
    return [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)] or [order]


def batch_count(dataset: Dataset, batch_size: int) -> int:
    """How many batches :func:`batches` gives per epoch (full batches only; one short batch when the data set is
    smaller than one), without drawing an order."""
    return max(1, len(dataset) // batch_size)


def split_for_architecture(dataset: Dataset, seed: int, share: float = 0.2) -> tuple[Dataset, Dataset]:
    """(weight split, architecture split) of a training set, seeded."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    cut = max(2, int(len(order) * share))
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors
        return TensorDataset(x[order[cut:]], y[order[cut:]]), TensorDataset(x[order[:cut]], y[order[:cut]])
    if hasattr(dataset, "subset"):          # resized per batch (mobilekit.data.datasets.ResizedArraySplit)
        return dataset.subset(order[cut:]), dataset.subset(order[:cut])
    return Subset(dataset, order[cut:].tolist()), Subset(dataset, order[:cut].tolist())


def load_batches(dataset: Dataset, index_batches: Sequence[torch.Tensor], workers: int = 0
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images (B, 3, R, R), labels (B,)) of each index batch: sliced from a TensorDataset, resized together by a
    data set with a ``batch(index)`` method (in-memory images too large at R to hold resized), or read through a
    DataLoader with ``workers`` processes from any other map-style data set."""
    if isinstance(dataset, TensorDataset):
        images, labels = dataset.tensors
        for index in index_batches:
            yield images[index], labels[index]
        return
    if hasattr(dataset, "batch"):
        for index in index_batches:
            yield dataset.batch(index)
        return
    if not index_batches:
        return
    # its own generator: the loader's worker seed must not advance the global generator (resume stays exact)
    loader = DataLoader(dataset, batch_sampler=[b.tolist() for b in index_batches], num_workers=workers,
                        persistent_workers=False, generator=torch.Generator().manual_seed(0))
    yield from loader


def augment(x: torch.Tensor, policy: str, seed: int) -> torch.Tensor:
    """Augment a batch (B, 3, R, R) with a generator seeded by ``seed`` (so resume repeats it): ``none``,
    ``flip`` (horizontal, p = 0.5) or ``crop-flip`` (random crop of the 4-pixel reflection-padded image + flip)."""
    if policy == "none":
        return x
    gen = torch.Generator().manual_seed(seed)
    n, size = x.shape[0], x.shape[-1]
    if policy == "crop-flip":
        padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
        offsets = torch.randint(0, 9, (n, 2), generator=gen).tolist()
        x = torch.stack([padded[i, :, a:a + size, b:b + size] for i, (a, b) in enumerate(offsets)])
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


# ---- optimisers and schedules ----------------------------------------------------------------------------------------
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, lr, weight_decay: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay),
    "adamw": lambda params, lr, weight_decay: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay),
    "sgd": lambda params, lr, weight_decay: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True,
                                                            weight_decay=weight_decay),
}

SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]] = {
    "cosine": lambda opt, total: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total)),
    "linear": lambda opt, total: torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.0, total_iters=max(1, total)),
    "constant": lambda opt, total: torch.optim.lr_scheduler.ConstantLR(opt, 1.0, total_iters=0),
}


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """A registered optimiser (:data:`OPTIMIZERS`: adam, adamw, sgd with Nesterov momentum 0.9)."""
    return OPTIMIZERS[name](list(params), lr, weight_decay)


def schedule_factor(name: str, step: int, total_steps: int) -> float:
    """The multiplier of the base lr at ``step`` of ``total_steps`` under schedule ``name`` (what the
    :data:`SCHEDULES` schedulers apply: cosine ``(1 + cos(pi t / T)) / 2``, linear ``1 - t / T``, constant 1)."""
    total = max(1, total_steps)
    t = min(max(step, 0), total)
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t / total))
    if name == "linear":
        return 1.0 - t / total
    if name == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {name!r}; use one of {tuple(SCHEDULES)}")


def make_schedule(name: str, optimizer: torch.optim.Optimizer, total_steps: int,
                  stage_factors: Sequence[float] = ()) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step ``torch.optim.lr_scheduler`` schedule over ``total_steps`` (:data:`SCHEDULES`). With
    ``stage_factors`` (S multipliers of the base lr, e.g. searched by AutoHAS) a ``LambdaLR`` applying
    ``stage_factors[s]`` over the steps ``[s T / S, (s + 1) T / S)`` on top of schedule ``name``
    (:func:`schedule_factor`): piecewise constant with "constant", stage-scaled cosine with "cosine"."""
    if not stage_factors:
        return SCHEDULES[name](optimizer, total_steps)
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; use one of {tuple(SCHEDULES)}")
    factors, total = tuple(stage_factors), max(1, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: factors[min(len(factors) - 1, step * len(factors) // total)]
        * schedule_factor(name, step, total))


# ---- evaluation ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_metrics(model: nn.Module, dataset: Dataset, batch_size: int = 256, engine: Engine | None = None,
                     workers: int = 0) -> tuple[float, float]:
    """(top-1 accuracy 0..1, mean cross-entropy in nats per image) of ``model`` (eval mode) on a data set of
    (image (3, R, R), label) pairs; (nan, nan) for an empty one."""
    if len(dataset) == 0:
        return float("nan"), float("nan")
    engine = engine or Engine()
    was_training = model.training
    model.eval()
    order = torch.arange(len(dataset))
    correct, loss = 0, 0.0
    for x, y in load_batches(dataset, list(order.split(batch_size)), workers):
        x = x.to(engine.device)
        if engine.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with engine.autocast():
            logits = model(x)
        logits = logits.float().cpu()
        correct += int((logits.argmax(1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
    model.train(was_training)
    return correct / len(dataset), loss / len(dataset)


def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 256, engine: Engine | None = None,
             workers: int = 0) -> float:
    """Top-1 accuracy (0..1) of ``model`` (eval mode) on a data set of (image (3, R, R), label) pairs."""
    return evaluate_metrics(model, dataset, batch_size, engine, workers)[0]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, dataset: Dataset, batch_size: int = 64, steps: int = 20,
                          seed: int = 0, engine: Engine | None = None, workers: int = 0) -> None:
    """Recompute BN running statistics with the current weights (after a search changed the active subsets)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms:
        return
    engine = engine or Engine()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                                   # cumulative average over the batches below
    was_training = model.training
    model.train()
    for x, y in load_batches(dataset, batches(dataset, batch_size, seed, epoch=-1)[:steps], workers):
        x, _ = engine.batch(x, y)                          # this rank's share; BN statistics cover all ranks
        with engine.autocast():
            model(x)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.train(was_training)


# ---- monitoring without side effects ---------------------------------------------------------------------------------
@contextlib.contextmanager
def preserved_randomness(device: torch.device | None = None) -> Iterator[None]:
    """Run a block and put Python's, NumPy's and torch's generators (CPU, and ``device``'s when it is a CUDA
    device) back where they were: a monitoring pass (dropout in a BN recalibration, a sampled path) draws nothing
    from the training stream."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


@contextlib.contextmanager
def preserved_batchnorm(model: nn.Module) -> Iterator[None]:
    """Run a block (e.g. :func:`recalibrate_batchnorm`) and restore every BatchNorm's running statistics,
    batch count and momentum afterwards."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, {k: b.detach().clone() for k, b in m.named_buffers(recurse=False) if b is not None})
             for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (momentum, buffers) in zip(norms, saved):
                m.momentum = momentum
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)


@contextlib.contextmanager
def preserved_modes(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Run a block and give every submodule of ``modules`` its training flag back (train / eval per module)."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        yield
    finally:
        for m, training in saved:
            m.training = training


@contextlib.contextmanager
def single_process(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Run a block with the shard-aware layers of ``modules`` (:func:`~mobilekit.search.engine.shard_aware`) acting
    as in one process: a pass that only the writing rank makes (per-epoch monitoring) must not wait on the others'
    all-reduce."""
    saved = [(m, m.world_size) for module in modules for m in module.modules() if hasattr(m, "world_size")
             and isinstance(m, (nn.BatchNorm2d, nn.Dropout))]
    for m, _ in saved:
        m.world_size = 1
    try:
        yield
    finally:
        for m, world_size in saved:
            m.world_size = world_size


def local_engine(engine: Engine) -> Engine:
    """The engine's device and precision for one process alone (rank 0 of 1): batches are not split."""
    return dataclasses.replace(engine, rank=0, world_size=1, notes=[], scaler=None, owns_group=False)


# ---- what a searcher gets --------------------------------------------------------------------------------------------
@dataclass
class SearchContext:
    """What every searcher gets: the settings (common + ``config.method_options``), the latency model it asked
    for (``LATENCY_MODEL``), the data, the training space (the table's space at the training resolution, with the
    data's classes), the run folder and its latest checkpoint, the engine (device, precision, ranks), a progress
    bar (or None) and a per-step callback (or None)."""

    config: Any
    latency_model: Any
    splits: Any
    train_space: SearchSpace
    run: RunFolder
    checkpoint: tuple[dict, dict] | None = None
    progress: Any = None
    on_step: Callable[[dict[str, Any]], None] | None = None
    engine: Engine = field(default_factory=Engine)
    board: Any = None                          # a mobilekit.search.board.Board (TensorBoard), or None

    @property
    def options(self) -> Any:
        """The method's own options dataclass."""
        return self.config.method_options

    def phase_kwargs(self, name: str, dataset: Dataset | None = None, epochs: int | None = None) -> dict[str, Any]:
        cfg = self.config
        return dict(name=name, run=self.run, dataset=self.splits.train if dataset is None else dataset,
                    epochs=cfg.epochs if epochs is None else epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                    steps_per_epoch=cfg.steps_per_epoch, checkpoint_every=cfg.checkpoint_every,
                    progress=self.progress, on_step=self.on_step, engine=self.engine, augment=cfg.augment,
                    workers=cfg.workers, val_dataset=getattr(self.splits, "val", None), board=self.board)


@dataclass
class Phase:
    """One resumable training loop over epochs of a data set, checkpointed into a run folder.

    ``step`` is called once per batch with (epoch, global step, images, labels) -- this rank's share of the
    global batch, on the engine's device, augmented -- and returns the metrics record for that step.
    ``modules``, ``optimizers``, ``schedulers`` (stepped once after every step) and the JSON-able ``state`` dict
    are saved in every checkpoint (with the RNG states) and restored when the checkpoint belongs to this phase.
    """

    name: str
    run: RunFolder
    dataset: Dataset
    epochs: int
    batch_size: int
    seed: int
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    state: dict[str, Any] = field(default_factory=dict)
    steps_per_epoch: int | None = None
    checkpoint_every: int = 20
    progress: Any = None                       # a tqdm bar, mobilekit.progress.EpochLines, or None
    on_step: Callable[[dict[str, Any]], None] | None = None
    elapsed_s: float = 0.0
    engine: Engine = field(default_factory=Engine)
    augment: str = "none"
    workers: int = 0
    schedulers: dict[str, Any] = field(default_factory=dict)
    val_dataset: Dataset | None = None          # validated at the end of every epoch when set
    board: Any = None                           # TensorBoard writer (mobilekit.search.board.Board) or None
    _epoch_records: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)

    def monitor(self) -> dict[str, Any]:
        """What TensorBoard shows about the phase's state at an epoch's end besides its records (tag -> number,
        or str for text): by default how decided the searched layers of ``modules["net"]`` are
        (:func:`mobilekit.search.board.decision_scalars`); a phase adds its own (searched hyper-parameters,
        augmentation policy)."""
        from mobilekit.search.board import decision_scalars

        return decision_scalars(self.modules.get("net"))

    def validation_model(self) -> nn.Module | None:
        """The network whose top-1 accuracy and CE on ``val_dataset`` are recorded at each epoch's end (``None``:
        none). A plain training phase validates its ``model``; a search phase may override this, or
        :meth:`validation_network` when the network needs preparing."""
        return self.modules.get("model")

    @contextlib.contextmanager
    def validation_network(self) -> Iterator[nn.Module | None]:
        """The network to validate now, prepared, and undone afterwards (default: :meth:`validation_model` as it
        is). Runs inside :meth:`validate`'s guards: generators, training flags and shard-aware layers are put
        back whatever it does; what else it changes (BN statistics, an active path) it restores itself."""
        yield self.validation_model()

    def validate(self) -> dict[str, float] | None:
        """``{"val_accuracy": top-1 (0..1), "val_loss": mean CE (nats)}`` of :meth:`validation_network` on
        ``val_dataset``, or ``None`` without either. Monitoring only: no generator draw reaches the training
        stream, every module gets its training flag back, and the pass runs on this process alone."""
        if self.val_dataset is None or len(self.val_dataset) == 0:
            return None
        modules = list(self.modules.values())
        token = MONITORING.set(True)          # monitoring only: no decision of the method reads it
        try:
            with preserved_randomness(self.engine.device), preserved_modes(modules), single_process(modules), \
                    self.validation_network() as model:
                if model is None:
                    return None
                accuracy, loss = evaluate_metrics(model, self.val_dataset, engine=local_engine(self.engine),
                                                  workers=self.workers)
            return {"val_accuracy": accuracy, "val_loss": loss}
        finally:
            MONITORING.reset(token)

    @property
    def batches_per_epoch(self) -> int:
        n = batch_count(self.dataset, self.batch_size)
        return n if self.steps_per_epoch is None else min(n, self.steps_per_epoch)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.batches_per_epoch

    def schedule(self, name: str, optimizer: torch.optim.Optimizer, kind: str) -> None:
        """Attach a ``torch.optim.lr_scheduler`` schedule (:data:`SCHEDULES`) over this phase's steps."""
        self.schedulers[name] = make_schedule(kind, optimizer, self.total_steps)

    def restore(self, checkpoint: tuple[dict, dict] | None) -> int:
        """Load this phase's checkpoint if the run folder holds one; returns the step to continue from."""
        if checkpoint is None or checkpoint[1].get("phase") != self.name:
            return 0
        tensors, meta = checkpoint
        try:  # what a damaged file breaks here is one line, before the metrics log is touched
            unpack(tensors, meta, self.modules, self.optimizers)
            for name, scheduler in self.schedulers.items():
                scheduler.load_state_dict(meta["schedulers"][name])
            next_step = int(meta["next_step"])
            if next_step > self.total_steps:
                raise ValueError(f"next_step {next_step} is past this phase's {self.total_steps} steps")
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
            reason = " ".join(str(exc).split())[:200]
            raise damaged_checkpoint(self.run.checkpoint, f"it does not fit this run: {type(exc).__name__}: "
                                                          f"{reason}") from None
        self.state.update(meta.get("state", {}))
        self.elapsed_s = float(meta.get("elapsed_s", 0.0))
        if self.engine.is_writer:
            self.run.truncate_metrics(int(meta.get("records", 0)))
        return next_step

    def save(self, next_step: int, extra_meta: dict[str, Any] | None = None) -> None:
        if not self.engine.is_writer:
            return
        tensors, meta = pack(self.modules, self.optimizers)
        meta.update(phase=self.name, next_step=next_step, state=self.state, elapsed_s=self.elapsed_s,
                    schedulers={name: s.state_dict() for name, s in self.schedulers.items()}, **(extra_meta or {}))
        self.run.save_checkpoint(tensors, meta)

    def run_loop(self, start_step: int = 0, extra_meta: dict[str, Any] | None = None) -> None:
        per_epoch = self.batches_per_epoch
        step = start_step
        if self.progress is not None:
            self.progress.reset(total=self.total_steps)
            self.progress.set_description(self.name)
            self.progress.update(step)
        while step < self.total_steps:
            epoch, first = divmod(step, per_epoch)
            index_batches = batches(self.dataset, self.batch_size, self.seed, epoch)[first:per_epoch]
            for x, y in load_batches(self.dataset, index_batches, self.workers):
                started = time.perf_counter()
                x = augment(x, self.augment, self.seed * 1_000_003 + step)
                x, y = self.engine.batch(x, y)
                record = self.step(epoch, step, x, y)
                for scheduler in self.schedulers.values():
                    scheduler.step()
                self.elapsed_s += time.perf_counter() - started
                step += 1
                record = {"phase": self.name, "step": step - 1, "epoch": epoch, **record}
                if step % per_epoch == 0 and self.engine.is_writer:
                    validation = self.validate()       # the epoch's last record carries its validation figures
                    if validation is not None:
                        record.update(validation)
                        if self.progress is not None:
                            self.progress.set_postfix_str(f"{_postfix(self.progress)} val acc "
                                                          f"{validation['val_accuracy']:.3f} "
                                                          f"loss {validation['val_loss']:.3f}")
                if self.engine.is_writer:
                    self.run.log(record)
                    if self.board is not None:
                        self._epoch_records.append(record)
                        if step % per_epoch == 0:
                            self.board.epoch(self.name, step // per_epoch, self._epoch_records, self.monitor())
                            self._epoch_records = []
                if self.progress is not None:
                    self.progress.update(1)
                if self.on_step is not None:
                    self.on_step(record)
                if step % per_epoch == 0 and hasattr(self.progress, "end_epoch"):
                    self.progress.end_epoch(step // per_epoch, self.epochs)
                due = step % self.checkpoint_every == 0 or step % per_epoch == 0 or step == self.total_steps
                if due or stop_requested():
                    self.save(step, extra_meta)
                raise_if_stop_requested()          # Ctrl-C during this step: stop here, its work saved

    def step(self, epoch: int, step: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError


class TrainPhase(Phase):
    """Plain supervised training of a network with CE loss: optimiser, weight decay and learning-rate schedule
    from ``hyperparameters`` (a :class:`~mobilekit.search.outcome.TrainingHyperparameters`)."""

    def __init__(self, *, model: nn.Module, hyperparameters: Any, tags: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        hp = hyperparameters
        engine = kwargs.get("engine") or Engine()
        engine.place(model)
        optimizer = make_optimizer(hp.optimizer, model.parameters(), hp.lr, hp.weight_decay)
        super().__init__(modules={"model": model}, optimizers={"opt": optimizer}, **{**kwargs, "engine": engine,
                                                                                        "augment": hp.augment})
        self.schedulers["opt"] = make_schedule(hp.lr_schedule, optimizer, self.total_steps,
                                               getattr(hp, "lr_stage_factors", ()))
        self.model, self.optimizer = model, optimizer
        self.tags = tags or {}

    def step(self, epoch: int, step: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        self.model.train()
        with self.engine.autocast():
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.engine.backward(loss, self.model.parameters(), [self.optimizer])
        self.engine.step([self.optimizer])
        if self.progress is not None:
            self.progress.set_postfix_str(f"CE {loss.item():.3f}")
        return {"ce": loss.item(), "accuracy": float((logits.argmax(1) == y).float().mean()),
                "lr": self.optimizer.param_groups[0]["lr"], **self.tags}


def _postfix(progress: Any) -> str:
    """The postfix a progress display currently shows (tqdm keeps it with a leading ', ')."""
    text = getattr(progress, "postfix", "") or ""
    return str(text).lstrip(", ")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
