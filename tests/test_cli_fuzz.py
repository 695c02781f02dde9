"""Fuzz suite (Hypothesis): malformed files and option values for every command that reads them (export, check,
profile, latency predict|fit|validate|published). Each example must end with exit code 2, exactly one line on
stderr, no traceback, and every file that was already in the output location unchanged.

Commands run in-process through :func:`mobilekit.cli.main` (a subprocess would pay the TensorFlow import each
time); the number of examples is fixed so the suite takes seconds. ``search``, ``compare`` and ``tune`` are fuzzed
in ``test_cli_fuzz_search.py``.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cli_helpers import (PIXEL1_TABLE, assert_one_line_failure, fitted_predictor_path, run_cli, snapshot,
                         valid_long_architecture)

FUZZ = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
NAN, INF = float("nan"), float("inf")
TABLE = str(PIXEL1_TABLE)


def arch() -> str:
    return valid_long_architecture()


# Should a bad input slip through, these keep the command short, so the test fails fast instead of measuring.
SMALL_PROFILE = ["--resolution", "32", "--positions", "0", "--runs", "1", "--repeats", "1", "--warmup", "0",
                 "--no-progress"]


def small_validate() -> list[str]:
    return ["--samples", "2", "--runs", "1", "--no-progress", "--predictor", str(fitted_predictor_path())]


class Workspace:
    """A temp folder with an output folder that already holds a file the command must not change."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mobilekit-fuzz-")
        self.root = Path(self._tmp.name)
        self.out = self.root / "out"
        self.out.mkdir()
        self.keep = self.out / "keep.json"
        self.keep.write_text('{"mine": true}\n')
        self.before = snapshot(self.out)

    def file(self, name: str, content: str | bytes) -> str:
        path = self.root / name
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        return str(path)

    def check(self, argv: list[str]) -> None:
        code, _, err = run_cli(argv)
        assert_one_line_failure(code, err)
        assert snapshot(self.out) == self.before, f"mobilekit {' '.join(argv)} changed files in its output folder"

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()


def set_path(data, path: tuple, value):
    """``data`` with the item at ``path`` (keys into nested objects) replaced by ``value``; ``()`` replaces all."""
    if not path:
        return value
    data[path[0]] = set_path(data[path[0]], path[1:], value)
    return data


# ---- latency tables -------------------------------------------------------------------------------------
_BASE_TABLE = json.loads(PIXEL1_TABLE.read_text())
_LAYER_ENTRIES = [(p, t) for p, types in _BASE_TABLE["entries"].items() for t in types if t != "skip"]
_FIXED = list(_BASE_TABLE["fixed"])
not_an_object = st.sampled_from([[], "x", 3, 1.5, True, None]).filter(lambda v: v is not None)
bad_latency = st.one_of(st.sampled_from([NAN, INF, -INF, 0.0, 0, "1.0", True, [], {}]),
                        st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=True))
bad_width = st.one_of(st.text(max_size=8).filter(lambda s: True), st.sampled_from([NAN, INF, 0, -1.0, None, [], True]))
bad_count = st.one_of(st.integers(max_value=0), st.sampled_from([1.5, "224", NAN, None, True, []]))

table_mutation = st.one_of(
    st.tuples(st.just(()), st.sampled_from([[], "x", 3, None])),
    st.tuples(st.just(("entries",)), not_an_object),
    st.tuples(st.sampled_from(sorted(_BASE_TABLE["entries"])).map(lambda p: ("entries", p)),
              st.sampled_from([[], "x", 3, True])),
    st.tuples(st.sampled_from(_LAYER_ENTRIES).map(lambda pt: ("entries", pt[0], pt[1], "median_ms")), bad_latency),
    st.tuples(st.sampled_from(_LAYER_ENTRIES).map(lambda pt: ("entries", pt[0], pt[1])),
              st.sampled_from([{}, [], "x", 1.0, {"median": 1.0}])),
    st.tuples(st.sampled_from(_FIXED).map(lambda k: ("fixed", k, "median_ms")), bad_latency),
    st.tuples(st.just(("space", "width")), bad_width),
    st.tuples(st.sampled_from([("space", "resolution"), ("space", "num_classes")]), bad_count),
    st.tuples(st.just(("space",)), st.sampled_from([[], "spnas-mnasnet", {}, {"name": 3}])),
    st.tuples(st.just(("format",)), st.text(max_size=30)),
)


def malformed_table_text(mutation) -> str:
    path, value = mutation
    if path == ("space", "width") and isinstance(value, str):
        try:
            assume(not math.isfinite(float(value)) or float(value) <= 0)  # "1.5" as a string is still wrong; keep it
        except ValueError:
            pass
    data = set_path(json.loads(json.dumps(_BASE_TABLE)), path, value)
    return json.dumps(data)


