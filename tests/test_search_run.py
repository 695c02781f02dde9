"""Search runs end to end on digits at 32x32 (a few steps each, a narrow synthetic table to stay fast)."""

import json
from pathlib import Path

import pytest
import torch

from _synthetic_tables import SEARCH_WIDTH, synthetic_table
from mobilekit.cli import main
from mobilekit.errors import MobilekitError, SearchError
from mobilekit.models.torch_builder import MobileNet
from mobilekit.search import make_config, run_search
from mobilekit.space import Architecture

REPO = Path(__file__).resolve().parents[1]
WIDTH = SEARCH_WIDTH  # the width of the conftest table
QUICK = dict(data="digits", epochs=2, steps_per_epoch=3, batch_size=16, final_epochs=1, checkpoint_every=2,
             export=(), train_resolution=32)


def quick(table_path, target, out, **overrides):
    return make_config(table=str(table_path), target_ms=target, out=str(out), **{**QUICK, **overrides})


def test_single_path_run_writes_every_run_folder_file(tmp_path, table_path, target):
    out = tmp_path / "run"
    summary = run_search(quick(table_path, target, out, export=("onnx",), train_resolution=64))
    for name in ("summary.json", "arch.json", "config.json", "metrics.jsonl", "search.png", "architecture.png",
                 "weights.pt", "exported/model.onnx", "exported/model.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint.npz").exists()          # a finished run keeps no checkpoint
    stored = json.loads((out / "summary.json").read_text())
    assert stored == json.loads(json.dumps(summary))
    for key in ("method", "target_ms", "predicted_ms", "measured_ms", "val_accuracy", "test_accuracy", "search_s"):
        assert key in stored
    assert stored["method"] == "single-path" and stored["measured_ms"] is None
    assert "not reachable" in stored["measure_note"]
    assert stored["train_resolution"] == 64 and stored["deploy_resolution"] == 224
    assert stored["accuracy_is_proxy"] and stored["accuracy_note"].startswith("proxy")   # issue 22: called a proxy
    assert 0.9 * target <= stored["predicted_ms"] <= target
    assert stored["export_checks"]["onnx"]
    # issue 22: the run bundle carries what export needs; the exported model.json names the classes in order
    bundle = json.loads((out / "bundle.json").read_text())
    model_json = json.loads((out / "exported" / "model.json").read_text())
    assert bundle["class_names"] == model_json["class_names"] and len(bundle["class_names"]) == stored["num_classes"]
    assert bundle["mean"] == model_json["mean"] and bundle["std"] == model_json["std"]
    assert bundle["train_resolution"] == 64 and bundle["deploy_resolution"] == 224


def test_exported_model_is_measured_on_a_reachable_device(tmp_path, table_path, target):
    summary = run_search(quick(table_path, target, tmp_path / "run", export=("onnx",), train_resolution=64,
                               final_epochs=0, device=str(REPO / "devices" / "onnx-host.toml"), measure_runs=3))
    assert summary["measured_on"] == "onnx-host"
    assert summary["measured_ms"] > 0 and summary["measure_note"] is None
    gap = (summary["measured_ms"] - summary["predicted_ms"]) / summary["predicted_ms"]
    assert summary["latency_gap"] == pytest.approx(gap, abs=1e-4)       # issue 22: both kept, gap flagged
    assert (summary["latency_warning"] is not None) == (abs(gap) > 0.15)


def test_latency_gap_over_15_percent_is_a_warning_naming_the_head_class_count():
    from mobilekit.search.run import latency_gap_check

    quiet = latency_gap_check(0.148, 0.160, 1000, 3, "host", "host")
    assert quiet["latency_warning"] is None and quiet["latency_gap"] == pytest.approx(0.0811, abs=1e-4)
    loud = latency_gap_check(0.148, 0.080, 1000, 3, "host", "host")
    assert loud["latency_gap"] == pytest.approx(-0.4595, abs=1e-4)
    assert "-46%" in loud["latency_warning"] and "1000 classes" in loud["latency_warning"]
    assert "1000 classes" not in latency_gap_check(1.0, 2.0, 10, 10, "host", "host")["latency_warning"]


