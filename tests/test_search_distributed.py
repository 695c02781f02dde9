"""Data-parallel search with PyTorch's own launcher (torchrun's module form), gloo on 2 CPU processes: the same
seed and global batch give the same derived architecture as one process, the architecture parameters stay
identical on both ranks, and only rank 0 writes the run folder.

The weights use SGD here: Adam's first steps are sign-like (each weight moves by +-lr), so float-level differences
between one process and two (sums in another order) flip near-zero gradients into opposite full-size steps, and
a 4-step search then decides a few near-tied thresholds differently. With SGD the two runs differ by float noise
only. (The window repair that follows is not compared: it ranks near-equal layer scores.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _synthetic_tables import synthetic_table
from mobilekit.latency.differentiable import SuperkernelLatency

REPO = Path(__file__).resolve().parents[1]
WIDTH = 0.35


def search_args(table, target, out):
    return ["-m", "mobilekit", "search", "--table", str(table), "--target-ms", str(target), "--out", str(out),
            "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "16", "--final-epochs", "0", "--export",
            "none", "--threads", "1", "--no-progress", "--optimizer", "sgd", "--train-resolution", "32"]


@pytest.mark.skipif(sys.platform != "linux", reason="gloo over localhost")
def test_two_cpu_processes_derive_the_same_architecture_as_one(tmp_path):
    table = synthetic_table(width=WIDTH).save(tmp_path / "synthetic.json")
    fastest, slowest = SuperkernelLatency(synthetic_table(width=WIDTH)).bounds_ms()
    target = round(fastest + 0.5 * (slowest - fastest), 1)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, *search_args(table, target, tmp_path / "one")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    double = subprocess.run([*launcher, *search_args(table, target, tmp_path / "two")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["architecture_params_max_diff"] == 0.0           # thresholds identical on both ranks
    assert two["derived_arch"] == one["derived_arch"]
    assert two["lambda_final"] == pytest.approx(one["lambda_final"])
    records = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in records] == [0, 1, 2, 3]      # one writer: no duplicated lines
    assert double.stdout.count("single-path: ") == 1                  # only rank 0 reports