@FUZZ
@given(mutation=table_mutation)
def test_a_malformed_table_fails_every_command_that_reads_it_in_one_line(mutation):
    with Workspace() as ws:
        table = ws.file("table.json", malformed_table_text(mutation))
        ws.check(["latency", "predict", arch(), "--table", table, "--predictor", str(fitted_predictor_path())])
        ws.check(["latency", "fit", "--table", table, "--out", str(ws.keep)])
        ws.check(["latency", "validate", "--device", "host", "--table", table, "--out", str(ws.out),
                  *small_validate()])
        before = Path(table).read_bytes()
        ws.check(["profile", "--out", table, *SMALL_PROFILE])
        assert Path(table).read_bytes() == before  # resuming a broken table never rewrites it


@FUZZ
@given(content=st.binary(max_size=300))
def test_a_table_file_that_is_not_a_table_fails_in_one_line(content):
    with Workspace() as ws:
        table = ws.file("table.json", content)
        ws.check(["latency", "fit", "--table", table, "--out", str(ws.keep)])


# ---- architectures --------------------------------------------------------------------------------------
_NAMES = sorted({c.name for p in __import__("mobilekit.space", fromlist=["get_space"]).get_space().positions
                 for c in p.candidates})


def _is_valid_architecture(text: str) -> bool:
    from mobilekit.errors import MobilekitError
    from mobilekit.space import read_architecture

    try:
        read_architecture(text)
    except (MobilekitError, ValueError, OSError):
        return False
    return True


architecture_text = st.one_of(
    st.text(max_size=400),
    st.lists(st.sampled_from(_NAMES), max_size=40).filter(lambda xs: len(xs) not in (20, 22)).map(",".join),
    st.lists(st.sampled_from(_NAMES), min_size=20, max_size=20).map(",".join),  # right length, often disallowed
    st.sampled_from(["", " ", ".", "..", "/", "x.json", "a,,b", ",".join(["ir_k3_e6"] * 300)]),
)


@FUZZ
@given(text=architecture_text)
def test_a_malformed_architecture_fails_predict_and_export_in_one_line(text):
    assume(not _is_valid_architecture(text))
    with Workspace() as ws:
        ws.check(["latency", "predict", text, "--table", TABLE, "--predictor", str(fitted_predictor_path())])
        ws.check(["export", "--arch", text, "--out", str(ws.out)])


@FUZZ
@given(content=st.one_of(st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                         st.fixed_dictionaries({"layers": st.one_of(st.lists(st.sampled_from(_NAMES), max_size=5),
                                                                    st.sampled_from([3, "x", None, [1, 2]]))},
                                               optional={"space": st.sampled_from(
                                                   [3, [], {"width": "x"}, {"resolution": 0}, {"name": "nope"},
                                                    {"num_classes": -1}, {"width": NAN}])}).map(json.dumps)))
def test_a_malformed_architecture_file_fails_in_one_line(content):
    with Workspace() as ws:
        path = ws.file("arch.json", content)
        ws.check(["export", "--arch", path, "--out", str(ws.out)])
        ws.check(["latency", "predict", path, "--table", TABLE, "--predictor", str(fitted_predictor_path())])


# ---- device descriptors ---------------------------------------------------------------------------------
def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


_NUMERIC_FIELDS = ["threads", "runs", "warmup", "cooldown_s", "thermal_max_c", "thermal_timeout_s", "thermal_poll_s",
                   "timeout_s"]
bad_number = st.one_of(st.sampled_from([NAN, INF, -INF, -1, -0.5, 1e300, "1", True, [1]]),
                       st.integers(max_value=-1), st.integers(min_value=10**12))
bad_device_dir = st.one_of(
    st.sampled_from(["/sdcard/Download", "/data/local/tmp/../../../sdcard/Download", "/", "", "relative/dir",
                     "/data/local/tmpx", "/data/local/tmp/a\nb", "/data/local"]),
    st.text(max_size=30).filter(lambda s: not s.startswith("/data/local/tmp")))


@FUZZ
@given(field_value=st.one_of(st.tuples(st.sampled_from(_NUMERIC_FIELDS), bad_number),
                             st.tuples(st.just("device_dir"), bad_device_dir)))
def test_a_device_with_a_bad_field_fails_profile_and_validate_in_one_line(field_value):
    field, value = field_value
    if field == "thermal_max_c":
        assume(not (isinstance(value, (int, float)) and not isinstance(value, bool) and -100 < value < 200))
    with Workspace() as ws:
        device = ws.file("dev.toml", f'name = "fuzzed"\n{field} = {toml_value(value)}\n')
        ws.check(["profile", "--device", device, "--out", str(ws.keep), *SMALL_PROFILE])
        ws.check(["latency", "validate", "--device", device, "--table", TABLE, "--out", str(ws.out), *small_validate()])


