"""TensorBoard event files of a run (mobilekit/search/board.py), read back with tensorboard's EventAccumulator."""

import json
import math

import pytest
import torch

from _synthetic_tables import SEARCH_WIDTH, synthetic_table
from mobilekit.latency.differentiable import ExpectedLatency, SuperkernelLatency
from mobilekit.search import make_config, run_search
from mobilekit.search.board import decision_scalars, epoch_scalars
from mobilekit.search.supernets import MultiPathNet, SuperNet
from mobilekit.space import get_space


QUICK = dict(data="digits", epochs=2, steps_per_epoch=3, batch_size=16, final_epochs=1, export=(),
             train_resolution=32)


def events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0}).Reload()


def records_of(out, phase):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["phase"] == phase]


def test_search_writes_per_epoch_scalars_decisions_and_architecture_images(tmp_path, table_path, target):
    out = tmp_path / "run"
    said = []
    run_search(make_config(table=str(table_path), target_ms=target, out=str(out), **QUICK), log=said.append)
    assert f"live curves: tensorboard --logdir {out}" in said[:4]
    acc = events(out / "tensorboard")
    scalars = set(acc.Tags()["scalars"])
    for tag in ("search/ce", "search/accuracy", "search/val_accuracy", "search/runtime_ms", "search/runtime_hard_ms",
                "search/lambda", "search/lr", "final/ce", "final/accuracy", "final/val_accuracy"):
        assert tag in scalars, tag
    search = records_of(out, "search")
    for epoch in (0, 1):                                  # the event file holds what metrics.jsonl holds
        rows = [r for r in search if r["epoch"] == epoch]
        ce = {e.step: e.value for e in acc.Scalars("search/ce")}
        assert ce[epoch + 1] == pytest.approx(sum(r["ce"] for r in rows) / len(rows), rel=1e-5)
        lam = {e.step: e.value for e in acc.Scalars("search/lambda")}
        assert lam[epoch + 1] == pytest.approx(rows[-1]["lambda"], rel=1e-5, abs=1e-7)
        val = {e.step: e.value for e in acc.Scalars("search/val_accuracy")}
        assert val[epoch + 1] == pytest.approx(rows[-1]["val_accuracy"], rel=1e-5)
    # single-path NAS: a threshold margin per searchable layer and decision kind, at each epoch (keep only where
    # the layer may be skipped: elsewhere there is no decision)
    positions = get_space(width=SEARCH_WIDTH).searchable_positions
    for kind in ("kernel", "expand"):
        for position in positions:
            tag = f"search/decisions/margin_{kind}/layer_{position.index:02d}"
            assert [e.step for e in acc.Scalars(tag)] == [1, 2], tag
    keep = [t for t in scalars if t.startswith("search/decisions/margin_keep/")]
    assert 0 < len(keep) < len(positions)
    assert all([e.step for e in acc.Scalars(tag)] == [1, 2] for tag in keep)
    plots = acc.Images("search/architecture")             # the first epoch's always; later ones within 10 % time
    assert [e.step for e in plots][:1] == [1] and {e.step for e in plots} <= {1, 2}
    assert plots[0].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    texts = acc.Tags()["tensors"]
    assert {"config/text_summary", "summary/text_summary", "final/hyperparameters/text_summary"} <= set(texts)


def test_no_tensorboard_writes_no_event_files(tmp_path, table_path, target):
    out = tmp_path / "run"
    said = []
    run_search(make_config(table=str(table_path), target_ms=target, out=str(out), tensorboard=False,
                           **{**QUICK, "epochs": 1, "final_epochs": 0}), log=said.append)
    assert not (out / "tensorboard").exists()
    assert not any("tensorboard" in line for line in said)


