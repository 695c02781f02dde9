""":func:`run_tune`, the whole of ``mobilekit tune``: check the settings, create (or reopen) the study, run the
trials here, in local worker processes or as Ray tasks, then write the outputs (:mod:`.outputs`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import optuna

from mobilekit import locks, safewrite
from mobilekit.errors import ConfigError, SearchError
from mobilekit.interrupts import stop_at_safe_points
from mobilekit.tune.config import TuneConfig
from mobilekit.tune.grid import plot_grid
from mobilekit.tune.multi_objective import plot_pareto
from mobilekit.tune.outputs import history_series, plot_history, write_best, write_trials_csv
from mobilekit.tune.storage import is_mobilekit_study_db
from mobilekit.tune.study import finished_trials, open_study, requested_trials, run_worker, storage_url
from mobilekit.tune.workers import WorkerReport, run_local_workers, run_ray

Log = Callable[[str], None]
#: the files ``tune`` writes in ``--out`` besides the study and the trial folders
TUNE_LOCK = ".mobilekit-tune.lock"
OUTPUT_NAMES = ("trials.csv", "best.json", "history.png", "pareto.png", "grid.png")


def check_trial_settings(config: TuneConfig) -> Any:
    """Build one trial's search config (tuned options at their lower bound / first choice) so a bad recipe,
    ``--set`` value or range fails before any trial runs; returns it.

    Raises:
        ConfigError: whatever :func:`mobilekit.search.make_config` rejects.
    """
    from mobilekit.search import make_config

    options = config.trial_overrides()
    for spec in config.params:
        options[spec.option] = spec.choices[0] if spec.kind == "cat" else (
            int(spec.low) if spec.kind == "int" else spec.low)
    return make_config(config.recipe, **options, out=str(config.trial_folder(0)))


def run_tune(config: TuneConfig, *, progress: bool = False, log: Log | None = None) -> dict[str, Any]:
    """Run (or resume) the study of ``config`` until it holds the requested finished trials; write
    ``trials.csv``, ``best.json``, ``history.png`` (single objective), ``pareto.png`` (several) and
    ``grid.png`` (``--grid``) to ``config.out``. Returns what ``best.json`` holds plus the output paths.

    Raises:
        ConfigError: bad settings, storage or study (before any trial runs).
    """
    say = log or (lambda message: None)
    first = check_trial_settings(config)
    out = Path(config.out)
    for name in OUTPUT_NAMES:  # refuse a user's file at an output name before anything is created
        safewrite.claim(out / name)
    if not config.storage:  # never add Optuna's tables to a study.db mobilekit did not create
        safewrite.claim(out / "study.db", recognise=is_mobilekit_study_db)
    # one tune per output folder (its outputs and trial folders); other machines join the study through a
    # shared --storage with their own --out, and this run's worker processes do not take the lock
    with locks.exclusive(out / TUNE_LOCK, f"tune folder {out}"):
        return _run_tune_locked(config, out, say, progress, tensorboard=first.tensorboard)


def _run_tune_locked(config: TuneConfig, out: Path, say: Log, progress: bool, tensorboard: bool) -> dict[str, Any]:
    default_db = None if config.storage else out / "study.db"
    out.mkdir(parents=True, exist_ok=True)
    if tensorboard:
        from mobilekit.search.board import logdir_line

        say(logdir_line(out) + " (every trial's run folder)")
    study = open_study(config)
    if default_db is not None:
        safewrite.record(default_db)
    check_trial_folders(study, config)
    failed_before = _failed(study)
    wanted, already = requested_trials(config), finished_trials(study)
    where = storage_url(config)
    say(f"study {config.study!r} in {where}: {already} of {wanted} trials finished; "
        + (f"Ray tasks ({config.ray or 'local instance'})" if config.ray is not None else
           f"{config.workers} worker(s)") + f", {config.threads_per_worker or 'default'} thread(s) each")
    report = WorkerReport([], [])
    if config.ray is not None:
        report = run_ray(config)
    elif config.workers > 1:
        report = run_local_workers(config)
    else:
        with stop_at_safe_points():     # a first Ctrl-C ends the trial's current step (its checkpoint saved)
            run_worker(config, progress=progress and sys.stderr.isatty())
    study = open_study(config)
    result = write_outputs(study, config)
    result["storage"] = where
    result["worker_exit_codes"] = report.exit_codes
    result["task_errors"] = report.task_errors
    done = finished_trials(study)
    failed_now = [t for n, t in sorted(_failed(study).items()) if n not in failed_before]
    if done == 0 and failed_now:
        failed = failed_now[0]
        reason = failed.user_attrs.get("error") or "see its run folder"
        raise SearchError(f"every trial of study {config.study!r} failed ({len(failed_now)}); trial {failed.number}: "
                          f"{reason}")
    if done < wanted:
        say(f"the study holds {done} of {wanted} finished trials (some failed or a worker died); "
            "run the same command again to complete it")
    return result


def check_trial_folders(study: optuna.Study, config: TuneConfig) -> None:
    """Refuse trial folders the study does not know (left by an earlier study whose ``study.db`` was removed):
    a new trial would meet an old run there and fail, and so would every trial after it.

    Raises:
        ConfigError: one line naming the folder and the fix.
    """
    root = Path(config.out) / config.study
    known = {f"trial-{t.number:04d}" for t in study.get_trials(deepcopy=False)}
    try:
        stale = sorted(p.name for p in root.iterdir() if p.name.startswith("trial-") and p.name not in known)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stale:
        raise ConfigError(f"{root}: holds trial folders the study {config.study!r} in {storage_url(config)} does not "
                          f"have ({stale[0]}, {len(stale)} in all: left by an earlier study?); move them away, or "
                          "use another --out or --study")


def _failed(study: optuna.Study) -> dict[int, Any]:
    """Failed trials by number."""
    return {t.number: t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))}


def write_outputs(study: optuna.Study, config: TuneConfig) -> dict[str, Any]:
    """The output files of :func:`run_tune` for the study as it stands now."""
    out = Path(config.out)
    options = {p.name: p.option for p in config.params}
    files = {"csv": str(write_trials_csv(study, tuple(config.objectives), out / "trials.csv"))}
    if config.multi_objective:
        files["pareto"] = str(plot_pareto(study, config.objectives, out / "pareto.png"))
    else:
        series = history_series(study._storage)
        files["history"] = str(plot_history(series, out / "history.png",
                                            title="best eq. 19 over trials, per study (sampler)"))
    if config.grid:
        files["grid"] = str(plot_grid(study, config.params[0].name if config.params else "epochs",
                                      out / "grid.png"))
    extra = {"objectives": list(config.objectives), "latency": config.latency, "files": files,
             "sampler": "grid" if config.grid else config.sampler, "pruner": config.pruner_}
    return write_best(study, options, out / "best.json", extra)
