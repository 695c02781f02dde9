"""Fuzz suite, part 2 (Hypothesis): malformed recipes and option values for the commands that run searches
(``search``, ``compare``, ``tune``). As in ``test_cli_fuzz.py``: exit code 2, exactly one line on stderr, no
traceback, and the output folder's files unchanged. Every generated input is invalid, so no search starts; should
one slip through, the base settings keep the search tiny, so the test fails fast instead of training."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import PIXEL1_TABLE
from test_cli_fuzz import INF, NAN, Workspace, toml_value

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
TABLE = str(PIXEL1_TABLE)
TINY = {"table": TABLE, "target_ms": 80, "epochs": 1, "steps_per_epoch": 1, "final_epochs": 0, "export": "none",
        "batch_size": 8, "threads": 1, "train_resolution": 32}

# common search options with a lower bound (all of them >= 0 or more), and one upper bound
_BOUNDED = ["target_ms", "epochs", "final_epochs", "train_resolution", "finetune_epochs", "batch_size",
            "steps_per_epoch", "lr", "weight_decay", "lambda_lr", "lambda_p", "target_aim", "measure_runs",
            "checkpoint_every", "threads", "workers", "train_subset"]
_CHOICES = ["method", "final_init", "lr_schedule", "optimizer", "augment", "accelerator", "mixed_precision",
            "channels_last"]
bad_bounded = st.one_of(st.sampled_from([NAN, INF, -INF, -1, -0.5, "8", [1], {"a": 1}, True]),
                        st.integers(max_value=-1), st.text(max_size=8))
bad_choice = st.one_of(st.sampled_from([3, 1.5, True, [1]]),
                       st.text(min_size=1, max_size=12).filter(lambda s: s.lower() not in
                                                               {"auto", "cpu", "off", "on", "none", "adam", "sgd"}))


def recipe_text(settings_: dict) -> str:
    lines = ["[search]"]
    for key, value in settings_.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


@FUZZ
@given(field=st.sampled_from(_BOUNDED), value=bad_bounded)
def test_a_recipe_with_an_out_of_range_or_mistyped_number_fails_in_one_line(field, value):
    with Workspace() as ws:
        recipe = ws.file("bad.toml", recipe_text({**TINY, field: value}))
        ws.check(["search", "--config", recipe, "--out", str(ws.out / "run"), "--no-progress"])


@FUZZ
@given(field=st.sampled_from(_CHOICES), value=bad_choice)
def test_a_recipe_with_an_unknown_choice_fails_in_one_line(field, value):
    with Workspace() as ws:
        recipe = ws.file("bad.toml", recipe_text({**TINY, field: value}))
        ws.check(["search", "--config", recipe, "--out", str(ws.out / "run"), "--no-progress"])


@FUZZ
@given(content=st.one_of(st.text(max_size=120), st.binary(max_size=120).map(lambda b: b.decode("latin-1"))))
def test_a_recipe_that_is_not_a_recipe_fails_in_one_line(content):
    with Workspace() as ws:
        recipe = ws.file("bad.toml", content)
        # without --table/--target-ms a recipe that parses still lacks them: every example must fail
        ws.check(["search", "--config", recipe, "--out", str(ws.out / "run"), "--no-progress"])


_FLAGS = ["--epochs", "--batch-size", "--lr", "--target-ms", "--train-resolution", "--finetune-epochs",
          "--steps-per-epoch", "--weight-decay", "--threads", "--train-subset", "--measure-runs"]
bad_flag_value = st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "0x", "", "1e999999", "one"]),
                           st.integers(max_value=-1).map(str))


@FUZZ
@given(flag=st.sampled_from(_FLAGS), value=bad_flag_value)
def test_a_bad_search_flag_value_fails_in_one_line(flag, value):
    with Workspace() as ws:
        argv = ["search", "--table", TABLE, "--target-ms", "80", "--out", str(ws.out / "run"), "--epochs", "1",
                "--steps-per-epoch", "1", "--final-epochs", "0", "--export", "none", "--no-progress",
                "--train-resolution", "32"]
        ws.check([*argv, f"{flag}={value}"])


_COMPARE_FLAGS = {"--seeds": ["0", "-1", "x", "nan"], "--budget": ["0", "-2", "nan", "x"],
                  "--final-share": ["-0.1", "1.5", "nan", "x"], "--retrain-epochs": ["-1", "x"],
                  "--protocol-samples": ["-1", "x"], "--target-ms": ["0", "-5", "nan", "inf", "x", "1e9"],
                  "--methods": ["", "nope", "single-path,nope", ",,"], "--batch-size": ["0", "1", "x"],
                  "--train-subset": ["0", "-3", "x"]}


@FUZZ
@given(data=st.data())
def test_a_bad_compare_option_fails_in_one_line(data):
    flag = data.draw(st.sampled_from(sorted(_COMPARE_FLAGS)))
    value = data.draw(st.sampled_from(_COMPARE_FLAGS[flag]))
    with Workspace() as ws:
        argv = ["compare", "--table", TABLE, "--target-ms", "80", "--out", str(ws.out / "cmp"), "--data", "digits",
                "--methods", "random", "--seeds", "1", "--budget", "1", "--protocol-samples", "0",
                "--steps-per-epoch", "1", "--threads", "1", "--no-progress"]
        ws.check([*argv, f"{flag}={value}"])


bad_param = st.one_of(
    st.sampled_from(["lambda", "lambda:log", "lambda:log:1:0.1", "lambda:log:0:1", "lambda:log:-1:1",
                     "lambda:lin:x:1", "nope:log:1e-3:1", "out:lin:0:1", "epochs:int:3.5:8", "epochs:int:8:2",
                     "relax:cat:", "lambda:cubic:1:2", "lambda:log:nan:1", "lambda:log:1e-3:inf", ":log:1:2"]),
    st.text(max_size=20).filter(lambda s: s.count(":") < 2))
bad_tune_option = st.sampled_from([["--trials", "0"], ["--trials", "-1"], ["--sampler", "annealing"],
                                   ["--fidelity", "epochs:8:2"], ["--fidelity", "steps:1:2"], ["--set", "noequals"],
                                   ["--set", "nope=3"], ["--set", "epochs=zero"], ["--workers", "0"],
                                   ["--storage", "nosuchscheme://x"], ["--objectives", "accuracy,beauty"]])


@FUZZ
@given(param=bad_param)
def test_a_malformed_tune_param_fails_in_one_line(param):
    with Workspace() as ws:
        recipe = ws.file("r.toml", recipe_text(TINY))
        ws.check(["tune", "--config", recipe, "--param", param, "--trials", "1", "--out", str(ws.out / "tune")])


@FUZZ
@given(option=bad_tune_option)
def test_a_bad_tune_option_fails_in_one_line(option):
    with Workspace() as ws:
        recipe = ws.file("r.toml", recipe_text(TINY))
        ws.check(["tune", "--config", recipe, "--param", "lambda:log:1e-3:1", "--trials", "1",
                  "--out", str(ws.out / "tune"), *option])
