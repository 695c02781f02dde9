"""The training loop: torch.optim schedules and optimisers, weight decay, augmentation, exact resume with the
scheduler and RNG states in the checkpoint; the engine's accelerator and precision settings on a CPU-only host."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mobilekit.errors import ConfigError
from mobilekit.models.torch_builder import MobileNet
from mobilekit.search.config import SearchConfig
from mobilekit.search.engine import Engine
from mobilekit.search.outcome import TrainingHyperparameters
from mobilekit.search.runfolder import RunFolder, pack
from mobilekit.search.training import TrainPhase, augment
from mobilekit.space import Architecture, get_space

SPACE = get_space(width=0.35, resolution=32, num_classes=4)
HP = TrainingHyperparameters(lr=0.05, lr_schedule="linear", weight_decay=1e-3, optimizer="sgd", augment="crop-flip")


def data() -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(24, 3, 32, 32, generator=gen), torch.randint(0, 4, (24,), generator=gen))


def phase(run: RunFolder, seed: int = 0) -> TrainPhase:
    run.root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = MobileNet(Architecture(SPACE, tuple(p.candidates[0] for p in SPACE.positions)))
    return TrainPhase(model=model, hyperparameters=HP, name="final", run=run, dataset=data(), epochs=3,
                      batch_size=8, seed=seed, checkpoint_every=2)


class Stop(Exception):
    pass


def kill_after(run: RunFolder, step: int) -> None:
    """Train :func:`phase` in ``run`` and stop it, as a kill would, after ``step`` (its checkpoint saved)."""
    first = phase(run)

    def stop(record):
        if record["step"] == step:
            raise Stop
    first.on_step = stop
    with pytest.raises(Stop):
        first.run_loop()


def test_killed_training_resumes_exactly_with_schedule_optimiser_and_augmentation(tmp_path):
    whole = phase(RunFolder(tmp_path / "whole"))
    whole.run_loop()
    run = RunFolder(tmp_path / "killed")
    kill_after(run, 4)
    torch.manual_seed(123)                                   # the checkpoint's RNG state must win
    resumed = phase(run)
    start = resumed.restore(run.load_checkpoint())
    assert start == 4
    resumed.run_loop(start)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    lrs = [r["lr"] for r in run.records()]
    assert lrs == pytest.approx([0.05 * (1 - i / 9) for i in range(9)])      # LinearLR over 9 steps
    assert whole.optimizer.param_groups[0]["weight_decay"] == 1e-3
    assert type(whole.optimizer).__name__ == "SGD"


def test_augmentation_is_seeded_and_keeps_shapes():
    x = torch.randn(5, 3, 32, 32)
    assert torch.equal(augment(x, "crop-flip", 7), augment(x, "crop-flip", 7))
    assert augment(x, "crop-flip", 7).shape == x.shape
    assert not torch.equal(augment(x, "crop-flip", 7), x)
    flipped = augment(x, "flip", 1)
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x))


def settings(**kw):
    return SearchConfig(table="t.json", target_ms=50.0, out="o", **kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a host without CUDA")
def test_cuda_accelerator_without_cuda_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="--accelerator cuda: no CUDA device is visible here; use --accelerator cpu"):
        Engine.from_config(settings(accelerator="cuda"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_auto_accelerator_on_a_cpu_host_trains_on_the_cpu_and_ignores_mixed_precision():
    engine = Engine.from_config(settings(accelerator="auto", mixed_precision="bf16"))
    assert engine.device.type == "cpu" and engine.precision == "off"
    assert engine.notes == ["mixed precision bf16 is ignored on the CPU (runs in float32)"]


def test_channels_last_auto_is_on_for_the_cpu_and_off_turns_it_off():
    assert Engine.from_config(settings(accelerator="cpu")).channels_last            # auto: the faster CPU layout
    assert not Engine.from_config(settings(accelerator="cpu", channels_last="off")).channels_last
    assert "channels-last" in Engine.from_config(settings(accelerator="cpu")).describe()


def test_training_in_channels_last_follows_the_contiguous_loss_trajectory(tmp_path):
    """The layout is a speed choice only: an epoch of the same seeded training (SGD, crop-flip, dropout, linear
    schedule) gives the same per-step losses and weights in either layout, to float32 rounding. (Over many steps
    on this tiny random problem -- batch 8, BatchNorm -- rounding differences grow chaotically, as they do
    between two thread counts, so the comparison stops at the first epoch.)"""
    hp = TrainingHyperparameters(lr=0.005, lr_schedule="linear", weight_decay=1e-3, optimizer="sgd",
                                 augment="crop-flip")
    losses, weights = {}, {}
    for layout in (False, True):
        run = RunFolder(tmp_path / f"cl-{layout}")
        run.root.mkdir()
        torch.manual_seed(0)
        model = MobileNet(Architecture(SPACE, tuple(p.candidates[0] for p in SPACE.positions)))
        train = TrainPhase(model=model, hyperparameters=hp, name="final", run=run, dataset=data(), epochs=1,
                           batch_size=8, seed=0, engine=Engine(channels_last=layout))
        train.run_loop()
        losses[layout] = torch.tensor([r["ce"] for r in run.records()])
        weights[layout] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        if layout:
            assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert len(losses[True]) == 3
    assert torch.allclose(losses[True], losses[False], rtol=0, atol=1e-4), (losses[True], losses[False])
    assert (weights[True] - weights[False]).abs().max() < 1e-3, (weights[True] - weights[False]).abs().max()


def test_channels_last_placement_computes_the_same_logits():
    torch.manual_seed(0)
    model = MobileNet(Architecture(SPACE, tuple(p.candidates[-1] for p in SPACE.positions))).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    engine = Engine(channels_last=True)
    engine.place(model)
    xb, _ = engine.batch(x, torch.zeros(2, dtype=torch.long))
    assert xb.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(model(xb), expected, atol=1e-5)


# ---- streamed data ---------------------------------------------------------------------------------------------------
def image_folder(root, classes=4, per_class=6):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


def train_on(dataset, run: RunFolder, workers: int, stop_at: int | None = None, resume: bool = False) -> TrainPhase:
    run.root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = MobileNet(Architecture(SPACE, tuple(p.candidates[0] for p in SPACE.positions)))
    p = TrainPhase(model=model, hyperparameters=HP, name="final", run=run, dataset=dataset, epochs=2, batch_size=4,
                   seed=0, checkpoint_every=1, workers=workers)
    if stop_at is not None:
        def stop(record):
            if record["step"] == stop_at:
                raise Stop
        p.on_step = stop
    start = p.restore(run.load_checkpoint()) if resume else 0
    try:
        p.run_loop(start)
    except Stop:
        pass
    return p


def test_a_streamed_folder_trains_like_the_same_images_in_memory_and_resumes_exactly(tmp_path):
    from mobilekit.data import load_dataset

    splits = load_dataset(f"folder:{image_folder(tmp_path / 'images')}", resolution=32)
    assert not isinstance(splits.train, TensorDataset)                     # read lazily, not one tensor
    items = [splits.train[i] for i in range(len(splits.train))]
    in_memory = TensorDataset(torch.stack([x for x, _ in items]), torch.stack([y for _, y in items]))
    reference = train_on(in_memory, RunFolder(tmp_path / "memory"), workers=0)
    streamed = train_on(splits.train, RunFolder(tmp_path / "stream"), workers=2)
    train_on(splits.train, RunFolder(tmp_path / "killed"), workers=2, stop_at=3)
    resumed = train_on(splits.train, RunFolder(tmp_path / "killed"), workers=2, resume=True)
    for name, a in reference.model.state_dict().items():
        assert torch.equal(a, streamed.model.state_dict()[name]), name
        assert torch.equal(a, resumed.model.state_dict()[name]), name


def test_the_checkpoint_record_count_follows_the_log_without_rereading_it(tmp_path, monkeypatch):
    run = RunFolder(tmp_path / "r")
    run.root.mkdir()
    assert run.record_count() == 0
    for i in range(5):
        run.log({"step": i})
    monkeypatch.setattr(RunFolder, "records", lambda self: pytest.fail("a checkpoint re-read the whole log"))
    assert run.record_count() == 5
    tensors, meta = pack({"net": nn.Linear(2, 1)}, {})          # what a phase saves
    run.save_checkpoint(tensors, {**meta, "phase": "search", "next_step": 5})
    monkeypatch.undo()
    assert run.load_checkpoint()[1]["records"] == 5
    run.truncate_metrics(3)
    assert run.record_count() == 3 == len(run.records())
    RunFolder(run.root).log({"step": 3})           # another writer: the size changed, so it is recounted
    assert run.record_count() == 4 == len(run.records())


def test_one_shot_validation_restores_the_supernet_generators_and_modes_and_waits_on_no_other_rank(tmp_path):
    """The per-epoch validation of a one-shot supernet (SPOS / TNAS-OS: the reference path after a BN
    recalibration) leaves no trace: BN statistics, the active path, every module's training flag and the global
    generators are as before; shard-aware layers of a two-process run act as one process meanwhile (the writer
    validates alone, so an all-reduce would wait forever) and get their world size back."""
    import random
    from types import SimpleNamespace

    import numpy as np

    from _synthetic_tables import synthetic_table
    from mobilekit.latency.differentiable import ExpectedLatency
    from mobilekit.search.engine import shard_aware
    from mobilekit.search.methods.spos import OneShotPhase, PathSpace, uniform_draw
    from mobilekit.search.supernets import SampledPathNet

    latency = ExpectedLatency(synthetic_table(width=0.35))
    paths = PathSpace(latency, SPACE)
    torch.manual_seed(0)
    net = SampledPathNet(SPACE, paths.candidates)
    shard_aware(net, rank=0, world_size=2)
    config = SimpleNamespace(optimizer="sgd", lr=0.01, weight_decay=0.0, lr_schedule="constant", bn_steps=2)
    phase = OneShotPhase(net=net, paths=paths, draw=uniform_draw(paths), config=config, name="search",
                         run=RunFolder(tmp_path), dataset=data(), epochs=1, batch_size=8, seed=0,
                         val_dataset=data())
    net.fix(paths.uniform(torch.Generator().manual_seed(1)))
    assert net.active() != phase.reference
    net.train()
    net.head.eval()                                                  # a mixed state comes back as it was
    before = {k: v.clone() for k, v in net.state_dict().items()}
    active, modes = net.active(), [m.training for m in net.modules()]
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    validation = phase.validate()
    assert set(validation) == {"val_accuracy", "val_loss"} and 0 <= validation["val_accuracy"] <= 1
    assert validation["val_loss"] > 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.active() == active and [m.training for m in net.modules()] == modes
    assert {m.world_size for m in net.modules() if hasattr(m, "world_size")} == {2}
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    assert draws == (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert phase.validate() == validation                           # the same reference path, the same figures


def test_a_checkpoint_whose_optimiser_no_longer_fits_is_one_search_error_not_a_traceback(tmp_path):
    """A run folder from an older version: its optimiser had one parameter group, this run's has two. The phase's
    restore turns the load error into the one damaged-checkpoint line, the same mechanism as any other damage."""
    from mobilekit.errors import SearchError

    run = RunFolder(tmp_path / "run")
    kill_after(run, 2)
    tensors, meta = run.load_checkpoint()
    resumed = phase(run)
    params = list(resumed.model.parameters())
    resumed.optimizers["opt"] = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:], "lr": 0.5}],
                                                  lr=0.1)
    records = (run.root / "metrics.jsonl").read_bytes()
    with pytest.raises(SearchError, match=r"checkpoint.npz: damaged checkpoint \(it does not fit this run: "
                                          r"ValueError: .*\); move it away .* or use another --out$"):
        resumed.restore((tensors, meta))
    assert (run.root / "metrics.jsonl").read_bytes() == records          # nothing rewritten before the refusal
    assert phase(run).restore(run.load_checkpoint()) == 2                # the same layout loads
