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


def _sliced_bn_step(rank: int, world: int, init: str, out: str) -> None:
    """One training forward/backward of an entangled SampledPathNet (its BatchNorms are sliced per candidate) on
    this rank's share of a fixed batch of 16; rank 0 saves the averaged gradients and the running statistics."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from mobilekit.latency.differentiable import ExpectedLatency
    from mobilekit.search.engine import Engine
    from mobilekit.search.methods.spos import PathSpace
    from mobilekit.search.supernets import SampledPathNet
    from mobilekit.space import get_space

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)       # so one process and two differ by rounding only
    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        space = get_space(width=WIDTH, resolution=32, num_classes=10)
        paths = PathSpace(ExpectedLatency(synthetic_table(width=WIDTH)), space)
        torch.manual_seed(0)
        net = SampledPathNet(space, paths.candidates, sharing="entangled")
        engine = Engine(rank=rank, world_size=world)
        engine.place(net)
        net.fix(paths.uniform(torch.Generator().manual_seed(3)))     # a path of smaller, sliced candidates
        net.train()
        x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        x, y = engine.batch(x, torch.arange(16) % 10)
        torch.manual_seed(5)                                           # the head's dropout masks
        F.cross_entropy(net(x), y).backward()
        params = [p for p in net.parameters() if p.grad is not None]
        engine.average_gradients(params)
        if rank == 0:
            torch.save({"grads": torch.cat([p.grad.reshape(-1) for p in params]),
                        "stats": torch.cat([b.reshape(-1).double() for n, b in net.named_buffers() if "running" in n])},
                       out)
    finally:
        if world > 1:
            dist.destroy_process_group()


@pytest.mark.skipif(sys.platform != "linux", reason="gloo over a file store")
def test_entangled_supernet_normalises_over_the_global_batch_like_one_process(tmp_path):
    """The one-shot supernets' entangled blocks run BatchNorm on a slice of a larger layer: over two ranks that
    slice is normalised with the statistics of the global batch, so the averaged gradients and the running
    statistics are one process's (float64: up to rounding). With per-rank statistics the two ranks' running
    statistics differ, a candidate scores differently on each rank and the evolution falls apart."""
    import torch
    import torch.multiprocessing as mp

    mp.spawn(_sliced_bn_step, args=(1, "", str(tmp_path / "one.pt")), nprocs=1)   # its own process: dtype, threads
    mp.spawn(_sliced_bn_step, args=(2, f"file://{tmp_path / 'store'}", str(tmp_path / "two.pt")), nprocs=2)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert torch.allclose(two["stats"], one["stats"], rtol=0, atol=1e-10)
    assert torch.allclose(two["grads"], one["grads"], rtol=0, atol=1e-9 * float(one["grads"].abs().max()))


@pytest.mark.skipif(sys.platform != "linux", reason="gloo over localhost")
@pytest.mark.parametrize("method", ["spos", "tnas-os"])
def test_two_process_one_shot_search_evolves_the_same_candidates_on_every_rank(tmp_path, method):
    """SPOS and TNAS-OS over two gloo processes: every rank recalibrates BN for the same candidates in the same
    order (a rank on another candidate size breaks the all-reduce: gloo "16 vs 8"), so the run finishes, the
    ranks' evolution results agree and rank 0 alone writes."""
    table = synthetic_table(width=WIDTH).save(tmp_path / "synthetic.json")
    fastest, slowest = SuperkernelLatency(synthetic_table(width=WIDTH)).bounds_ms()
    target = round(fastest + 0.5 * (slowest - fastest), 1)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    args = ["-m", "mobilekit", "search", "--method", method, "--table", str(table), "--target-ms", str(target),
            "--out", str(tmp_path / "run"), "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "16",
            "--final-epochs", "0", "--export", "none", "--threads", "1", "--no-progress", "--train-resolution", "32",
            "--population", "4", "--generations", "2", "--bn-steps", "1", "--eval-samples", "64"]
    if method == "tnas-os":
        args += ["--tell-every", "1", "--tell-batch", "32", "--sampler-fit-steps", "5"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*launcher, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["evolution_ranks_max_diff"] == 0.0
    evolution = json.loads((tmp_path / "run" / "evolution.json").read_text())
    assert len(evolution["scores"]) == summary["candidates_scored"] >= 4 and len(evolution["generations"]) == 3
    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in records] == [0, 1]               # one writer