@FUZZ
@given(text=st.text(max_size=200))
def test_a_device_file_that_is_not_a_descriptor_fails_in_one_line(text):
    assume("name" not in text)  # without 'name' no text is a valid descriptor
    with Workspace() as ws:
        ws.check(["profile", "--device", ws.file("dev.toml", text), "--out", str(ws.keep), *SMALL_PROFILE])


# ---- predictors -----------------------------------------------------------------------------------------
def _leaf_paths(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaf_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaf_paths(item, (*path, index))
    elif isinstance(value, float):
        yield path


_PREDICTOR = json.loads(fitted_predictor_path().read_text())
_PARAM_LEAVES = sorted(_leaf_paths(_PREDICTOR["params"], ("params",)), key=str)

predictor_mutation = st.one_of(
    st.tuples(st.just(()), st.sampled_from([[], "x", 3, None])),
    st.tuples(st.sampled_from(_PARAM_LEAVES), st.sampled_from([NAN, INF, -INF, "x", None, [], {}])),
    st.tuples(st.just(("params",)), st.sampled_from([[], "x", 3, None])),
    st.tuples(st.just(("n_train",)), st.sampled_from([-1, "x", 1.5, None, NAN])),
    st.tuples(st.just(("skip_ms",)), st.sampled_from([-1.0, NAN, INF, "x"])),
    st.tuples(st.just(("network_correction", "scale")), st.sampled_from([0, -1.0, NAN, INF, "x", None])),
    st.tuples(st.just(("network_correction", "overhead_ms")), st.sampled_from([NAN, INF, "x", None])),
    st.tuples(st.just(("format",)), st.text(max_size=20)),
    st.tuples(st.just(("feature_names",)), st.sampled_from([[], ["x"], "x", None])),
    st.tuples(st.just(("hyperparameters",)), st.sampled_from([[], "x", {"bogus": 1}, None])),
    st.tuples(st.just(("model",)), st.sampled_from(["x", 3, None, ""])),
)


@FUZZ
@given(mutation=predictor_mutation)
def test_a_malformed_predictor_fails_predict_and_validate_in_one_line(mutation):
    path, value = mutation
    with Workspace() as ws:
        predictor = ws.file("predictor.json", json.dumps(set_path(json.loads(json.dumps(_PREDICTOR)), path, value)))
        ws.check(["latency", "predict", arch(), "--table", TABLE, "--predictor", predictor])
        ws.check(["latency", "validate", "--device", "host", "--table", TABLE, "--out", str(ws.out),
                  *small_validate(), "--predictor", predictor])


# ---- weights and model files ----------------------------------------------------------------------------
def _torch_file() -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"stem.weight": torch.zeros(4, 3, 3, 3)}, buffer)
    return buffer.getvalue()


_WEIGHTS = _torch_file()


@FUZZ
@given(content=st.one_of(st.binary(max_size=300),
                         st.integers(min_value=0, max_value=len(_WEIGHTS)).map(lambda n: _WEIGHTS[:n]),
                         st.just(_WEIGHTS)))  # a whole file of other weights: does not fit the architecture
def test_a_weights_file_that_is_truncated_or_not_a_tensor_file_fails_export_in_one_line(content):
    with Workspace() as ws:
        weights = ws.file("w.pt", content)
        ws.check(["export", "--arch", arch(), "--resolution", "32", "--weights", weights, "--out", str(ws.out)])


@FUZZ
@given(content=st.binary(max_size=300), suffix=st.sampled_from([".tflite", ".onnx", ".bin", ""]))
def test_a_model_file_that_is_not_a_model_fails_check_in_one_line(content, suffix):
    with Workspace() as ws:
        ws.check(["check", ws.file(f"model{suffix}", content)])


# ---- options --------------------------------------------------------------------------------------------
bad_int_text = st.one_of(st.integers(max_value=0).map(str),
                         st.sampled_from(["", " ", "nan", "inf", "-inf", "1.5", "abc", "1e400", "0x10", "½"]))
# ("--" is left out: argparse reads "--opt=--" as the option without a value, i.e. its default)
bad_float_text = st.one_of(st.floats(max_value=0, allow_nan=False).map(repr),
                           st.sampled_from(["", " ", "nan", "inf", "-inf", "NaN", "abc", "1e400", "-0"]))
