"""Live tracking of a run with TensorBoard: event files (``torch.utils.tensorboard.SummaryWriter``) in
``RUN/tensorboard/``, watched with ``tensorboard --logdir RUN`` (or the folder above several runs: a comparison's
or a study's output folder) while the run goes on.

One writer per run folder, written once per epoch (and flushed then), so a step costs nothing. At the end of
every epoch of every phase (``search``, ``final``, ``proxy-N``) :class:`Board` writes, with the epoch (1-based) as
the step:

- ``PHASE/KEY`` for every number of the epoch's ``metrics.jsonl`` records: the mean over the epoch for the
  training ``ce``, ``accuracy`` and ``val_ce`` of the batches, the epoch's last value for the rest
  (``val_accuracy``, ``val_loss``, ``runtime_ms`` = R, ``runtime_hard_ms``, ``lambda``, ``lr``, ``weight_decay``,
  ``tau`` ...);
  a short list of numbers (AutoHAS's ``lr_stages``) as ``PHASE/KEY/I``;
- what the phase reports about its decisions (:meth:`mobilekit.search.training.Phase.monitor`, see
  :func:`decision_scalars`): per searchable layer the choice entropy (nats) and margin (top-1 minus top-2
  probability) of a categorical searcher, the threshold margins ``stat - t`` of Single-Path NAS; DiffAutoML's
  augmentation policy (every operation's probability, and its top transformations as text);
- ``PHASE/architecture``: the architecture plot (``architecture.png``'s figure) of the phase's current network,
  when it changed since the last plot, as long as drawing takes at most :data:`IMAGE_SHARE` of the run's time so
  far (the first plot is always drawn: a plot costs about 0.3 s of matplotlib, more than a tiny epoch).

At the start the run's settings go in as text (``config``), at the end the summary (``summary``) and the final
training's hyper-parameters. A resumed run appends a new event file to the same folder; an epoch cut by the
interruption is averaged over the steps after the resume.
"""

from __future__ import annotations

import json
import math
import sys
import time
import types
from pathlib import Path
from typing import Any, Iterable

import torch

SUBFOLDER = "tensorboard"
MEAN_KEYS = frozenset({"ce", "accuracy", "val_ce", "arch_ce"})   # batch figures: averaged over the epoch
SKIP_KEYS = frozenset({"step", "epoch"})
MAX_LIST = 8                                                   # longer lists of numbers are left to the phase
IMAGE_SHARE = 0.1                                              # at most this share of the wall time on plots


def board_folder(run_root: str | Path) -> Path:
    """Where a run folder's event files go."""
    return Path(run_root) / SUBFOLDER


def logdir_line(folder: str | Path) -> str:
    """The command that shows the live curves of the runs under ``folder``."""
    return f"live curves: tensorboard --logdir {folder}"


def _summary_writer():
    """``torch.utils.tensorboard.SummaryWriter`` without importing TensorFlow: tensorboard looks for TensorFlow
    unless ``tensorboard.compat.notf`` exists, and importing it costs seconds and start-up messages. Writing
    event files needs only tensorboard's own stub."""
    if "tensorflow" not in sys.modules and "tensorboard.compat.notf" not in sys.modules:
        sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


class Board:
    """The event-file writer of one run folder (see the module docstring). ``space`` (the training space) and
    ``latency_model`` (its ``type_ms``) draw the architecture plot; without them no image is written."""

    def __init__(self, run_root: str | Path, space: Any = None, latency_model: Any = None) -> None:
        self.folder = board_folder(run_root)
        self.space, self.latency_model = space, latency_model
        self.writer = _summary_writer()(log_dir=str(self.folder), flush_secs=3600, max_queue=100_000)
        self.opened = time.perf_counter()
        self.image_s = 0.0                                      # wall time spent drawing plots (s)
        self.images = 0
        self.last_arch: str | None = None

    # ---- per epoch ---------------------------------------------------------------------------------------------
    def epoch(self, phase: str, epoch: int, records: list[dict[str, Any]], monitor: dict[str, Any] | None = None,
              arch: Any = None) -> None:
        """Write epoch ``epoch`` (1-based) of ``phase``: the scalars of its ``records`` (see the module docstring),
        ``monitor`` (tag under ``phase/`` -> number, or str for text) and the plot of ``arch`` (an Architecture or
        a block string in the training space; default: the last record's ``arch``); then flush."""
        for tag, value in epoch_scalars(records).items():
            self.writer.add_scalar(f"{phase}/{tag}", value, epoch)
        for tag, value in (monitor or {}).items():
            if isinstance(value, str):
                self.writer.add_text(f"{phase}/{tag}", value, epoch)
            elif value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(f"{phase}/{tag}", float(value), epoch)
        if arch is None and records and isinstance(records[-1].get("arch"), str):
            arch = records[-1]["arch"]
        if arch is not None:
            self.architecture(f"{phase}/architecture", arch, epoch)
        self.writer.flush()

    def image_due(self, arch_string: str) -> bool:
        """Whether to plot ``arch_string`` now: the first plot always; later ones when the architecture changed
        and the plots so far took at most :data:`IMAGE_SHARE` of the time since the board opened."""
        if self.images == 0:
            return True
        return (arch_string != self.last_arch
                and self.image_s <= IMAGE_SHARE * (time.perf_counter() - self.opened))

    def architecture(self, tag: str, arch: Any, step: int) -> bool:
        """The architecture plot of ``arch`` (Architecture or block string) as an image, when
        :meth:`image_due`; returns whether it was drawn."""
        if self.space is None or self.latency_model is None:
            return False
        from mobilekit.space import Architecture

        text = arch if isinstance(arch, str) else arch.to_string()
        if not self.image_due(text):
            return False
        started = time.perf_counter()
        from mobilekit.search.plots import architecture_figure

        if isinstance(arch, str):
            arch = Architecture.from_string(self.space, arch)
        layer_ms = [self.latency_model.type_ms(s.index, s.op) if s.position.searchable else None
                    for s in arch.layers()]
        predicted = self.latency_model.lookup_ms(arch)
        figure = architecture_figure(arch, layer_ms, title=f"step {step}: predicted {predicted:.2f} ms")
        self.writer.add_figure(tag, figure, step, close=True)
        self.images += 1
        self.last_arch = text
        self.image_s += time.perf_counter() - started
        return True

    # ---- once per run ------------------------------------------------------------------------------------------
    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)
        self.writer.flush()

    def json_text(self, tag: str, data: Any, step: int = 0) -> None:
        """``data`` as an indented JSON block (markdown code, as TensorBoard's text tab renders it)."""
        body = json.dumps(data, indent=2, default=str)
        self.text(tag, "    " + body.replace("\n", "\n    "), step)

    def close(self) -> None:
        self.writer.close()


