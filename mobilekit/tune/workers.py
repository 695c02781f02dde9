"""Parallel trials on one study: N local worker processes (``--workers N``), or trials as Ray tasks on a Ray
cluster (``--ray [ADDRESS]``). Neither schedules anything itself: every worker runs
:func:`~mobilekit.tune.study.run_worker` against the shared Optuna storage, and Ray places the tasks."""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

from mobilekit.errors import ConfigError
from mobilekit.tune.config import TuneConfig
from mobilekit.tune.study import finished_trials, open_study, requested_trials, run_worker


@dataclass
class WorkerReport:
    """How the workers ended: exit codes of local processes, or Ray tasks that raised (e.g. a killed worker)."""

    exit_codes: list[int]
    task_errors: list[str]


def _process_main(config: TuneConfig, worker: int) -> None:
    try:
        run_worker(config, worker)
    except KeyboardInterrupt:  # Ctrl-C reaches every worker: the parent prints the one line
        raise SystemExit(130) from None


def run_local_workers(config: TuneConfig) -> WorkerReport:
    """``config.workers`` processes (spawned: fresh interpreters, no forked torch state), each running trials
    until the study is done. A killed process leaves its trial failed; the others go on."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_process_main, args=(config, i), name=f"mobilekit-tune-{i}")
                 for i in range(config.workers)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()
        raise
    return WorkerReport([p.exitcode for p in processes], [])


def _ray_trial(config: TuneConfig, worker: int) -> int:
    return run_worker(config, worker, max_trials=1)


def run_ray(config: TuneConfig) -> WorkerReport:
    """Each trial is one Ray task (``num_cpus`` = the trial's threads) on the cluster at ``config.ray`` (an
    address, or "" for a local instance; an instance this process already initialised is used as it is).
    Up to ``config.workers`` tasks run at once (default: the cluster's CPUs over the threads per trial). Tasks
    that fail (a killed Ray worker) are counted; the study goes on while finished trials are missing, up to
    twice the requested count of tasks."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'mobilekit[distributed]' (or pip install ray)") from None
    if not ray.is_initialized():
        try:
            ray.init(address=config.ray or None, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"--ray {config.ray}: cannot join the Ray cluster ({exc})") from None
    threads = config.threads_per_worker or 1
    parallel = config.workers if config.workers > 1 else max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
    task = ray.remote(num_cpus=threads, max_retries=0)(_ray_trial)
    study = open_study(config)
    wanted = requested_trials(config)
    pending, errors, submitted = [], [], 0
    while True:
        missing = wanted - finished_trials(study) - len(pending)
        while missing > 0 and len(pending) < parallel and submitted < 2 * wanted:
            pending.append(task.remote(config, submitted))
            submitted, missing = submitted + 1, missing - 1
        if not pending:
            break
        done, pending = ray.wait(pending, num_returns=1)
        try:
            ray.get(done[0])
        except Exception as exc:  # a task whose worker died or raised: its trial is failed, the study goes on
            errors.append(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return WorkerReport([], errors)