def test_run_folder_metrics_weights_and_architecture_agree(tmp_path, table_path, target):
    out = tmp_path / "run"
    summary = run_search(quick(table_path, target, out))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    search = [r for r in records if r["phase"] == "search"]
    assert [r["step"] for r in search] == list(range(6))
    for key in ("ce", "runtime_ms", "runtime_hard_ms", "lambda", "accuracy", "arch", "decisions"):
        assert key in search[0]
    arch = Architecture.load(out / "arch.json")
    assert arch.to_string() == summary["arch"]
    assert arch.space.resolution == 224 and arch.space.num_classes == 10
    model = MobileNet(arch)
    model.load_state_dict(torch.load(out / "weights.pt", weights_only=True))
    table_ms = synthetic_table(width=WIDTH).lookup_ms(arch)       # the table's head has 1000 classes, digits 10
    assert summary["predicted_ms_table"] == pytest.approx(table_ms, rel=1e-9)
    assert summary["predicted_ms"] == pytest.approx(table_ms + summary["head_correction"]["delta_ms"], rel=1e-9)
    assert summary["head_correction"]["num_classes"] == 10 and summary["head_correction"]["delta_ms"] < 0


class Killed(Exception):
    pass


def test_killed_search_resumes_from_its_checkpoint(tmp_path, table_path, target):
    whole = run_search(quick(table_path, target, tmp_path / "whole"))

    def kill_at_step_4(record):
        if record["phase"] == "search" and record["step"] == 4:
            raise Killed

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run_search(quick(table_path, target, out), on_step=kill_at_step_4)
    assert (out / "checkpoint.npz").is_file() and not (out / "summary.json").exists()
    resumed = run_search(quick(table_path, target, out, resume=True))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["phase"] == "search"] == list(range(6))
    assert resumed["search_steps"] == whole["search_steps"] == 6
    assert resumed["arch"] == whole["arch"]
    assert resumed["val_accuracy"] == whole["val_accuracy"]


def test_resume_with_other_settings_is_refused(tmp_path, table_path, target):
    out = tmp_path / "run"
    run_search(quick(table_path, target, out, final_epochs=0))
    with pytest.raises(SearchError, match=r"started with other settings \(epochs: 2 -> 3\)"):
        run_search(quick(table_path, target, out, final_epochs=0, epochs=3, resume=True))


def test_existing_run_folder_is_not_overwritten_without_resume(tmp_path, table_path, target):
    out = tmp_path / "run"
    run_search(quick(table_path, target, out, final_epochs=0))
    with pytest.raises(SearchError, match="already holds a run; pass --resume"):
        run_search(quick(table_path, target, out, final_epochs=0))


def test_random_baseline_picks_its_best_candidate_inside_the_window(tmp_path, table_path, target):
    summary = run_search(quick(table_path, target, tmp_path / "run", method="random", random_samples=2,
                               steps_per_epoch=2, final_epochs=0))
    candidates = summary["candidates"]
    assert len(candidates) == 2
    assert all(0.95 * target <= c["predicted_ms"] <= target for c in candidates)
    best = max(candidates, key=lambda c: c["val_accuracy"])
    assert summary["arch"] == best["arch"]
    assert summary["val_accuracy"] == pytest.approx(best["val_accuracy"])   # inherited weights, 0 final epochs


@pytest.mark.parametrize("method, count", [("random", "random_samples"), ("random-has", "trials")])
def test_multi_trial_baselines_resume_inside_a_trial_to_the_same_result(tmp_path, table_path, target, method, count):
    """The shared trial loop (search/methods/proxy_trials.py): killed inside the last trial, a resumed run keeps the finished
    trials' results and hands over the same best network and hyper-parameters as an uninterrupted run."""
    settings = dict(method=method, steps_per_epoch=2, epochs=3, final_epochs=1, **{count: 3})
    whole = run_search(quick(table_path, target, tmp_path / "whole", **settings))

    def kill_in_last_trial(record):
        if record["phase"] == "proxy-2" and record["step"] == 0:
            raise Killed

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run_search(quick(table_path, target, out, **settings), on_step=kill_in_last_trial)
    resumed = run_search(quick(table_path, target, out, resume=True, **settings))
    key = "candidates" if method == "random" else "trials"
    assert resumed[key] == whole[key] and len(whole[key]) == 3
    assert (resumed["arch"], resumed["val_accuracy"]) == (whole["arch"], whole["val_accuracy"])
    assert resumed["final_hyperparameters"] == whole["final_hyperparameters"] is not None


