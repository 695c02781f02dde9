"""The study and one worker's share of it. Every worker (this process, a local worker process, a Ray task, a
``tune`` on another machine) opens the same storage and study and calls ``study.optimize``; Optuna's storage
is the only coordination. A worker stops once the study holds the requested number of finished (complete or
pruned) trials (Optuna's :class:`~optuna.study.MaxTrialsCallback`), so a rerun tops up a killed study."""

from __future__ import annotations

import logging

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from mobilekit.errors import ConfigError, MobilekitError
from mobilekit.interrupts import raise_if_stop_requested
from mobilekit.tune.config import TuneConfig
from mobilekit.tune.grid import grid_params, grid_sampler, grid_size
from mobilekit.tune.outputs import SAMPLER_ATTR
from mobilekit.tune.pruners import make_pruner
from mobilekit.tune.samplers import default_startup_trials, make_sampler
from mobilekit.tune.storage import default_storage_url, fail_dead_local_trials, open_storage
from mobilekit.tune.trial import TrialRunner

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
RERUN_SEED_STEP = 7919


def _trials_in(storage: optuna.storages.BaseStorage, study: str) -> int:
    """Trials the study ``study`` holds in ``storage`` (0 when it does not exist yet)."""
    try:
        return len(storage.get_all_trials(storage.get_study_id_from_name(study), deepcopy=False))
    except KeyError:
        return 0


class _QuietInterrupt(logging.Filter):
    """Drop Optuna's 'Trial N failed ... KeyboardInterrupt' warning (with its traceback) and the line after it:
    Ctrl-C ends ``tune`` with the CLI's one line."""

    def __init__(self) -> None:
        super().__init__()
        self._dropped: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if isinstance(exc, KeyboardInterrupt):
            number = message.split()[1] if message.startswith("Trial ") else ""
            self._dropped.add(int(number) if number.isdigit() else -1)
            return False
        if message.startswith("Trial ") and "failed with value" in message:
            number = message.split()[1]
            return not (number.isdigit() and int(number) in self._dropped)
        return True


_OPTIMIZE_LOGGER = logging.getLogger("optuna.study._optimize")
if not any(isinstance(f, _QuietInterrupt) for f in _OPTIMIZE_LOGGER.filters):
    _OPTIMIZE_LOGGER.addFilter(_QuietInterrupt())


def storage_url(config: TuneConfig) -> str:
    return config.storage or default_storage_url(config.out)


def requested_trials(config: TuneConfig) -> int:
    """Finished trials the study should hold: ``config.trials``, or the grid's size with ``--grid``."""
    return grid_size(grid_params(config.params, config.fidelity), config.grid_points) if config.grid else config.trials


def make_runner(config: TuneConfig) -> TrialRunner:
    return TrialRunner(config, grid_params(config.params, config.fidelity) if config.grid else None)


def _sampler(config: TuneConfig, worker: int, existing: int = 0) -> optuna.samplers.BaseSampler:
    # distinct streams, so parallel workers do not propose the same point; ``existing`` (trials the study held
    # when this worker opened it) moves a rerun onto a fresh stream, so a resumed study does not re-propose the
    # points its first run drew from the same seed
    seed = (config.seed + worker + RERUN_SEED_STEP * existing) % 2**32
    if config.grid:
        return grid_sampler(grid_params(config.params, config.fidelity), config.grid_points, seed)
    startup = config.startup_trials if config.startup_trials is not None else default_startup_trials(config.trials)
    return make_sampler(config.sampler, seed=seed, startup_trials=startup, multi_objective=config.multi_objective)


def open_study(config: TuneConfig, worker: int = 0) -> optuna.Study:
    """Create the study (or load it: same name and storage) with this worker's sampler and the pruner.

    Raises:
        ConfigError: bad storage, or a study of that name exists with other objectives.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = _sampler(config, worker)  # a bad sampler or pruner is refused before the storage is created
    pruner = make_pruner(config.pruner_, config.fidelity)
    storage = open_storage(storage_url(config), config.heartbeat_s)
    existing = _trials_in(storage, config.study)
    if existing:
        sampler = _sampler(config, worker, existing)
    try:
        study = optuna.create_study(storage=storage, study_name=config.study, directions=config.directions,
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
    except ValueError as exc:
        raise ConfigError(f"--study {config.study}: {exc}; pick another --study name or the same --objectives") from None
    if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in config.directions]:
        raise ConfigError(f"--study {config.study} already exists in {storage_url(config)} with other objectives; "
                          "pick another --study name or the same --objectives")
    if worker == 0 and SAMPLER_ATTR not in study.user_attrs:
        study.set_user_attr(SAMPLER_ATTR, "grid" if config.grid else config.sampler)
        study.set_user_attr("objectives", list(config.objectives))
    return study


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _stop_if_requested(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Optuna callback after each trial (and its garbage collection): a Ctrl-C that arrived there stops the study."""
    raise_if_stop_requested()


def run_worker(config: TuneConfig, worker: int = 0, max_trials: int | None = None, progress: bool = False) -> int:
    """Run trials of the study until it holds :func:`requested_trials` finished ones (or this worker ran
    ``max_trials``), with Optuna's progress bar when ``progress``; first fail the trials of dead local processes (they are retried). Returns the trials run.
    A trial whose search raises a :class:`MobilekitError` is marked failed and the study goes on."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(config, worker)
    fail_dead_local_trials(study)
    wanted = requested_trials(config)
    remaining = wanted - finished_trials(study)
    if remaining <= 0:
        return 0
    n_trials = remaining if max_trials is None else min(remaining, max_trials)
    before = len(study.get_trials(deepcopy=False))
    study.optimize(make_runner(config), n_trials=n_trials, catch=(MobilekitError,), gc_after_trial=True,
                   show_progress_bar=progress,
                   callbacks=[MaxTrialsCallback(wanted, states=FINISHED), _stop_if_requested])
    return len(study.get_trials(deepcopy=False)) - before
