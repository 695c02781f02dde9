"""``mobilekit compare`` variants (a method with option overrides, its own row), ``--retrain-epochs 0`` and the
report's forward-only and searched hyper-parameter columns."""

import json
import struct
from pathlib import Path

import pytest

import mobilekit.search
from mobilekit.cli import main
from mobilekit.compare import CompareSettings, run_comparison
from mobilekit.compare.report import markdown_table, summarize
from mobilekit.compare.run import _prepare, searched_hyperparameters
from mobilekit.compare.variants import Variant
from mobilekit.data import load_dataset
from mobilekit.errors import ConfigError


NARROW = "rh-narrow=random-has:multipliers=0.5,1,2"          # lr and weight decay drawn from default x [0.5, 2]
TINY = dict(data="digits", seeds=1, budget_epochs=4, retrain_epochs=0, protocol_samples=0, train_subset=64,
            batch_size=16, steps_per_epoch=2)


def tiny(table_path, target, out, **overrides):
    return CompareSettings(table=str(table_path), target_ms=target, out=str(out), **{**TINY, **overrides})


@pytest.fixture(scope="module")
def finished(tmp_path_factory, table_path, target):
    """random-has and its variant with a narrower hyper-parameter range, deliverables only (no retraining)."""
    settings = tiny(table_path, target, tmp_path_factory.mktemp("variants") / "out",
                    methods=("random-has", "rh-narrow"), variants=[NARROW])
    return settings, run_comparison(settings)


# ---- the syntax ----------------------------------------------------------------------------------------------------
def test_a_variant_reads_its_values_as_the_options_types():
    variant = Variant.parse("spos-small=spos:population=8:mutation-prob=0.25:lr=0.01:optimizer=sgd")
    assert (variant.name, variant.method) == ("spos-small", "spos")
    assert variant.options == {"population": 8, "mutation_prob": 0.25, "lr": 0.01, "optimizer": "sgd"}
    assert Variant.parse("sp-no-se=single-path:se=off").options == {"include_se": False}     # the flag's spelling
    assert Variant.parse(NARROW).options == {"multipliers": ("0.5", "1", "2")}


@pytest.mark.parametrize("text, message", [
    ("spos-small", "write NAME=METHOD"),
    ("a=nope:x=1", "method 'nope' is unknown"),
    ("spos=spos:population=8", "taken by a method"),
    ("a,b=spos", "must be letters, digits"),
    ("a=spos:population", "is not KEY=VALUE"),
    ("a=spos:population=x", "population must be an integer, got 'x'"),
    ("a=spos:population=1", "population must be >= 2, got 1"),
    ("a=spos:mutation_prob=nan", "must be a finite number"),
    ("a=autohas:estimator=adam", "estimator 'adam' is not allowed; use one of gumbel, reinforce"),
    ("a=spos:bogus=1", "spos has no option 'bogus'; its own options: population"),
    ("a=spos:epochs=3", "epochs is set by the comparison itself"),
    ("a=spos:population=4:population=5", "population is given twice"),
])
def test_a_bad_variant_is_one_clear_error_naming_it(text, message):
    with pytest.raises(ConfigError, match=message) as caught:
        Variant.parse(text)
    assert str(caught.value).startswith(f"--variant {text!r}:") and "\n" not in str(caught.value)


def test_a_variant_may_not_set_what_its_methods_budget_rule_derives(table_path, target, tmp_path):
    with pytest.raises(ConfigError, match="--variant rh-many: trials is set by random-has's budget rule"):
        tiny(table_path, target, tmp_path / "out", methods=("rh-many",), variants=["rh-many=random-has:trials=9"])


def test_methods_must_name_every_variant_and_only_defined_ones(table_path, target, tmp_path):
    with pytest.raises(ConfigError, match="the variant is not in --methods"):
        tiny(table_path, target, tmp_path / "out", methods=("random-has",), variants=[NARROW])
    with pytest.raises(ConfigError, match="method 'rh-narrow' is unknown; .* or a variant defined with --variant"):
        tiny(table_path, target, tmp_path / "out", methods=("random-has", "rh-narrow"))
    with pytest.raises(ConfigError, match="'rh-narrow' is defined twice"):
        tiny(table_path, target, tmp_path / "out", methods=("rh-narrow",), variants=[NARROW, NARROW + ",4"])


