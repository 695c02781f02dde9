"""``mobilekit tune --ray``: trials as Ray tasks on a local Ray instance the test starts (2 CPUs)."""

import os

import optuna
import pytest
import ray
from optuna.trial import TrialState

from _synthetic_tables import synthetic_table
from mobilekit.latency.differentiable import SuperkernelLatency
from mobilekit.tune import TuneConfig, parse_param, run_tune


@pytest.fixture
def local_ray(tmp_path):
    pythonpath = os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                             os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def test_trials_run_as_ray_tasks_on_one_study(tmp_path, local_ray):
    table = synthetic_table(width=0.35)
    fastest, slowest = SuperkernelLatency(table).bounds_ms()
    sets = {"table": str(table.save(tmp_path / "synthetic.json")), "target_ms": round((fastest + slowest) / 2, 1),
            "data": "digits", "epochs": 1, "final_epochs": 0, "steps_per_epoch": 1, "batch_size": 16,
            "export": (), "threads": 1, "train_resolution": 32}
    config = TuneConfig(out=str(tmp_path / "tune"), params=(parse_param("lambda:log:1e-3:1"),), sets=sets,
                        trials=2, sampler="random", ray="", workers=2)
    result = run_tune(config)
    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{tmp_path / 'tune' / 'study.db'}")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2 and result["task_errors"] == []
    assert os.getpid() not in {t.user_attrs["worker"]["pid"] for t in complete}   # ran in Ray workers
    assert result["best"]["run_folder"].startswith(str(tmp_path / "tune"))