def open_board(run_root: str | Path, enabled: bool, space: Any = None, latency_model: Any = None) -> Board | None:
    """A :class:`Board` for the run folder, or None when ``enabled`` is off."""
    return Board(run_root, space, latency_model) if enabled else None


# ---- what goes in -------------------------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def epoch_scalars(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Tag -> value of one epoch's records: the mean of :data:`MEAN_KEYS`, the last value of every other
    number, short numeric lists element by element (``KEY/I``)."""
    sums: dict[str, list[float]] = {}
    last: dict[str, float] = {}
    for record in records:
        for key, value in record.items():
            if key in SKIP_KEYS:
                continue
            number = _number(value)
            if number is not None:
                if key in MEAN_KEYS:
                    sums.setdefault(key, []).append(number)
                else:
                    last[key] = number
            elif isinstance(value, list) and 0 < len(value) <= MAX_LIST:
                numbers = [_number(v) for v in value]
                if all(n is not None for n in numbers):
                    for i, n in enumerate(numbers):
                        last[f"{key}/{i}"] = n
    return {**{key: sum(v) / len(v) for key, v in sums.items()}, **last}


@torch.no_grad()
def decision_scalars(net: Any) -> dict[str, float]:
    """Per searchable layer, how decided the search is (tags ``decisions/...``; layers named by their position
    index ``layer_NN``):

    - a categorical supernet (``probs()`` (L, C): multipath, AutoHAS, DiffAutoML): ``entropy/layer_NN`` of the
      choice distribution (nats; log C = undecided, 0 = decided) and ``margin/layer_NN`` = top-1 minus top-2
      probability, plus their means over the layers;
    - a single-path supernet (``margins()``): ``margin_KIND/layer_NN`` = ``stat - t`` of every threshold decision
      (keep, kernel, expand, se; positive = the subset is on; a column suffix ``_I`` when a kind has several).

    Anything else (a uniform-sampling one-shot net, a plain network): no scalars."""
    if net is None:
        return {}
    positions = [p.index for p in net.space.searchable_positions] if hasattr(net, "space") else None

    def layer(l: int) -> str:
        return f"layer_{positions[l] if positions is not None and l < len(positions) else l:02d}"

    out: dict[str, float] = {}
    if hasattr(net, "margins") and callable(net.margins):
        margins = net.margins()
        for kind in ("keep", "kernel", "expand", "se"):
            values = getattr(margins, kind).detach().float().cpu()
            if values.numel() == 0:
                continue
            values = values.reshape(values.shape[0], -1)
            for l in range(values.shape[0]):
                for c in range(values.shape[1]):
                    suffix = f"_{c}" if values.shape[1] > 1 else ""
                    out[f"decisions/margin_{kind}{suffix}/{layer(l)}"] = float(values[l, c])
        return out
    if hasattr(net, "probs") and callable(net.probs):
        probs = net.probs().detach().float().cpu()                     # (L, C), masked columns ~ 0
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        top = probs.topk(min(2, probs.shape[1]), dim=-1).values
        margin = top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0.0)
        for l in range(probs.shape[0]):
            out[f"decisions/entropy/{layer(l)}"] = float(entropy[l])
            out[f"decisions/margin/{layer(l)}"] = float(margin[l])
        out["decisions/entropy_mean"] = float(entropy.mean())
        out["decisions/margin_mean"] = float(margin.mean())
    return out