def test_the_cli_flag_turns_tensorboard_off():
    from mobilekit.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["search", "--table", "t.json", "--target-ms", "5", "--out", "r", "--no-tensorboard"])
    assert args.tensorboard is False
    args = parser.parse_args(["search", "--table", "t.json", "--target-ms", "5", "--out", "r"])
    assert args.tensorboard is None            # the config's default: on


def test_diffautoml_writes_its_augmentation_policy_and_searched_hyperparameters(tmp_path, table_path, target):
    out = tmp_path / "run"
    run_search(make_config(table=str(table_path), target_ms=target, out=str(out), method="diffautoml",
                           **{**QUICK, "epochs": 1, "steps_per_epoch": 2, "final_epochs": 0}))
    acc = events(out / "tensorboard")
    scalars = set(acc.Tags()["scalars"])
    ops = [t for t in scalars if t.startswith("search/augment/op/")]
    assert len(ops) >= 2
    assert sum(acc.Scalars(t)[-1].value for t in ops) == pytest.approx(1.0, abs=1e-4)
    assert {"search/lr", "search/weight_decay", "search/decisions/entropy_mean"} <= scalars
    top = acc.Tensors("search/augment/top/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert top.startswith("1. ") and " then " in top


def test_decision_entropy_and_margin_of_a_categorical_supernet():
    space = get_space(width=SEARCH_WIDTH, resolution=32, num_classes=10)
    net = MultiPathNet(space, ExpectedLatency(synthetic_table(width=SEARCH_WIDTH)).candidates)
    undecided = decision_scalars(net)
    first = f"layer_{space.searchable_positions[0].index:02d}"
    choices = int(net.mask[0].sum())
    assert undecided[f"decisions/entropy/{first}"] == pytest.approx(math.log(choices), rel=1e-5)
    assert undecided[f"decisions/margin/{first}"] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        net.alpha[0, 0] = 50.0                             # the first layer decided, the others not
    decided = decision_scalars(net)
    assert decided[f"decisions/entropy/{first}"] == pytest.approx(0.0, abs=1e-4)
    assert decided[f"decisions/margin/{first}"] == pytest.approx(1.0, abs=1e-4)
    assert decided["decisions/entropy_mean"] < undecided["decisions/entropy_mean"]


def test_single_path_margins_follow_the_thresholds():
    space = get_space(width=SEARCH_WIDTH, resolution=32, num_classes=10)
    net = SuperNet(space, SuperkernelLatency(synthetic_table(width=SEARCH_WIDTH)).grid)
    tag = f"decisions/margin_kernel/layer_{space.searchable_positions[0].index:02d}"
    before = decision_scalars(net)[tag]
    layer = net.superkernels[0]
    with torch.no_grad():
        layer.t_kernel += 1.0
    assert decision_scalars(net)[tag] == pytest.approx(before - 1.0, abs=1e-5)


def test_epoch_scalars_average_batch_figures_and_keep_the_last_state():
    rows = [{"phase": "search", "step": 0, "epoch": 0, "ce": 2.0, "accuracy": 0.25, "lambda": 0.1, "arch": "x",
             "lr_stages": [0.1, 0.2], "operation_probs": list(range(14)), "within": True},
            {"phase": "search", "step": 1, "epoch": 0, "ce": 1.0, "accuracy": 0.75, "lambda": 0.3,
             "lr_stages": [0.3, 0.4], "val_accuracy": 0.5}]
    assert epoch_scalars(rows) == {"ce": 1.5, "accuracy": 0.5, "lambda": 0.3, "lr_stages/0": 0.3, "lr_stages/1": 0.4,
                                   "val_accuracy": 0.5}


def test_architecture_plots_are_drawn_when_the_network_changed_within_a_tenth_of_the_time(tmp_path):
    from mobilekit.search.board import Board

    table = synthetic_table(width=SEARCH_WIDTH)
    latency = SuperkernelLatency(table)
    space = get_space(width=SEARCH_WIDTH, resolution=32, num_classes=10)
    net = SuperNet(space, latency.grid)
    first = net.architecture().to_string()
    second = first.replace("ir_k5", "ir_k3", 1)
    assert second != first
    board = Board(tmp_path, space, latency)
    assert board.architecture("search/architecture", first, 1)            # the first plot: always
    assert not board.architecture("search/architecture", first, 2)        # unchanged: none
    board.image_s = 1e6                                                    # plots took more than 10 % so far
    assert not board.architecture("search/architecture", second, 3)
    board.image_s, board.opened = 0.1, board.opened - 100.0                 # 0.1 s of 100 s
    assert board.architecture("search/architecture", second, 4)
    board.close()
    assert [e.step for e in events(tmp_path / "tensorboard").Images("search/architecture")] == [1, 4]


VALIDATED = {   # method -> its options for a tiny search (the one-shot evolution and TNAS sampler kept small)
    "multipath": {},
    "autohas": {},
    "diffautoml": {},
    "spos": dict(population=4, generations=1, eval_samples=64, bn_steps=2),
    "tnas-os": dict(population=4, generations=1, eval_samples=64, bn_steps=2, tell_every=3, sampler_fit_steps=5),
}
VAL_KEYS = ("val_accuracy", "val_loss")


@pytest.mark.parametrize("method", list(VALIDATED))
def test_every_method_validates_each_epoch_without_changing_its_search(tmp_path, table_path, target, method,
                                                                       monkeypatch):
    """Each epoch's last search record carries val_accuracy and val_loss (the most likely path of a mixture
    supernet, the BN-recalibrated reference path of a one-shot one), the event file holds them per epoch and the
    search plot draws them; the same seed without the validation (main before it: ``Phase.validate`` off) gives the
    same records step by step and the same derived architecture."""
    from mobilekit.search.plots import search_figure
    from mobilekit.search.training import Phase

    settings = dict(table=str(table_path), target_ms=target, method=method, **{**QUICK, "final_epochs": 0},
                    **VALIDATED[method])
    out = tmp_path / "run"
    summary = run_search(make_config(out=str(out), **settings))
    search = records_of(out, "search")
    assert [r["epoch"] for r in search] == [0, 0, 0, 1, 1, 1]
    for r in search:
        last = r["step"] % 3 == 2
        assert all((key in r) == last for key in VAL_KEYS), r
        if last:
            assert 0.0 <= r["val_accuracy"] <= 1.0 and 0.0 < r["val_loss"] < 20.0
    acc = events(out / "tensorboard")
    for key in VAL_KEYS:
        logged = {e.step: e.value for e in acc.Scalars(f"search/{key}")}
        assert logged == pytest.approx({1: search[2][key], 2: search[5][key]}, rel=1e-5)
    figure = search_figure([dict(r, step=i) for i, r in enumerate(search)], target)
    lines = {line.get_label(): line for ax in figure.axes for line in ax.get_lines()}
    assert list(lines["validation accuracy"].get_xdata()) == [2, 5]
    assert list(lines["validation accuracy"].get_ydata()) == [search[2]["val_accuracy"], search[5]["val_accuracy"]]
    assert list(lines["validation loss"].get_ydata()) == [search[2]["val_loss"], search[5]["val_loss"]]
    legend = [t.get_text() for ax in figure.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert {"validation accuracy", "validation loss", "λ" if "lambda" in search[0] else "CE"} <= set(legend)
    import matplotlib.pyplot as plt

    plt.close(figure)
    assert (out / "search.png").exists()

    monkeypatch.setattr(Phase, "validate", lambda self: None)
    plain = tmp_path / "plain"
    unvalidated = run_search(make_config(out=str(plain), **{**settings, "tensorboard": False}))
    assert unvalidated["arch"] == summary["arch"]
    strip = lambda r: {k: v for k, v in r.items() if k not in VAL_KEYS}
    assert [strip(r) for r in records_of(plain, "search")] == [strip(r) for r in search]
