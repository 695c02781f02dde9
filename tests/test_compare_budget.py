"""The equal budget of ``mobilekit compare`` (mobilekit/compare/budget.py): every method's rule, and the training
images a short run of every method really consumes, counted where they enter the network."""

import pytest

from mobilekit.compare import CompareSettings
from mobilekit.compare.budget import BUDGET_RULES, END_TO_END_RULES, forward_only_images, method_settings, split_budget
from mobilekit.compare.counting import ImageCounter
from mobilekit.compare.run import search_config
from mobilekit.data import load_dataset
from mobilekit.errors import ConfigError
from mobilekit.search import run_search
from mobilekit.search.registry import METHODS, get_method


NEW_RULES = ("autohas", "random-has", "tpe", "spos", "tnas-os")


# ---- the rules -----------------------------------------------------------------------------------------------------
def test_every_registered_method_has_a_budget_rule():
    assert set(METHODS) <= set(BUDGET_RULES) | set(END_TO_END_RULES)


@pytest.mark.parametrize("budget", [4, 6, 8, 13, 16])
@pytest.mark.parametrize("method", NEW_RULES)
def test_each_rule_takes_the_largest_search_that_fits_the_search_share(method, budget):
    search, final = split_budget(budget, 0.5)
    keys, facts = method_settings(method, budget, 0.5)
    seen = facts["search_epochs_nominal"]
    assert seen <= search and facts["images_epochs"] == pytest.approx(seen + final) and keys["final_epochs"] == final
    if method == "autohas":                                  # 1.6 passes per epoch: one more epoch would not fit
        assert seen == pytest.approx(1.6 * keys["epochs"]) and seen + 1.6 > search
    elif method in ("random-has", "tpe"):                    # one more trial would not fit
        assert seen == keys["trials"] * keys["trial_epochs"] and seen + keys["trial_epochs"] > search
        assert keys["trials"] >= min(4, search)
    else:                                                    # supernet training: one pass per epoch
        assert seen == keys["epochs"] == search


def test_new_rules_translate_into_each_searchers_settings():
    assert method_settings("autohas", 8, 0.5)[0] == {"epochs": 2, "final_epochs": 4}           # 3.2 of 4 passes
    assert method_settings("autohas", 16, 0.5)[0] == {"epochs": 5, "final_epochs": 8}          # 8.0 of 8 passes
    for joint in ("random-has", "tpe"):
        assert method_settings(joint, 8, 0.5)[0] == {"epochs": 4, "trials": 4, "trial_epochs": 1, "final_epochs": 4}
        assert method_settings(joint, 20, 0.5)[0] == {"epochs": 10, "trials": 5, "trial_epochs": 2,
                                                      "final_epochs": 10}
    for one_shot in ("spos", "tnas-os"):
        assert method_settings(one_shot, 6, 0.34) == ({"epochs": 4, "final_epochs": 2}, {
            "search_epochs_nominal": 4.0, "final_epochs": 2, "images_epochs": 6.0, "rule": one_shot})


def test_autohas_below_its_smallest_search_is_refused_naming_the_budget_that_works():
    with pytest.raises(ConfigError, match=r"too small for autohas: one autohas epoch sees 1.6 passes.*--budget 4 or"):
        method_settings("autohas", 3, 0.5)                   # S = 1 < 1.6
    assert method_settings("autohas", 3, 0.34)[0]["epochs"] == 1   # S = 2 at a smaller final share


# ---- the images a run really consumes ------------------------------------------------------------------------------
# 100 training images in batches of 20 (80 + 20 on the 80/20 splits): no batch is dropped, so the counts are exact
TRAIN_IMAGES, BATCH = 100, 20
QUICK = {"spos": "population=4:generations=1:bn_steps=1:eval_samples=32",
         "tnas-os": "population=4:generations=1:bn_steps=1:eval_samples=32:tell_batch=32:tell_paths=4:"
                    "sampler_fit_steps=2"}


@pytest.mark.parametrize("method", list(METHODS))
def test_a_run_consumes_the_training_images_its_budget_rule_states(method, tmp_path, table_path, target):
    name = f"quick-{method}" if method in QUICK else method
    settings = CompareSettings(table=str(table_path), target_ms=target, out=str(tmp_path / "cmp"), data="digits",
                               methods=(name,), seeds=1, budget_epochs=4, retrain_epochs=1, protocol_samples=0,
                               train_subset=TRAIN_IMAGES, batch_size=BATCH,
                               variants=[f"{name}={method}:{QUICK[method]}"] if method in QUICK else [])
    config, facts = search_config(settings, name, 0)
    with ImageCounter().counting(get_method(method).load()) as counter:
        summary = run_search(config)
    splits = load_dataset("digits", 32, seed=0, train_subset=TRAIN_IMAGES)
    assert len(splits.train) == TRAIN_IMAGES
    assert counter.gradient == pytest.approx(facts["images_epochs"] * TRAIN_IMAGES)          # search + final
    assert counter.forward_only == forward_only_images(method, config, summary, len(splits.train), len(splits.val),
                                                       config.out)
    if method in ("random", "random-has", "tpe", "spos", "tnas-os"):
        assert counter.forward_only > 0                                                      # they do score
