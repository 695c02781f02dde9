"""The search engine's seams: the method registry (a toy method added by one module + one registry line, run end
to end through the CLI), options derived into flags and recipe sections, validated with one-line errors, the
typed outcome's hyper-parameters reaching the final training, and interrupted / damaged runs."""

import json
from pathlib import Path

import pytest

from _synthetic_tables import SEARCH_WIDTH, synthetic_table
from cli_helpers import search_interrupted_at
from mobilekit.cli import main
from mobilekit.errors import ConfigError
from mobilekit.search import make_config
from mobilekit.search.registry import METHODS, register, unregister

WIDTH = SEARCH_WIDTH  # the width of the conftest table
QUICK = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "16", "--export", "none", "--no-progress",
         "--train-resolution", "32"]


@pytest.fixture
def toy_method():
    register("toy", "_toy_method")          # the one registry line of a new method
    yield METHODS["toy"]
    unregister("toy")


def test_a_registered_toy_method_runs_end_to_end_through_the_cli(tmp_path, table_path, target, toy_method, capsys):
    recipe = tmp_path / "toy.toml"
    recipe.write_text(f'[search]\nmethod = "toy"\ntable = "{table_path}"\ntarget_ms = {target}\nfinal_epochs = 1\n'
                      '[search.toy]\ngreedy_passes = 3\n[search.single-path]\nrelax = "ste"\n')
    out = tmp_path / "run"
    code = main(["search", "--config", str(recipe), "--order", "backward", "--out", str(out), *QUICK])
    printed = capsys.readouterr().out
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "toy" and summary["passes"] == 3
    assert 0.9 * target <= summary["predicted_ms"] <= target
    stored = json.loads((out / "config.json").read_text())
    assert stored["greedy_passes"] == 3 and stored["order"] == "backward" and "relax" not in stored
    # the hyper-parameters the toy search chose reach the final training, and the run says so
    assert summary["final_hyperparameters"] == {"lr": 0.01, "lr_schedule": "linear", "weight_decay": 1e-4,
                                                "optimizer": "adamw", "augment": "flip", "source": "toy search"}
    assert "final training, 1 epochs: lr 0.01 (linear schedule), weight decay 0.0001, adamw, augmentation flip " \
           "(from the toy search)" in printed
    finals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [round(r["lr"], 6) for r in finals if r["phase"] == "final"] == [0.01, 0.005]   # linear to 0 over 2 steps


def test_search_help_lists_every_method_and_its_flags(toy_method, capsys):
    assert main(["search", "--help"]) == 0
    text = capsys.readouterr().out
    for name in ("single-path", "multipath", "random", "toy"):
        assert f"  {name}" in text and f"{name} options" in text
    for flag in ("--relax", "--arch-lr", "--random-samples", "--greedy-passes", "--accelerator", "--weight-decay"):
        assert flag in text


