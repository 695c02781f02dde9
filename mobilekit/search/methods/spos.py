"""Single-path one-shot search (SPOS, Guo et al.; the baseline of TNAS-OS, TNAS Sec. 4.2).

1. A :class:`~mobilekit.search.supernets.SampledPathNet` (one candidate per searchable layer, shared weights) is
   trained with one path per step drawn by a *path draw*: uniformly over all paths here (``epsilon = 0`` of
   TNAS eq. 11); :mod:`mobilekit.search.methods.tnas_os` plugs in the mixture with its learned sampler.
2. An evolutionary search (population, mutation, crossover) over the architectures whose table latency lies in
   [0.9 T, T] (a hard constraint), each candidate scored by the supernet's validation accuracy with its path
   fixed, after recalibrating batch norm (TNAS eq. 10 with inherited weights).
3. The best candidate is returned with the supernet's weights (:func:`extract_network`), so the final training
   fine-tunes it (or trains it from scratch with ``--final-init scratch``).

The evolution is deterministic from the seed; its scores go to ``evolution.json`` in the run folder after every
generation (keyed by a fingerprint of the supernet's weights), so a re-run repeats it from the cache.
Architectures inside the evolution are index lists: ``indices[l]`` is the column of ``candidates[l]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from mobilekit.errors import SearchError
from mobilekit.search.budget import WINDOW, sample_in_window
from mobilekit.search.options import option
from mobilekit.search.outcome import SearchOutcome, TrainingHyperparameters, arch_summary
from mobilekit.search.supernets import PathView, SampledPathNet, extract_network, weight_sharing_option
from mobilekit.search.training import (Phase, SearchContext, evaluate, local_engine, make_optimizer,
                                       preserved_batchnorm, recalibrate_batchnorm)
from mobilekit.space import Architecture

LATENCY_MODEL = "expected"      # for its ``candidates`` rows (the searched types per layer) and table lookups
SUMMARY = "single-path one-shot (SPOS): uniformly sampled supernet paths, then evolution in [0.9T, T]"
EVOLUTION_FILE = "evolution.json"

PathDraw = Callable[[int, torch.Generator], tuple[list[int], str]]   # (step, generator) -> (indices, source)


@dataclass
class Options:
    """One-shot evolution settings (recipe section ``[search.spos]``; TNAS-OS shares them)."""

    population: int = option(16, "evolution: population size", ge=2)
    generations: int = option(4, "evolution: generations after the initial population", ge=0)
    parents: int | None = option(None, "evolution: top candidates kept as parents (default: population // 2)", ge=1)
    mutation_prob: float = option(0.1, "evolution: chance that a child's layer is resampled", ge=0, le=1)
    bn_steps: int = option(5, "batches of the training split that recalibrate BN before scoring a candidate", ge=1)
    eval_samples: int = option(1000, "validation images that score a candidate (a seeded subset)", ge=1)
    weight_sharing: str = weight_sharing_option()


# ---- index-space helpers ---------------------------------------------------------------------------------------------
class PathSpace:
    """The searched types of a latency model as index lists: ``candidates[l]`` (types of searchable layer l),
    ``latency_ms(indices)`` = fixed + the table's per-layer latencies (ms), conversions to/from architectures."""

    def __init__(self, latency_model: Any, space: Any) -> None:
        self.latency_model, self.space = latency_model, space
        self.candidates = list(latency_model.candidates)
        self.positions = list(space.searchable_positions)
        self.layer_ms = [[latency_model.type_ms(p.index, t) for t in row] for p, row in zip(self.positions, self.candidates)]
        self.fixed_ms = float(latency_model.fixed_ms)

    @property
    def sizes(self) -> list[int]:
        return [len(row) for row in self.candidates]

    def latency_ms(self, indices: Sequence[int]) -> float:
        return self.fixed_ms + sum(row[c] for row, c in zip(self.layer_ms, indices))

    def latency_matrix(self) -> torch.Tensor:
        """(L, C) per-type latencies in ms, padded columns +inf."""
        width = max(self.sizes)
        out = torch.full((len(self.candidates), width), float("inf"), dtype=torch.float64)
        for l, row in enumerate(self.layer_ms):
            out[l, :len(row)] = torch.tensor(row, dtype=torch.float64)
        return out

    def architecture(self, indices: Sequence[int]) -> Architecture:
        chosen = iter(row[c] for row, c in zip(self.candidates, indices))
        return Architecture(self.space, tuple(next(chosen) if p.searchable else p.candidates[0]
                                              for p in self.space.positions))

    def indices(self, arch: Architecture) -> list[int]:
        return [row.index(arch.choices[p.index]) for row, p in zip(self.candidates, self.positions)]

    def largest(self) -> list[int]:
        """Every layer's slowest candidate by table latency (the largest block: every shared weight in use)."""
        return [max(range(len(row)), key=lambda c: (row[c], c)) for row in self.layer_ms]

    def uniform(self, generator: torch.Generator) -> list[int]:
        return [int(torch.randint(n, (1,), generator=generator)) for n in self.sizes]