def test_multipath_run_ends_inside_the_window(tmp_path, table_path, target):
    summary = run_search(quick(table_path, target, tmp_path / "run", method="multipath", epochs=1, final_epochs=0))
    assert summary["method"] == "multipath"
    assert 0.9 * target <= summary["predicted_ms"] <= target
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"arch_ce", "runtime_ms", "runtime_hard_ms"} <= set(records[0])


# ---- the command line ---------------------------------------------------------------------------------------------
def test_cli_runs_a_recipe_with_flags_overriding_it(tmp_path, table_path, target, capsys):
    recipe = tmp_path / "quick.toml"
    recipe.write_text(f'[search]\ntable = "{table_path}"\ntarget_ms = {target}\nepochs = 5\nsteps_per_epoch = 2\n'
                      f'batch_size = 16\nfinal_epochs = 0\nexport = "none"\n')
    out = tmp_path / "run"
    code = main(["search", "--config", str(recipe), "--epochs", "1", "--out", str(out), "--no-progress",
                 "--train-resolution", "32"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "training resolution 32x32" in printed and "deployment resolution 224x224" in printed
    assert f"target {target:g} ms | predicted" in printed
    stored = json.loads((out / "config.json").read_text())
    assert stored["epochs"] == 1 and stored["steps_per_epoch"] == 2


def test_cli_target_outside_the_table_exits_2_with_one_line(tmp_path, capsys):
    code = main(["search", "--table", str(REPO / "latency_tables" / "pixel1-spnas.json"), "--target-ms", "20",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "41.1 ms" in err and "131.5 ms" in err


def test_cli_unknown_recipe_key_exits_2(tmp_path, capsys):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[search]\ntarget = 80\n')
    assert main(["search", "--config", str(recipe), "--out", str(tmp_path / "run")]) == 2
    assert "unknown key 'target'" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted((REPO / "search").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_recipes_are_complete_and_inside_their_tables(recipe, tmp_path):
    config = make_config(recipe, out=str(tmp_path / "run"))
    from mobilekit.search.budget import check_target
    from mobilekit.search.run import build_latency_model_for

    check_target(build_latency_model_for(config), config.target_ms)


def test_single_path_warm_up_trains_weights_only_then_the_runtime_term_starts(tmp_path, table_path, target):
    """Issue 19: the first warmup_share of the steps run with lambda = 0 and fixed thresholds (the authors'
    build_runtime_lambda schedule); the PI-steered runtime term starts after them."""
    from mobilekit.search.methods.single_path import warmup_steps

    out = tmp_path / "run"
    config = quick(table_path, target, out, warmup_share=0.5)
    run_search(config)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    search = [r for r in records if "runtime_hard_ms" in r]
    warm = warmup_steps(config, len(search))
    assert 0 < warm < len(search)
    assert all(r["lambda"] == 0.0 for r in search[:warm])
    assert len({r["arch"] for r in search[:warm]}) == 1               # thresholds fixed: no decision moved
    assert all(r["lambda"] != 0.0 for r in search[warm:])


def test_a_folder_without_training_state_is_reused(tmp_path, table_path, target):
    """A run that failed before training (bad data path) leaves config.json; the corrected rerun (other
    settings, with or without --resume) reuses the folder; a folder with training state is still refused."""
    out = tmp_path / "run"
    with pytest.raises(MobilekitError):
        run_search(quick(table_path, target, out, data=f"folder:{tmp_path / 'no-such-folder'}"))
    assert (out / "config.json").exists() and not (out / "metrics.jsonl").exists()
    run_search(quick(table_path, target, out, final_epochs=0, resume=True))
    assert json.loads((out / "config.json").read_text())["data"] == "digits"
    with pytest.raises(SearchError, match="already holds a run"):
        run_search(quick(table_path, target, out, final_epochs=0))
