"""``mobilekit tune --storage postgresql://...`` on a real PostgreSQL server (a throwaway cluster of Debian's
``postgresql``, started by the fixture; ``make test`` installs it). Skipped only when the server binaries are
absent. Trials are tiny searches (digits at 32x32, one step, no final training, no export)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from postgres_server import postgres_server, server_binaries
from mobilekit.tune.storage import driver_url
from test_tune import set_args, subprocess_env, tiny, tiny_config  # noqa: F401 - tiny is a fixture

pytestmark = pytest.mark.skipif(server_binaries() is None,
                                reason="PostgreSQL server binaries (initdb, pg_ctl) absent: run make postgresql")


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


def quick(tiny):
    """The tiny trials without event files (the trials' cost is the point here, not what they log)."""
    return {**tiny, "tensorboard": False}


def tune_command(url, out, study, trials, seed, tiny, *extra):
    return [sys.executable, "-m", "mobilekit", "tune", "--out", str(out), "--storage", url, "--study", study,
            "--param", "lambda:log:1e-3:1", "--trials", str(trials), "--sampler", "random", "--seed", str(seed),
            "--no-progress", *extra, *set_args(quick(tiny))]


def test_two_workers_finish_a_postgres_study_with_no_trial_lost_or_duplicated(tmp_path, tiny, postgres_url):
    processes = [subprocess.Popen(tune_command(postgres_url, tmp_path / f"machine{i}", "shared", 2, i, tiny),
                                  env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for i in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=driver_url(postgres_url))
    trials = study.get_trials(deepcopy=False)
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]   # none lost
    # the requested 2; a worker may start one more while the other finishes the second
    assert 2 <= len(trials) <= 3
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    folders = [t.user_attrs["run_folder"] for t in trials]
    assert len(set(folders)) == len(folders)                                              # none run twice
    assert all((Path(folder) / "summary.json").is_file() for folder in folders)
    assert {Path(f).parents[1].name for f in folders} <= {"machine0", "machine1"}
    assert all(t.params and t.value is not None for t in trials)


def test_a_killed_workers_trial_is_failed_by_the_heartbeat_and_retried_elsewhere(tmp_path, tiny, postgres_url,
                                                                                  monkeypatch):
    from mobilekit.tune import run_tune

    killed = subprocess.Popen(tune_command(postgres_url, tmp_path / "machine0", "killed", 1, 0, tiny,
                                           "--heartbeat", "1"),
                              env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "machine0" / "killed" / "trial-0000" / "config.json").exists():
            assert killed.poll() is None and time.monotonic() < deadline, "the worker never started a trial"
            time.sleep(0.05)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    study = optuna.load_study(study_name="killed", storage=driver_url(postgres_url))
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
    time.sleep(2.5)                                      # its heartbeat (1 s) is now older than the grace period (2 s)
    # another machine: the dead process is not one of its own, so only the storage's heartbeat can fail the trial
    monkeypatch.setattr("mobilekit.tune.storage.socket.gethostname", lambda: "another-machine")
    run_tune(tiny_config(quick(tiny), tmp_path / "machine1", storage=postgres_url, study="killed", trials=1,
                         sampler="random", heartbeat_s=1))
    trials = optuna.load_study(study_name="killed", storage=driver_url(postgres_url)).trials
    assert trials[0].state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == trials[0].params
    assert retried[0].user_attrs["worker"]["host"] == "another-machine"
    assert len(trials) == 2                              # the killed trial and its retry: nothing else ran
    assert not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
