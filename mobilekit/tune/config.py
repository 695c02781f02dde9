""":class:`TuneConfig`: everything one ``mobilekit tune`` study needs, validated once, and the flat search
options each trial gets from it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mobilekit.errors import ConfigError
from mobilekit.tune.objective import LATENCIES
from mobilekit.tune.params import ParamSpec
from mobilekit.tune.pruners import PRUNERS, Fidelity

# objective name -> Optuna direction
OBJECTIVES = {"reward": "maximize", "accuracy": "maximize", "latency": "minimize"}


@dataclass(frozen=True)
class TuneConfig:
    """One tuning study.

    ``params``: tuned search options; ``sets``: search options fixed for every trial (``--set``);
    ``trials``: finished (complete or pruned) trials wanted in the study; ``objectives``: ``("reward",)`` (eq. 19)
    or several of reward/accuracy/latency (multi-objective); ``latency``: which R the objectives use (final,
    measured; always the network whose accuracy is scored); ``storage``: Optuna storage URL or journal file (default: SQLite in ``out``);
    ``workers``: parallel trials (local processes, or Ray tasks with ``ray``); ``ray``: None (off), "" (a
    local Ray instance, or the one already initialised) or a cluster address; ``threads``: torch threads in all,
    split between workers; ``heartbeat_s``: RDB heartbeat period (a silent trial fails after twice that).
    """

    out: str
    params: tuple[ParamSpec, ...]
    recipe: str | None = None
    sets: dict[str, Any] = field(default_factory=dict)
    trials: int = 20
    sampler: str = "gp"
    pruner: str | None = None                # None: hyperband with a fidelity, else none
    fidelity: Fidelity | None = None
    grid: bool = False
    grid_points: int = 5
    objectives: tuple[str, ...] = ("reward",)
    latency: str = "final"
    storage: str | None = None
    study: str = "tune"
    workers: int = 1
    ray: str | None = None
    threads: int | None = None
    seed: int = 0
    heartbeat_s: int = 30
    startup_trials: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def pruner_(self) -> str:
        if self.pruner is not None:
            return self.pruner
        return "hyperband" if self.fidelity is not None and not self.grid and not self.multi_objective else "none"

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]

    @property
    def threads_per_worker(self) -> int | None:
        """Torch threads of each trial: ``threads`` split between the workers (None: the search's default
        when one worker and no ``threads``)."""
        if self.threads is None and self.workers == 1:
            return self.sets.get("threads")
        total = self.threads or os.cpu_count() or 1
        return max(1, total // self.workers)

    def trial_folder(self, number: int) -> Path:
        """The run folder of trial ``number`` (kept when the trial is retried, so a retry resumes it)."""
        return Path(self.out) / self.study / f"trial-{number:04d}"

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(bool(self.out), "--out is required: the folder for the study file, trial run folders and plots")
        need(bool(self.params) or self.grid, "give at least one --param NAME:KIND:... to tune "
                                             "(e.g. --param lambda:log:1e-3:1)")
        names = [p.option for p in self.params]
        need(len(set(names)) == len(names), f"--param names a search option twice ({', '.join(names)})")
        clash = sorted(set(names) & set(self.sets))
        need(not clash, f"{', '.join(clash)} is both tuned (--param) and fixed (--set); drop one")
        # ranges a real study could need and no more (issue 23, item 6): a huge value runs for weeks or spawns
        # thousands of processes before saying anything
        need(1 <= self.trials <= 100_000, f"--trials must be 1 to 100000, got {self.trials}")
        need(1 <= self.workers <= 1024, f"--workers must be 1 to 1024, got {self.workers}")
        need(self.threads is None or 1 <= self.threads <= 4096, f"--threads must be 1 to 4096, got {self.threads}")
        need(1 <= self.heartbeat_s <= 86_400, f"--heartbeat must be 1 to 86400 seconds, got {self.heartbeat_s}")
        need(2 <= self.grid_points <= 1000, f"--grid-points must be 2 to 1000, got {self.grid_points}")
        need(0 <= self.seed <= 2**32 - 1, f"--seed must be 0 to 2**32-1, got {self.seed}")
        need(self.startup_trials is None or 0 <= self.startup_trials <= 100_000,
             f"--startup-trials must be 0 to 100000, got {self.startup_trials}")
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        need(not unknown and len(set(self.objectives)) == len(self.objectives) and self.objectives,
             f"--objectives {','.join(self.objectives)}: use distinct names from {', '.join(OBJECTIVES)} "
             "(e.g. accuracy,latency)")
        need(self.latency in LATENCIES, f"--latency {self.latency!r} is unknown: use one of {', '.join(LATENCIES)}")
        need(self.pruner is None or self.pruner in PRUNERS,
             f"--pruner {self.pruner!r} is unknown: use one of {', '.join(PRUNERS)}")
        need(not (self.multi_objective and self.pruner_ != "none"),
             "pruning needs a single objective (Optuna cannot prune multi-objective trials); drop --pruner")
        need(not (self.fidelity and "epochs" in names), "epochs is set by --fidelity; do not also --param it")
        need(not (self.grid and self.fidelity is None), "--grid needs --fidelity epochs:MIN:MAX (the epochs axis)")
        need(not (self.grid and self.multi_objective), "--grid scores eq. 19; drop --objectives")

    def trial_overrides(self) -> dict[str, Any]:
        """Search options shared by every trial: ``sets``, with λ steering off (``lambda_lr = lambda_p = 0``,
        the paper's fixed-λ setting) when λ is tuned and the user did not set the gains, and the fidelity's
        epoch budget."""
        overrides = dict(self.sets)
        if any(p.option == "lambda_init" for p in self.params):
            overrides.setdefault("lambda_lr", 0.0)
            overrides.setdefault("lambda_p", 0.0)
        if self.fidelity is not None:
            overrides["epochs"] = self.fidelity.max_epochs
        threads = self.threads_per_worker
        if threads is not None:
            overrides["threads"] = threads
        return overrides
