"""Issue 22, defaults that cannot mislead: ``--train-resolution`` defaults to the table's (deployed) resolution and
config.json stores the one used; an old run folder without the field resumes at 32; ``--finetune-epochs`` fine-tunes
at the deployed resolution; in-memory sets too large at a resolution are resized per batch.

Runs use digits and a synthetic table at 64 px (a few steps each) so the deployed resolution stays cheap."""

import json

import numpy as np
import pytest
import torch

from _synthetic_tables import SEARCH_WIDTH, synthetic_table
from mobilekit.cli import main
from mobilekit.errors import SearchError
from mobilekit.latency.differentiable import SuperkernelLatency
from mobilekit.search import make_config, run_search

DEPLOY = 64
QUICK = dict(data="digits", epochs=1, steps_per_epoch=2, batch_size=16, final_epochs=1, checkpoint_every=1,
             export=(), threads=1)


@pytest.fixture(scope="module")
def table64(tmp_path_factory):
    """(path of a synthetic table at 64 px, a target halfway between its fastest and slowest network in ms)."""
    table = synthetic_table(width=SEARCH_WIDTH, resolution=DEPLOY)
    fastest, slowest = SuperkernelLatency(table).bounds_ms()
    path = table.save(tmp_path_factory.mktemp("tables") / "synthetic-64.json")
    return path, round(fastest + 0.5 * (slowest - fastest), 1)


def quick(table64, out, **overrides):
    path, target = table64
    return make_config(table=str(path), target_ms=target, out=str(out), **{**QUICK, **overrides})


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


class Killed(Exception):
    pass


def test_default_trains_at_the_tables_resolution_and_config_json_stores_it(tmp_path, table64, capsys):
    path, target = table64
    out = tmp_path / "run"
    code = main(["search", "--table", str(path), "--target-ms", str(target), "--out", str(out), "--data", "digits",
                 "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "16", "--final-epochs", "1",
                 "--export", "onnx", "--threads", "1", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "training resolution 64x64" in printed and "PROXY" not in printed
    assert json.loads((out / "config.json").read_text())["train_resolution"] == DEPLOY
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_resolution"] == summary["deploy_resolution"] == DEPLOY
    assert summary["deliverable_training"] == "deployed-resolution" and not summary["accuracy_is_proxy"]
    assert summary["finetune_epochs"] == 0 and summary["resolution_warning"] is None
    # the PyTorch test accuracy is the deployed network's, the exported file's own agrees with it
    assert summary["accuracy"] == pytest.approx(summary["test_accuracy"], abs=0.01)


def test_an_old_run_folder_without_the_field_resumes_at_32(tmp_path, table64):
    out = tmp_path / "old"

    def kill_in_final(record):
        if record["phase"] == "final":
            raise Killed

    with pytest.raises(Killed):
        run_search(quick(table64, out, train_resolution=32), on_step=kill_in_final)
    stored = json.loads((out / "config.json").read_text())
    assert stored.pop("train_resolution") == 32
    stored.pop("finetune_epochs")
    (out / "config.json").write_text(json.dumps(stored))          # as a run folder written before the default
    with pytest.raises(SearchError, match=r"train_resolution: 32 -> 64"):
        run_search(quick(table64, out, train_resolution=DEPLOY, resume=True))
    summary = run_search(quick(table64, out, resume=True))        # no --train-resolution: what it trained at
    assert summary["train_resolution"] == 32 and summary["deliverable_training"] == "proxy"
    assert json.loads((out / "config.json").read_text())["train_resolution"] == 32
    assert [r["step"] for r in records(out) if r["phase"] == "search"] == [0, 1]


def test_finetune_epochs_train_at_the_deployed_resolution_and_resume_inside_the_finetuning(tmp_path, table64):
    settings = dict(train_resolution=32, finetune_epochs=1, export=("onnx",))
    whole = run_search(quick(table64, tmp_path / "whole", **settings))
    assert whole["deliverable_training"] == "finetuned" and not whole["accuracy_is_proxy"]
    assert whole["finetune_epochs"] == 1 and whole["finetune_s"] > 0 and whole["accuracy_note"] is None
    assert "deployed resolution 64x64" in whole["test_accuracy_of"] and "fine-tuned 1 epoch" in whole["resolution_note"]
    assert whole["accuracy"] == pytest.approx(whole["test_accuracy"], abs=0.01)   # the files score what was reported
    finetune = [r for r in records(tmp_path / "whole") if r["phase"] == "finetune"]
    assert [r["step"] for r in finetune] == list(range(len(finetune))) and finetune[-1]["val_accuracy"] >= 0
    # the bundle's normalisation is the deployed resolution's (what the fine-tuned weights saw)
    bundle = json.loads((tmp_path / "whole" / "bundle.json").read_text())
    from mobilekit.data import load_dataset

    assert bundle["mean"] == pytest.approx(list(load_dataset("digits", DEPLOY).mean))

    def kill_in_finetune(record):
        if record["phase"] == "finetune" and record["step"] == 1:
            raise Killed

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run_search(quick(table64, out, **settings), on_step=kill_in_finetune)
    resumed = run_search(quick(table64, out, resume=True, **settings))
    assert [r["phase"] for r in records(out)] == [r["phase"] for r in records(tmp_path / "whole")]
    assert resumed["test_accuracy"] == pytest.approx(whole["test_accuracy"])


def test_without_finetuning_a_smaller_training_resolution_is_called_a_proxy(tmp_path, table64):
    summary = run_search(quick(table64, tmp_path / "run", train_resolution=32))
    assert summary["deliverable_training"] == "proxy" and summary["accuracy_is_proxy"]
    assert summary["finetune_epochs"] == 0 and summary["accuracy_note"].startswith("proxy")


def test_a_split_too_large_to_hold_resized_is_resized_per_batch(monkeypatch):
    from mobilekit.data import datasets
    from mobilekit.search.training import load_batches, split_for_architecture

    held = datasets.load_dataset("digits", DEPLOY)
    monkeypatch.setattr(datasets, "IN_MEMORY_LIMIT_BYTES", 100 * 3 * DEPLOY * DEPLOY * 4)   # 100 images
    lazy = datasets.load_dataset("digits", DEPLOY)
    for name in ("train", "val", "test"):
        split = getattr(lazy, name)
        assert isinstance(split, datasets.ResizedArraySplit), name
        assert split.images.nbytes < len(split) * 3 * DEPLOY * DEPLOY * 4 / 10     # the 8x8 sources, not 64 px
    assert lazy.mean == pytest.approx(held.mean, abs=1e-5) and lazy.std == pytest.approx(held.std, abs=1e-5)
    index = torch.tensor([5, 0, 77, 3])
    (x, y), = load_batches(lazy.train, [index])
    want_x, want_y = held.train.tensors
    assert x.shape == (4, 3, DEPLOY, DEPLOY) and torch.equal(y, want_y[index])
    assert torch.allclose(x, want_x[index], atol=1e-4)
    weights, arch = split_for_architecture(lazy.train, seed=0)
    assert isinstance(weights, datasets.ResizedArraySplit) and len(weights) + len(arch) == len(lazy.train)
    assert sorted(np.concatenate([weights.labels, arch.labels]).tolist()) == sorted(lazy.train.labels.tolist())