def test_an_option_of_another_method_is_refused_naming_its_owner(tmp_path, table_path, target, capsys):
    code = main(["search", "--table", str(table_path), "--target-ms", str(target), "--out", str(tmp_path / "r"),
                 "--method", "multipath", "--relax", "ste"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--relax: 'relax' is a single-path option, but the method is multipath" in err


def test_zero_target_is_out_of_range_not_missing(tmp_path, table_path, capsys):
    code = main(["search", "--table", str(table_path), "--target-ms", "0", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--target-ms: target_ms must be > 0, got 0" in err


def test_a_string_where_a_number_belongs_names_the_recipe_and_the_field(tmp_path, table_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(f'[search]\ntable = "{table_path}"\ntarget_ms = 50\nout = "x"\nepochs = "eight"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: epochs must be an integer, got 'eight' \(str\); "
                                          r"write e\.g\. epochs = 8"):
        make_config(recipe)


def test_method_option_ranges_are_checked_in_their_section(tmp_path, table_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(f'[search]\ntable = "{table_path}"\ntarget_ms = 50\nout = "x"\n'
                      '[search.single-path]\nthreshold_momentum = 1.5\n')
    with pytest.raises(ConfigError, match=r"bad\.toml \[search\.single-path\]: threshold_momentum must be < 1"):
        make_config(recipe)


def test_unknown_method_section_and_choice_are_refused(tmp_path, table_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(f'[search]\ntable = "{table_path}"\ntarget_ms = 50\nout = "x"\n[search.fbnet]\narch_lr = 1\n')
    with pytest.raises(ConfigError, match=r"section \[search\.fbnet\] names no method"):
        make_config(recipe)
    with pytest.raises(ConfigError, match="optimizer 'lamb' is not allowed; use one of adam, adamw, sgd"):
        make_config(None, table=str(table_path), target_ms=50, out="x", optimizer="lamb")


def test_flat_keys_reach_the_method_options(table_path):
    config = make_config(None, method="single-path", table=str(table_path), target_ms=80, out="x", epochs=2,
                         steps_per_epoch=2, lambda_lr=0.0, lambda_p=0.0, export=(), relax="ste")
    assert config.method_options.relax == "ste" and config.relax == "ste" and config.export == ()
    assert config.to_dict()["relax"] == "ste"


def test_interrupted_search_says_resume_and_resume_finishes_it(tmp_path, table_path, target, capsys):
    out = tmp_path / "run"
    args = ["search", "--table", str(table_path), "--target-ms", str(target), "--out", str(out), "--final-epochs",
            "0", *QUICK, "--epochs", "2"]
    with search_interrupted_at(2):
        assert main(args) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "re-run the same command with --resume" in err
    assert main(args + ["--resume"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["phase"] == "search"] == [0, 1, 2, 3]


def test_damaged_checkpoint_on_resume_is_one_line_exit_2(tmp_path, table_path, target, capsys):
    out = tmp_path / "run"
    args = ["search", "--table", str(table_path), "--target-ms", str(target), "--out", str(out), "--final-epochs",
            "0", *QUICK]
    out.mkdir()
    make_config(None, table=str(table_path), target_ms=target, out=str(out))  # settings are fine
    (out / "config.json").write_text(json.dumps(make_config(
        None, table=str(table_path), target_ms=target, out=str(out), epochs=1, steps_per_epoch=2, batch_size=16,
        export=(), final_epochs=0, train_resolution=32).to_dict()))
    (out / "checkpoint.npz").write_bytes(b"PK\x03\x04 cut short")
    from mobilekit import safewrite

    for name in ("config.json", "checkpoint.npz"):    # as a killed mobilekit run leaves them: listed as its own
        safewrite.record(out / name)
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint.npz: unreadable checkpoint" in err and "--resume" in err
    assert (out / "checkpoint.npz").read_bytes() == b"PK\x03\x04 cut short"        # nothing deleted


def test_a_regression_predictor_fills_the_unmeasured_types_the_search_consumes(tmp_path):
    from mobilekit.latency.regression import LayerLatencyRegressor
    from mobilekit.search.run import build_latency_model_for
    from mobilekit.space import LayerType

    measured = synthetic_table(width=WIDTH)
    predictor = LayerLatencyRegressor(model="ridge", cv=2).fit_table(measured).save(tmp_path / "predictor.json")
    no_se = synthetic_table(width=WIDTH, with_se=False).save(tmp_path / "no-se.json")
    plain = build_latency_model_for(make_config(None, table=str(no_se), target_ms=50, out="x"))
    filled = build_latency_model_for(make_config(None, table=str(no_se), target_ms=50, out="x",
                                                 predictor=str(predictor)))
    assert not plain.include_se and filled.include_se              # SE types become searchable
    se_type = LayerType(5, 6, 0.5)
    expected = LayerLatencyRegressor.load(predictor).fill_table(synthetic_table(width=WIDTH, with_se=False))
    assert filled.type_ms(5, se_type) == expected.latency_ms(5, se_type) > 0
    assert filled.type_ms(5, LayerType(5, 6, 0.0)) == measured.latency_ms(5, LayerType(5, 6, 0.0))
