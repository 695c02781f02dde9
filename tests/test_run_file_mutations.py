"""Hardening (issue 23, item 5): the two run-folder files other commands read back, mutated.

``bundle.json`` is read by ``export --run`` (and by ``export --weights`` when it lies beside the weights),
``summary.json`` by ``search --resume`` on a finished run. Hypothesis cuts them short, gives a field another JSON
type, drops a required key, puts NaN or infinity in a number, or (bundle) adds an unknown key, and asserts the
promise: exit 2, one line naming the file (and the field), and no file changed or added anywhere in the workspace.
The one validation layer is :mod:`mobilekit.validation.run_files`.

The run folder is made once per module by a real tiny search (digits, 32 px, one step, no export); each example
mutates one file in place and puts the original back afterwards.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import PIXEL1_TABLE, assert_one_line_failure, run_cli
from mobilekit.validation.run_files import RunBundle, RunSummary, load_bundle, load_summary
from test_output_ownership import tree

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
NAN, INF = float("nan"), float("inf")
TINY_SEARCH = ["search", "--table", str(PIXEL1_TABLE), "--target-ms", "80", "--epochs", "1", "--steps-per-epoch",
               "1", "--final-epochs", "0", "--export", "none", "--batch-size", "8", "--threads", "1", "--no-progress",
               "--train-resolution", "32", "--train-subset", "64", "--data", "digits"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished run folder (summary.json, bundle.json, arch.json, weights.pt) and an empty export folder beside."""
    root = tmp_path_factory.mktemp("mutations")
    out = root / "run"
    code, _, err = run_cli([*TINY_SEARCH, "--out", str(out)])
    assert code == 0, err
    (root / "exported").mkdir()
    return out


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "str", list: "list", dict: "dict", type(None): "null"}[type(value)]


OTHER_VALUES = ["x", 7, 2.5, True, [], {}, None]


def _numeric_leaves(data: Any, fields: set[str], path: tuple = ()) -> list[tuple]:
    """Paths of the numbers under the typed ``fields`` (top-level keys) of ``data``, lists and objects included."""
    found = []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for key, value in items:
        if not path and key not in fields:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append((*path, key))
        elif isinstance(value, (dict, list)):
            found += _numeric_leaves(value, fields, (*path, key))
    return found