# ---- a comparison with a variant -----------------------------------------------------------------------------------
def test_a_variant_is_a_row_with_its_own_cells_and_run_folders(finished):
    settings, report = finished
    out = Path(settings.out)
    assert list(report["methods"]) == ["random-has", "rh-narrow"]
    assert sorted(p.name for p in (out / "cells").glob("*.json")) == ["random-has-s0.json", "rh-narrow-s0.json"]
    config = json.loads((out / "runs" / "rh-narrow-s0" / "config.json").read_text())
    assert config["method"] == "random-has" and config["multipliers"] == ["0.5", "1", "2"]
    assert json.loads((out / "compare.json").read_text())["variants"] == {
        "rh-narrow": {"method": "random-has", "options": {"multipliers": ["0.5", "1", "2"]}}}
    assert "| rh-narrow | 1 |" in (out / "results.md").read_text()


def test_a_variant_runs_under_its_methods_budget_rule(finished):
    _, report = finished
    rows = {r["method"]: r for r in report["rows"]}
    assert rows["rh-narrow"]["base_method"] == "random-has"
    for key in ("search_epochs_nominal", "final_epochs", "images_epochs", "rule"):
        assert rows["rh-narrow"][key] == rows["random-has"][key]


def test_the_variants_override_reaches_its_search(finished):
    _, report = finished
    row = next(r for r in report["rows"] if r["method"] == "rh-narrow")
    assert 3e-3 * 0.5 <= row["searched_lr"] <= 3e-3 * 2                      # lr default 3e-3
    assert 1e-4 * 0.5 <= row["searched_weight_decay"] <= 1e-4 * 2            # wd_default 1e-4


def test_a_rerun_with_another_definition_of_a_variant_is_refused(finished, table_path, target):
    settings, _ = finished
    again = tiny(table_path, target, settings.out, methods=("random-has", "rh-narrow"),
                 variants=["rh-narrow=random-has:multipliers=0.1,10"])
    with pytest.raises(ConfigError, match="holds variant 'rh-narrow' as rh-narrow=random-has:multipliers=0.5,1,2, not "
                                          "rh-narrow=random-has:multipliers=0.1,10"):
        run_comparison(again)


def test_a_variant_left_out_of_a_rerun_keeps_its_definition(finished, table_path, target, monkeypatch):
    settings, _ = finished
    monkeypatch.setattr(mobilekit.search, "run_search", lambda *a, **k: pytest.fail("finished cells rerun"))
    report = run_comparison(tiny(table_path, target, settings.out, methods=("random-has",)))
    assert [r["method"] for r in report["rows"]] == ["random-has"]
    stored = json.loads((Path(settings.out) / "compare.json").read_text())
    assert list(stored["variants"]) == ["rh-narrow"]
    with pytest.raises(ConfigError, match="holds variant 'rh-narrow'"):
        run_comparison(tiny(table_path, target, settings.out, methods=("rh-narrow",),
                            variants=["rh-narrow=random-has:wd_default=0.01"]))
    run_comparison(settings)                                  # the fixture's report again for later tests


def test_a_comparison_stored_before_variants_existed_resumes(tmp_path, table_path, target):
    settings = tiny(table_path, target, tmp_path / "out", methods=("random",))
    (tmp_path / "out").mkdir()
    stored = settings.to_dict()
    del stored["variants"]
    (tmp_path / "out" / "compare.json").write_text(json.dumps(stored))
    _prepare(settings)
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["variants"] == {}


# ---- --retrain-epochs 0 --------------------------------------------------------------------------------------------
def test_retrain_epochs_0_skips_the_retraining_and_shows_a_dash(finished):
    settings, report = finished
    assert all(r["retrain_test_accuracy"] is None and r["retrain_s"] is None for r in report["rows"])
    assert all(0 <= r["test_accuracy"] <= 1 for r in report["rows"])
    line = next(l for l in (Path(settings.out) / "results.md").read_text().splitlines() if l.startswith("| random-has"))
    assert line.split(" | ")[3] == "–"                                        # the retrained column
    png = (Path(settings.out) / "accuracy_latency.png").read_bytes()
    width = struct.unpack(">I", png[16:20])[0]
    assert png[:4] == b"\x89PNG" and width < 600                              # one panel: the deliverables