def uniform_draw(paths: PathSpace) -> PathDraw:
    """SPOS's path draw: every layer's type uniformly, independently (U(alpha) of TNAS eq. 11)."""
    return lambda step, generator: (paths.uniform(generator), "uniform")


# ---- supernet training -----------------------------------------------------------------------------------------------
class OneShotPhase(Phase):
    """Supernet training: each step draws one path (``draw``), fixes it and takes a CE step on its weights.
    ``after_step(phase, step)`` (optional) runs after each step (TNAS-OS tells its sampler there). Records: ce,
    accuracy, runtime_hard_ms (the path's table latency), path (its source), decisions; an epoch's last record
    also val_accuracy / val_loss of the reference path (:meth:`validation_network`)."""

    def __init__(self, *, net: SampledPathNet, paths: PathSpace, draw: PathDraw, config: Any,
                 after_step: Callable[["OneShotPhase", int], dict] | None = None, extra_modules: dict | None = None,
                 extra_optimizers: dict | None = None, **kwargs: Any) -> None:
        engine = kwargs.get("engine")
        if engine is not None:
            engine.place(net)
        weights_opt = make_optimizer(config.optimizer, net.weight_parameters(), config.lr, config.weight_decay)
        super().__init__(modules={"net": net, **(extra_modules or {})},
                         optimizers={"weights": weights_opt, **(extra_optimizers or {})}, **kwargs)
        self.schedule("weights", weights_opt, config.lr_schedule)
        self.net, self.paths, self.draw, self.config, self.weights_opt = net, paths, draw, config, weights_opt
        self.after_step = after_step
        self.reference = paths.largest()

    @contextlib.contextmanager
    def validation_network(self) -> Iterator[PathView]:
        """The reference path (:meth:`PathSpace.largest`: one fixed path, so the epochs compare) after a BN
        recalibration on ``bn_steps`` seeded batches of the training split, as the evolution scores candidates;
        the supernet's BN statistics are put back afterwards and its active path is never touched."""
        view = PathView(self.net, self.reference)
        with preserved_batchnorm(self.net):
            recalibrate_batchnorm(view, self.dataset, self.batch_size, steps=self.config.bn_steps, seed=self.seed,
                                  engine=local_engine(self.engine), workers=self.workers)
            yield view

    def step(self, epoch: int, step: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        indices, source = self.draw(step, generator)
        self.net.fix(indices)
        self.net.train()
        with self.engine.autocast():
            logits = self.net(x)
            ce = F.cross_entropy(logits, y)
        self.weights_opt.zero_grad(set_to_none=True)
        self.engine.backward(ce, self.net.weight_parameters(), [self.weights_opt])
        self.engine.step([self.weights_opt])
        arch = self.paths.architecture(indices)
        record = {"ce": ce.item(), "accuracy": float((logits.argmax(1) == y).float().mean()),
                  "runtime_hard_ms": self.paths.latency_ms(indices), "path": source, "decisions": arch_summary(arch)}
        if self.after_step is not None:
            record.update(self.after_step(self, step) or {})
        if self.progress is not None:
            self.progress.set_postfix_str(f"CE {record['ce']:.3f} path {record['runtime_hard_ms']:.1f}ms ({source})")
        return record


# ---- evolution -------------------------------------------------------------------------------------------------------
def fingerprint(net: torch.nn.Module) -> str:
    """A short hash of the supernet's weights: the evolution cache belongs to exactly these weights."""
    digest = hashlib.sha256()
    for key, value in net.named_parameters():
        digest.update(key.encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def validation_subset(dataset: Dataset, samples: int, seed: int) -> Dataset:
    if samples >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed + 7))
    return Subset(dataset, order[:samples].tolist())