def _set(data: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def mutations(base: dict[str, Any], model, unknown_keys: bool) -> st.SearchStrategy:
    """Invalid versions of ``base`` (a file's parsed object) for the pydantic ``model`` that validates it."""
    raw = json.dumps(base, indent=2).encode()
    typed = sorted(k for k in model.model_fields if base.get(k) is not None)
    required = sorted(k for k, f in model.model_fields.items() if f.is_required())
    leaves = _numeric_leaves(base, set(typed))
    retype = st.sampled_from(typed).flatmap(lambda key: st.tuples(
        st.just("retype"), st.just(key),
        st.sampled_from([v for v in OTHER_VALUES if _kind(v) != _kind(base[key])
                         and (v is not None or key in required)])))
    choices = [
        st.tuples(st.just("truncate"), st.integers(0, len(raw) - 2)),
        st.tuples(st.just("drop"), st.sampled_from(required)),
        retype,
        st.tuples(st.just("non-finite"), st.sampled_from(leaves), st.sampled_from([NAN, INF, -INF])),
    ]
    if unknown_keys:
        choices.append(st.tuples(st.just("unknown"), st.sampled_from(["bogus", "Mean", "mean "])))
    return st.one_of(*choices)


def mutated(base: dict[str, Any], mutation: tuple) -> tuple[bytes, str | None]:
    """The file's bytes after ``mutation`` and the field the one line must name (None: any)."""
    kind = mutation[0]
    if kind == "truncate":
        return json.dumps(base, indent=2).encode()[:mutation[1]], None
    data = json.loads(json.dumps(base))
    if kind == "drop":
        del data[mutation[1]]
        return json.dumps(data).encode(), mutation[1]
    if kind == "retype":
        data[mutation[1]] = mutation[2]
        return json.dumps(data).encode(), mutation[1]
    if kind == "non-finite":
        _set(data, mutation[1], mutation[2])
        return json.dumps(data).encode(), str(mutation[1][0])
    data[mutation[1]] = 1
    return json.dumps(data).encode(), mutation[1]


@pytest.fixture(scope="module")
def bases(finished_run) -> dict[str, dict[str, Any]]:
    """``bundle.json`` and ``summary.json`` as the tiny search wrote them (the mutations start from these)."""
    return {name: json.loads((finished_run / name).read_text()) for name in ("bundle.json", "summary.json")}


def check_refused(run: Path, name: str, content: bytes, field: str | None, argv: list[str]) -> None:
    """Write ``content`` over ``run/name``, run ``argv``, check the promise, and put the original back."""
    path = run / name
    original = path.read_bytes()
    path.write_bytes(content)
    try:
        before = tree(run.parent)
        code, _, err = run_cli(argv)
        assert_one_line_failure(code, err, name, *([field] if field else []))
        assert tree(run.parent) == before, "a file changed or appeared"
    finally:
        path.write_bytes(original)


def test_the_files_a_search_writes_pass_their_own_validation(finished_run):
    assert load_bundle(finished_run / "bundle.json")["num_classes"] == 10
    assert load_summary(finished_run / "summary.json")["method"] == "single-path"


@FUZZ
@given(data=st.data())
def test_a_mutated_bundle_fails_export_in_one_line_and_writes_nothing(finished_run, bases, data):
    base = bases["bundle.json"]
    mutation = data.draw(mutations(base, RunBundle, unknown_keys=True))
    content, field = mutated(base, mutation)
    exported = str(finished_run.parent / "exported")
    beside = data.draw(st.booleans())
    argv = (["export", "--arch", str(finished_run / "arch.json"), "--weights", str(finished_run / "weights.pt")]
            if beside else ["export", "--run", str(finished_run)])
    check_refused(finished_run, "bundle.json", content, field, [*argv, "--format", "onnx", "--out", exported])


@FUZZ
@given(data=st.data())
def test_a_mutated_summary_fails_search_resume_in_one_line_and_writes_nothing(finished_run, bases, data):
    base = bases["summary.json"]
    content, field = mutated(base, data.draw(mutations(base, RunSummary, unknown_keys=False)))
    check_refused(finished_run, "summary.json", content, field, [*TINY_SEARCH, "--out", str(finished_run),
                                                                  "--resume"])


@pytest.mark.parametrize("change", [{"class_names": ["a"]}, {"num_classes": 3}, {"std": [0.3, 0.0, 0.3]},
                                    {"mean": [0.3, 0.3]}, {"deploy_resolution": 4}, {"seed": -1}],
                         ids=["names", "classes", "zero-std", "two-means", "tiny-resolution", "negative-seed"])
def test_a_bundle_with_an_out_of_range_or_inconsistent_field_is_one_line(finished_run, bases, change):
    content = json.dumps({**bases["bundle.json"], **change}).encode()
    check_refused(finished_run, "bundle.json", content, None,
                  ["export", "--run", str(finished_run), "--format", "onnx", "--out",
                   str(finished_run.parent / "exported")])


def test_a_summary_whose_scored_file_is_missing_is_one_line(finished_run, bases):
    content = json.dumps({**bases["summary.json"], "accuracy": 0.5, "accuracy_file": "model.onnx",
                          "exported_accuracy": {}}).encode()
    check_refused(finished_run, "summary.json", content, "accuracy_file",
                  [*TINY_SEARCH, "--out", str(finished_run), "--resume"])
    assert math.isfinite(load_summary(finished_run / "summary.json")["val_accuracy"])  # the original is back
