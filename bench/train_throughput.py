"""Training throughput: a single-path search and the final training of ``mobilekit search``, in images/s, beside a
plain PyTorch loop training the same derived network with the same settings, and where the pipeline's time goes.

Goals (issue 26): the search loop within 15 % of the plain loop's images/s (ratio >= 0.85), the final training
within 5 % (ratio >= 0.95).

What is measured, all in one process at the same torch thread count:

* the pipeline: :func:`mobilekit.search.run.run_search` (single-path, export off). Images/s of a phase is
  ``(steps - 1) * batch / (t_last - t_first)`` over the wall-clock times at which its steps finish (the
  ``on_step`` callback): everything between steps counts -- slicing the batch, augmentation, the step, metrics
  logging, progress, checkpoints, the per-epoch monitoring validation. A breakdown (seconds in each, timed by
  wrapping those functions) says what besides the step costs time.
* the plain loops, right after: ``MobileNet(derived architecture)`` at the training resolution, the final training's
  optimiser, lr, schedule (``torch.optim.lr_scheduler``), weight decay and augmentation, the same data tensors,
  batch size and memory layout; a shuffled index per epoch, ``cross_entropy``, ``backward``, ``step``; nothing
  else, for the final training's number of epochs; then the same for ``--largest-steps`` steps of the largest
  network (every searchable layer k5, e6, SE 0.5: what the superkernel computes during its warm-up). The first
  step of a plain loop is not timed. (The host is shared: the load average before, between and after is
  printed, to judge whether both saw the same load.)
* all of it twice (``--depthwise both``): with the CPU depthwise convolution of :mod:`mobilekit.search.depthwise`
  (opt-in with ``MOBILEKIT_FAST_DEPTHWISE=1``; forced on here whatever the environment says; the plain loops then
  use the same layers) and with torch's own (the default; the plain loops are then plain PyTorch, the reference
  of the goals). Printed per phase: images/s, the step-time ratio phase / plain loop of the derived and of the
  largest network, and the goal's ratio against plain PyTorch (the median over torch's runs).
* ``--rounds N`` repeats that, alternating which runs first (fast, native, native, fast, ...), and prints the
  ratio fast / torch's per round and their median: on a shared host compare within a round.

    python bench/train_throughput.py [--data fashion-mnist] [--train-subset 2000] [--epochs 1] \\
        [--final-epochs 1] [--batch-size 64] [--threads 1] [--largest-steps 11] [--depthwise both|fast|native] \\
        [--rounds 1] [--out DIR]
    python bench/train_throughput.py --smoke       # seconds: digits, 64 images, batch 16, a temp folder
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator


REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "latency_tables" / "pixel1-spnas.json"
SEARCH_GOAL, FINAL_GOAL = 0.85, 0.95


@contextlib.contextmanager
def timing(spent: dict[str, float], marks: dict[str, tuple[float, dict[str, float]]]) -> Iterator[None]:
    """Wrap the pipeline's per-step helpers so that ``spent[name]`` accumulates their seconds: ``step`` (the
    method's or the final training's step), ``augment``, ``to device/layout`` (:meth:`Engine.batch`),
    ``metrics log``, ``checkpoints``, ``monitoring validation``. ``marks[phase]`` is (when that phase's loop
    began, a copy of ``spent`` then)."""
    from mobilekit.search import training
    from mobilekit.search.engine import Engine
    from mobilekit.search.methods.single_path import SinglePathPhase
    from mobilekit.search.runfolder import RunFolder

    patched: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started

        patched.append((owner, attr, original))
        setattr(owner, attr, timed)

    wrap(training, "augment", "augment")
    wrap(Engine, "batch", "to device/layout")
    wrap(RunFolder, "log", "metrics log")
    wrap(training.Phase, "save", "checkpoints")
    wrap(training.Phase, "validate", "monitoring validation")
    wrap(SinglePathPhase, "step", "step")
    wrap(training.TrainPhase, "step", "step")
    original_loop = training.Phase.run_loop

    def run_loop(self: Any, *args: Any, **kwargs: Any) -> Any:
        marks[self.name] = (time.perf_counter(), dict(spent))
        return original_loop(self, *args, **kwargs)

    patched.append((training.Phase, "run_loop", original_loop))
    training.Phase.run_loop = run_loop
    try:
        yield
    finally:
        for owner, attr, original in reversed(patched):
            setattr(owner, attr, original)


def run_pipeline(args: argparse.Namespace, out: Path) -> tuple[dict, dict[str, list[float]], dict[str, dict]]:
    """Run the search; returns (summary, per phase [start of its loop, then the finish time of each step],
    per phase the seconds spent in each wrapped helper)."""
    from mobilekit.search.config import make_config
    from mobilekit.search.run import run_search

    finished: dict[str, list[float]] = defaultdict(list)
    spent: dict[str, float] = defaultdict(float)
    marks: dict[str, tuple[float, dict[str, float]]] = {}

    def on_step(record: dict) -> None:
        phase = record["phase"]
        if not finished[phase]:
            finished[phase].append(marks[phase][0])
        finished[phase].append(time.perf_counter())

    config = make_config(table=str(TABLE), target_ms=args.target_ms, out=str(out), method="single-path",
                         data=args.data, train_subset=args.train_subset, epochs=args.epochs,
                         final_epochs=args.final_epochs, batch_size=args.batch_size, export="none",
                         threads=args.threads, seed=0, train_resolution=32)
    with timing(spent, marks):
        summary = run_search(config, on_step=on_step)
    phases = [phase for phase in marks if finished.get(phase)]
    by_phase: dict[str, dict] = {}
    for i, phase in enumerate(phases):
        start = marks[phase][1]
        end = marks[phases[i + 1]][1] if i + 1 < len(phases) else spent
        by_phase[phase] = {k: end.get(k, 0.0) - start.get(k, 0.0) for k in spent}
    return summary, dict(finished), by_phase


def plain_loop(summary: dict, args: argparse.Namespace, channels_last: bool, network: str = "derived",
               max_steps: int | None = None) -> float:
    """Images/s of plain PyTorch training of the derived (or ``network="largest"``) network with the final
    training's settings, over its steps after the first (the first allocates). Its depthwise convolutions are
    torch's, unless this runs with the fast gradient enabled (:func:`mobilekit.search.depthwise.enabled`): then
    the same layers as the pipeline's."""
    import torch
    import torch.nn.functional as F

    from mobilekit.data import load_dataset
    from mobilekit.models.torch_builder import MobileNet
    from mobilekit.search.depthwise import use_fast_depthwise
    from mobilekit.search.training import augment
    from mobilekit.space import Architecture, get_space, largest_architecture

    splits = load_dataset(args.data, 32, seed=0, train_subset=args.train_subset)
    x_all, y_all = splits.train.tensors
    space = get_space(resolution=32, num_classes=splits.num_classes)
    arch = Architecture.from_string(space, summary["arch"]) if network == "derived" else largest_architecture(space)
    hp = summary["final_hyperparameters"]
    torch.manual_seed(1)
    model = MobileNet(arch).train()
    use_fast_depthwise(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizers: dict[str, Callable] = {
        "adam": lambda: torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"]),
        "adamw": lambda: torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"]),
        "sgd": lambda: torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=0.9, nesterov=True,
                                       weight_decay=hp["weight_decay"])}
    optimizer = optimizers[hp["optimizer"]]()
    per_epoch = len(x_all) // args.batch_size
    total = per_epoch * args.final_epochs if max_steps is None else min(max_steps, per_epoch * args.final_epochs)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total))
    started, steps = time.perf_counter(), 0
    for epoch in range(args.final_epochs):
        order = torch.randperm(len(x_all))
        for i in range(per_epoch):
            if steps == total:
                break
            if steps == 1:
                started = time.perf_counter()
            index = order[i * args.batch_size:(i + 1) * args.batch_size]
            x = augment(x_all[index], hp["augment"], steps)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), y_all[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            steps += 1
    return (steps - 1) * args.batch_size / (time.perf_counter() - started) if steps > 1 else float("nan")


def rate(times: list[float], batch_size: int) -> float:
    """Images/s from [loop start, finish time of each step]."""
    if len(times) < 2:
        return float("nan")
    return (len(times) - 1) * batch_size / (times[-1] - times[0])


def measure(args: argparse.Namespace, out: Path, channels_last: bool) -> dict[str, Any]:
    """One pipeline run and the plain loops right after it, in the current depthwise mode: the summary, per phase
    its step finish times and breakdown, plain images/s of the derived and the largest network, load averages."""
    load = [os.getloadavg()[0]]
    summary, finished, spent = run_pipeline(args, out)
    load.append(os.getloadavg()[0])
    plain = {"derived": plain_loop(summary, args, channels_last),
             "largest": plain_loop(summary, args, channels_last, "largest", args.largest_steps)}
    load.append(os.getloadavg()[0])
    return {"summary": summary, "finished": finished, "spent": spent, "plain": plain, "load": load}


def report(label: str, result: dict[str, Any], args: argparse.Namespace, native_plain: dict[str, float]) -> None:
    """Print one mode's images/s, ratios and breakdown; ``native_plain`` is plain PyTorch's images/s (torch's own
    depthwise convolutions) for the issue's goals."""
    summary, plain = result["summary"], result["plain"]
    load = result["load"]
    print(f"[{label}] derived network: {summary['arch']} ({summary['predicted_ms']:.1f} ms predicted)")
    print(f"[{label}] plain loop: derived network {plain['derived']:.1f} images/s ({args.final_epochs} epoch(s)), "
          f"largest network {plain['largest']:.1f} images/s ({args.largest_steps} steps); host load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} before / between / after")
    goals = {"search": SEARCH_GOAL, "final": FINAL_GOAL}
    for phase, times in result["finished"].items():
        images = rate(times, args.batch_size)
        wall = times[-1] - times[0]
        parts = result["spent"].get(phase, {})
        other = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]))
        goal = goals.get(phase)
        verdict = "" if goal is None else (f"; goal: >= {goal:.2f} of plain PyTorch's "
                                           f"{native_plain['derived']:.1f} images/s: "
                                           f"{images / native_plain['derived']:.2f}, "
                                           f"{'met' if images / native_plain['derived'] >= goal else 'missed'}")
        print(f"[{label}] {phase}: {images:.1f} images/s over {len(times) - 1} steps ({wall:.1f} s wall); step "
              f"time / plain step: {plain['derived'] / images:.2f} of the derived network, "
              f"{plain['largest'] / images:.2f} of the largest{verdict}")
        print(f"[{label}]   where its time went: {other}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--train-subset", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1, help="search epochs")
    parser.add_argument("--final-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--target-ms", type=float, default=80.0)
    parser.add_argument("--largest-steps", type=int, default=11,
                        help="plain-loop steps of the largest network (the first is not timed)")
    parser.add_argument("--depthwise", choices=("both", "fast", "native"), default="both",
                        help="run with the fast depthwise weight gradient, with torch's, or both (default)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the comparison, alternating which mode runs first (fast, native, native, ...)")
    parser.add_argument("--out", help="run folder (default: a temporary one, removed)")
    parser.add_argument("--smoke", action="store_true", help="seconds: digits, 64 images, batch 16, 1 epoch each")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give 1 or more")
    if args.smoke:
        args.data, args.train_subset, args.batch_size, args.epochs, args.final_epochs = "digits", 64, 16, 1, 1
        args.largest_steps = 3
    import torch

    from mobilekit.search import depthwise

    torch.set_num_threads(args.threads)
    modes = [m for m in ("fast", "native") if args.depthwise in (m, "both")]
    # round r runs the modes in order when r is even, reversed when odd: fast, native, native, fast, ...
    plan = [(r, mode) for r in range(args.rounds) for mode in (modes if r % 2 == 0 else modes[::-1])]
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        from mobilekit.search.config import make_config
        from mobilekit.search.engine import Engine

        base = Path(args.out) if args.out else Path(tmp) / "run"
        engine = Engine.from_config(make_config(table=str(TABLE), target_ms=args.target_ms, out=str(base)))
        print(f"settings: single-path on {args.data} ({args.train_subset} training images), Pixel 1 table at "
              f"{args.target_ms:g} ms, batch {args.batch_size}, {args.epochs} search / {args.final_epochs} final "
              f"epoch(s), {args.threads} torch thread(s), {engine.describe()}; depthwise convolutions: "
              f"{', '.join(mode for _, mode in plan)}")
        for r, mode in plan:
            out = base if len(plan) == 1 else base.with_name(f"{base.name}-{mode}-{r}")
            with depthwise.using(mode == "fast"):
                results[mode].append(measure(args, out, engine.channels_last))
    native_plain = {net: statistics.median(run["plain"][net] for run in results.get("native", results[modes[0]]))
                    for net in ("derived", "largest")}
    labels = {"fast": "fast depthwise gradient", "native": "torch's depthwise gradient"}
    for r, mode in plan:
        report(labels[mode] + (f", round {r + 1}" if args.rounds > 1 else ""), results[mode][r], args, native_plain)
    if len(modes) == 2:
        def rates(mode: str, what: str) -> list[float]:
            if what in ("derived", "largest"):
                return [run["plain"][what] for run in results[mode]]
            return [rate(run["finished"].get(what, []), args.batch_size) for run in results[mode]]

        ratios = {what: [f / n for f, n in zip(rates("fast", what), rates("native", what))]
                  for what in ("search", "final", "derived", "largest")}
        print("images/s with the fast depthwise path / with torch's (" + ("per round, then the median; " if
              args.rounds > 1 else "") + "the host is shared: compare within a round): " + ", ".join(
              f"{name} {' '.join(f'{v:.2f}' for v in ratios[what])}"
              + (f" (median {statistics.median(ratios[what]):.2f})" if args.rounds > 1 else "")
              for what, name in (("search", "search"), ("final", "final training"),
                                 ("derived", "plain loop of the derived network"),
                                 ("largest", "of the largest"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