bad_positions = st.one_of(st.sampled_from(["", " ", ",", "abc", "99", "5-2", "-1", "0-99", "1,,x", "3-", "-"]),
                          st.integers(min_value=22).map(str))


def _option_cases(ws: Workspace) -> list[tuple[list[str], str, st.SearchStrategy]]:
    model = ws.file("m.tflite", b"not read")
    return [
        (["check", model], "--runs", bad_int_text),
        (["profile", "--out", str(ws.keep), *SMALL_PROFILE], "--resolution", bad_int_text),
        (["profile", "--out", str(ws.keep), *SMALL_PROFILE], "--num-classes", bad_int_text),
        (["profile", "--out", str(ws.keep), *SMALL_PROFILE], "--runs", bad_int_text),
        (["profile", "--out", str(ws.keep), *SMALL_PROFILE], "--repeats", bad_int_text),
        (["profile", "--out", str(ws.keep), *SMALL_PROFILE], "--width", bad_float_text),
        (["profile", "--out", str(ws.keep), *SMALL_PROFILE], "--positions", bad_positions),
        (["export", "--arch", arch(), "--out", str(ws.out)], "--resolution", bad_int_text),
        (["export", "--arch", arch(), "--out", str(ws.out)], "--num-classes", bad_int_text),
        (["export", "--arch", arch(), "--out", str(ws.out)], "--width", bad_float_text),
        (["latency", "fit", "--table", TABLE, "--out", str(ws.keep)], "--cv", bad_int_text),
        (["latency", "validate", "--device", "host", "--table", TABLE, "--out", str(ws.out), *small_validate()],
         "--samples",
         bad_int_text),
        (["latency", "validate", "--device", "host", "--table", TABLE, "--out", str(ws.out), *small_validate()],
         "--runs",
         bad_int_text),
    ]


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_an_out_of_range_option_value_fails_in_one_line(data):
    with Workspace() as ws:
        argv, option, values = data.draw(st.sampled_from(_option_cases(ws)))
        value = data.draw(values)
        ws.check([*argv, f"{option}={value}"])


@FUZZ
@given(data=st.data())
def test_a_negative_warmup_fails_in_one_line(data):
    value = data.draw(st.integers(max_value=-1))
    with Workspace() as ws:
        ws.check(["profile", "--out", str(ws.keep), *SMALL_PROFILE, f"--warmup={value}"])


# ---- paths ----------------------------------------------------------------------------------------------
def _path_cases(ws: Workspace, kind: str) -> list[list[str]]:
    """Commands with one input or output path of the wrong ``kind``."""
    folder, missing = str(ws.out), str(ws.root / "missing.json")
    under_file = str(ws.keep / "x.json")
    bad_input = {"folder": folder, "missing": missing, "under-file": under_file}[kind]
    bad_output_file = {"folder": folder, "missing": str(Path("/proc/sys") / "x.json"), "under-file": under_file}[kind]
    bad_output_dir = {"folder": str(ws.keep), "missing": str(ws.keep), "under-file": under_file}[kind]
    return [
        ["latency", "predict", arch(), "--table", bad_input],
        ["latency", "predict", arch(), "--table", TABLE, "--predictor", bad_input],
        ["latency", "fit", "--table", bad_input, "--out", str(ws.keep)],
        ["latency", "fit", "--table", TABLE, "--out", bad_output_file],
        ["latency", "fit", "--table", TABLE, "--out", str(ws.root / "p.json"), "--filled-table", bad_output_file],
        ["latency", "validate", "--device", "host", "--table", bad_input, "--out", str(ws.out), *small_validate()],
        ["latency", "validate", "--device", bad_input, "--table", TABLE, "--out", str(ws.out), *small_validate()],
        ["latency", "validate", "--device", "host", "--table", TABLE, "--out", bad_output_dir, *small_validate()],
        ["latency", "published", "--data", {"folder": str(ws.keep), "missing": missing, "under-file": under_file}[kind]],
        ["profile", "--device", bad_input, "--out", str(ws.keep), *SMALL_PROFILE],
        ["profile", "--out", bad_output_file, *SMALL_PROFILE],
        ["profile", "--out", str(ws.keep), "--work-dir", bad_output_dir, *SMALL_PROFILE],
        ["export", "--arch", arch(), "--weights", bad_input, "--out", str(ws.out)],
        ["export", "--arch", arch(), "--out", bad_output_dir],
        ["check", bad_input],
    ]


@settings(max_examples=45, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_a_path_of_the_wrong_kind_fails_in_one_line(data):
    kind = data.draw(st.sampled_from(["folder", "missing", "under-file"]))
    with Workspace() as ws:
        ws.check(data.draw(st.sampled_from(_path_cases(ws, kind))))