class SupernetScorer:
    """Supernet validation accuracy of index lists, with BN recalibrated for each path; cached by key."""

    def __init__(self, net: SampledPathNet, ctx: SearchContext, cache: dict[str, float]) -> None:
        cfg = ctx.config
        self.net, self.ctx, self.cache = net, ctx, cache
        self.val = validation_subset(ctx.splits.val, cfg.eval_samples, cfg.seed)

    def __call__(self, indices: Sequence[int]) -> float:
        key = ",".join(map(str, indices))
        if key not in self.cache:
            cfg, engine = self.ctx.config, self.ctx.engine
            self.net.fix(list(indices))
            recalibrate_batchnorm(self.net, self.ctx.splits.train, cfg.batch_size, steps=cfg.bn_steps, seed=cfg.seed,
                                  engine=engine, workers=cfg.workers)
            self.cache[key] = evaluate(self.net, self.val, engine=engine, workers=cfg.workers)
        return self.cache[key]


def _in_window(paths: PathSpace, indices: Sequence[int], lo_ms: float, hi_ms: float) -> bool:
    return lo_ms <= paths.latency_ms(indices) <= hi_ms


def evolve(paths: PathSpace, score: Callable[[Sequence[int]], float], initial: list[list[int]], lo_ms: float,
           hi_ms: float, options: Any, seed: int, on_generation: Callable[[int, list], None] | None = None,
           max_tries: int = 200) -> list[tuple[float, list[int]]]:
    """Evolution in the latency window (Guo et al.'s SPOS search): keep the ``parents`` best, fill the rest of the
    population with half mutations (each layer resampled with ``mutation_prob``) and half crossovers (each layer
    from one of two parents), rejecting children outside [lo_ms, hi_ms] or already seen (``max_tries`` per child).
    Returns every scored candidate as (accuracy, indices), best first. Deterministic from ``seed``."""
    rng = random.Random(seed)
    population = [list(p) for p in initial if _in_window(paths, p, lo_ms, hi_ms)]
    if not population:
        raise SearchError(f"evolution: no initial architecture lies in [{lo_ms:.2f}, {hi_ms:.2f}] ms")
    scored: dict[str, tuple[float, list[int]]] = {}

    def add(indices: list[int]) -> None:
        key = ",".join(map(str, indices))
        if key not in scored:
            scored[key] = (score(indices), indices)

    for p in population:
        add(p)
    parents_n = options.parents or max(1, options.population // 2)
    for generation in range(options.generations + 1):
        ranked = sorted(scored.values(), key=lambda s: (-s[0], s[1]))
        if on_generation is not None:
            on_generation(generation, ranked)
        if generation == options.generations:
            break
        parents = [p for _, p in ranked[:parents_n]]
        children: list[list[int]] = []
        for i in range(options.population - len(parents)):
            for _ in range(max_tries):
                if i % 2 == 0 or len(parents) < 2:
                    base = rng.choice(parents)
                    child = [rng.randrange(n) if rng.random() < options.mutation_prob else c
                             for c, n in zip(base, paths.sizes)]
                else:
                    a, b = rng.sample(parents, 2)
                    child = [rng.choice((x, y)) for x, y in zip(a, b)]
                key = ",".join(map(str, child))
                if key not in scored and child not in children and _in_window(paths, child, lo_ms, hi_ms):
                    children.append(child)
                    break
        for child in children:
            add(child)
    return sorted(scored.values(), key=lambda s: (-s[0], s[1]))


def run_evolution(ctx: SearchContext, net: SampledPathNet, paths: PathSpace, initial: list[list[int]]
                  ) -> tuple[list[tuple[float, list[int]]], float]:
    """:func:`evolve` with the supernet scorer, cached in ``evolution.json``; returns (ranked, elapsed_s)."""
    cfg = ctx.config
    started = time.perf_counter()
    lo, hi = WINDOW[0] * cfg.target_ms, WINDOW[1] * cfg.target_ms
    mark = fingerprint(net)
    cache: dict[str, float] = {}
    stored = ctx.run.path(EVOLUTION_FILE)
    if stored.exists():
        try:                                    # our own cache: unreadable means recompute, never fail
            previous = ctx.run.read_json(EVOLUTION_FILE)
        except ValueError:
            previous = None
        if isinstance(previous, dict) and previous.get("fingerprint") == mark:
            cache = {str(k): float(v) for k, v in previous.get("scores", {}).items()}
    scorer = SupernetScorer(net, ctx, cache)
    generations: list[dict] = []

    def save(generation: int, ranked: list) -> None:
        best = ranked[0]
        generations.append({"generation": generation, "best_accuracy": best[0],
                            "best_ms": paths.latency_ms(best[1]), "scored": len(ranked)})
        if ctx.engine.is_writer:
            ctx.run.write_json(EVOLUTION_FILE, {"fingerprint": mark, "scores": cache, "generations": generations})

    ranked = evolve(paths, scorer, initial, lo, hi, cfg.method_options, cfg.seed, save)
    return ranked, time.perf_counter() - started


def initial_population(ctx: SearchContext, paths: PathSpace, count: int) -> list[list[int]]:
    """``count`` seeded random architectures inside [0.9 T, T] (:func:`sample_in_window`)."""
    cfg = ctx.config
    rng = random.Random(cfg.seed)
    lo, hi = WINDOW[0] * cfg.target_ms, WINDOW[1] * cfg.target_ms
    return [paths.indices(sample_in_window(ctx.latency_model, ctx.train_space, lo, hi, rng)) for _ in range(count)]


def outcome(ctx: SearchContext, net: SampledPathNet, paths: PathSpace, phase: Phase, ranked: list,
            evolution_s: float, details: dict[str, Any] | None = None) -> SearchOutcome:
    """The best evolved architecture with the supernet's weights; BN is recalibrated by the run."""
    best_accuracy, best = ranked[0]
    arch = paths.architecture(best)
    summary = {"lambda_final": None, "search_steps": phase.total_steps, "supernet_accuracy": best_accuracy,
               "candidates_scored": len(ranked), "evolution_s": round(evolution_s, 2),
               "evolution_top": [{"arch": paths.architecture(p).to_string(), "predicted_ms": paths.latency_ms(p),
                                  "supernet_accuracy": a} for a, p in ranked[:5]], **(details or {})}
    return SearchOutcome(arch, extract_network(net, arch), phase.elapsed_s + evolution_s,
                         TrainingHyperparameters.from_config(ctx.config), arch, [], summary, recalibrate_bn=True)


def train_supernet(ctx: SearchContext) -> tuple[SampledPathNet, PathSpace, OneShotPhase]:
    """Train (or resume) the supernet with uniform paths; returns (supernet, its path space, the phase)."""
    cfg = ctx.config
    torch.manual_seed(cfg.seed)
    paths = PathSpace(ctx.latency_model, ctx.train_space)
    net = SampledPathNet(ctx.train_space, paths.candidates, sharing=cfg.weight_sharing)
    phase = OneShotPhase(net=net, paths=paths, draw=uniform_draw(paths), config=cfg, **ctx.phase_kwargs("search"))
    phase.run_loop(phase.restore(ctx.checkpoint))
    return net, paths, phase


def search(ctx: SearchContext) -> SearchOutcome:
    """Train the supernet with uniform paths (resumable), then evolve in the window (cached)."""
    cfg = ctx.config
    net, paths, phase = train_supernet(ctx)
    ranked, evolution_s = run_evolution(ctx, net, paths, initial_population(ctx, paths, cfg.population))
    return outcome(ctx, net, paths, phase, ranked, evolution_s)