def test_retrain_epochs_0_with_protocol_samples_is_refused(table_path, target, tmp_path):
    with pytest.raises(ConfigError, match="--retrain-epochs 0 leaves the random-search protocol's 2 architectures "
                                          "untrained; add --protocol-samples 0"):
        tiny(table_path, target, tmp_path / "out", methods=("random",), protocol_samples=2)


# ---- the report's extra columns ------------------------------------------------------------------------------------
def test_searched_hyperparameters_are_the_stage_mean_and_only_when_searched():
    staged = {"final_hyperparameters": {"lr": 1e-3, "lr_stages": [1e-3, 3e-3], "weight_decay": 2e-4,
                                        "source": "autohas search"}}
    assert searched_hyperparameters(staged) == {"searched_lr": pytest.approx(2e-3), "searched_weight_decay": 2e-4}
    assert searched_hyperparameters({"final_hyperparameters": {"lr": 3e-3, "weight_decay": 0.0,
                                                               "source": "settings"}}) == {
        "searched_lr": None, "searched_weight_decay": None}


def test_the_table_shows_forward_only_images_and_searched_hyperparameters(finished):
    settings, report = finished
    rows = [r for r in report["rows"] if r["method"] == "random-has"]
    val_images = len(load_dataset("digits", 32, seed=0, train_subset=64).val)
    assert rows[0]["forward_only_images"] == 2 * val_images                  # 2 trials, each scored on |val|
    assert rows[0]["forward_only_epochs"] == pytest.approx(2 * val_images / 64, abs=1e-3)
    table = markdown_table(settings, summarize(settings, report["rows"]))
    header, _, first = table.splitlines()[:3]
    assert header.split(" | ")[-2:] == ["forward-only images (epochs)", "searched lr / weight decay |"]
    cells = first.split(" | ")
    assert cells[-2] == f"{rows[0]['forward_only_epochs']:.2f} ± 0.00"
    assert cells[-1] == f"{rows[0]['searched_lr']:.2g} ± 0 / {rows[0]['searched_weight_decay']:.2g} ± 0 |"


def test_the_searched_column_is_left_out_when_no_method_searched_hyperparameters(table_path, target, tmp_path):
    settings = tiny(table_path, target, tmp_path / "out", methods=("random",))
    row = {"method": "random", "seed": 0, "within_window": True, "within_window_without_repair": True,
           "test_accuracy": 0.5, "predicted_ms": target, "images_epochs": 4.0, "forward_only_epochs": 0.5}
    table = markdown_table(settings, summarize(settings, [row]))
    assert "searched lr" not in table and table.splitlines()[2].endswith("| 4 | 0.50 ± 0.00 |")


# ---- the command line ----------------------------------------------------------------------------------------------
def test_cli_bad_variant_exits_2_with_one_line_and_writes_nothing(tmp_path, table_path, target, capsys):
    code = main(["compare", "--table", str(table_path), "--target-ms", str(target), "--data", "digits",
                 "--methods", "random,spos-x", "--variant", "spos-x=spos:population=zero",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "population must be an integer, got 'zero'" in err
    assert not (tmp_path / "out").exists()


def test_cli_runs_a_variant_without_retraining(tmp_path, table_path, target, capsys):
    code = main(["compare", "--table", str(table_path), "--target-ms", str(target), "--data", "digits",
                 "--methods", "rnd-sgd", "--variant", "rnd-sgd=random:optimizer=sgd:lr=0.01", "--seeds", "1",
                 "--budget", "2", "--retrain-epochs", "0", "--protocol-samples", "0", "--train-subset", "64",
                 "--batch-size", "16", "--steps-per-epoch", "2", "--no-progress", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0 and "| rnd-sgd | 1 |" in out
    config = json.loads((tmp_path / "out" / "runs" / "rnd-sgd-s0" / "config.json").read_text())
    assert (config["method"], config["optimizer"], config["lr"]) == ("random", "sgd", 0.01)
