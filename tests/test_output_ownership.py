"""Hardening (issue 23, item 2): mobilekit never replaces, appends to or removes a file it did not create.

Hypothesis families plant things in every output location of ``search``, ``export``, ``tune`` and ``profile``
(a user's file, a symlink to a file outside, a dangling symlink, a folder, a damaged manifest) and assert the
promise itself: exit 2, one line on stderr, and every pre-existing file (and the file a link points to)
byte-identical afterwards. No example trains or measures: each must be refused before anything runs.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import (PIXEL1_TABLE, assert_one_line_failure, run_cli, search_interrupted_at, unwritable_folder,
                         valid_long_architecture)
from mobilekit import safewrite

FUZZ = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
TABLE = str(PIXEL1_TABLE)
TINY_SEARCH = ["--table", TABLE, "--target-ms", "80", "--epochs", "1", "--steps-per-epoch", "1",
               "--final-epochs", "0", "--export", "none", "--batch-size", "8", "--threads", "1", "--no-progress",
               "--train-resolution", "32"]
KINDS = ("user file", "symlink", "dangling symlink", "folder")


def tree(folder: Path) -> dict[str, object]:
    """Every entry under ``folder`` without following links or opening FIFOs: file bytes, link targets, modes."""
    result: dict[str, object] = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(root) / name
            st_ = os.lstat(path)
            if stat.S_ISREG(st_.st_mode):
                result[str(path.relative_to(folder))] = path.read_bytes()
            elif stat.S_ISLNK(st_.st_mode):
                result[str(path.relative_to(folder))] = ("link", os.readlink(path))
            else:
                result[str(path.relative_to(folder))] = ("mode", stat.S_IFMT(st_.st_mode))
    return result


class Planted:
    """A temp workspace: ``out`` (the output folder) with one planted entry, and ``victim`` outside it."""

    def __init__(self, out_name: str, name: str, kind: str, content: bytes = b"the user's own data\n") -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mobilekit-own-")
        self.root = Path(self._tmp.name)
        self.victim = self.root / "victim.bin"
        self.victim.write_bytes(b"precious, outside the output folder\n")
        self.out = self.root / out_name
        self.out.mkdir()
        target = self.out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == "user file":
            target.write_bytes(content)
        elif kind == "symlink":
            target.symlink_to(self.victim)
        elif kind == "dangling symlink":
            target.symlink_to(self.root / "created-elsewhere")
        else:
            target.mkdir()
            (target / "inside.txt").write_text("mine")
        self.before = tree(self.root)

    def check(self, argv: list[str], *needles: str) -> None:
        code, _, err = run_cli(argv)
        assert_one_line_failure(code, err, *needles)
        assert tree(self.root) == self.before, "a pre-existing file changed or a file appeared"

    def __enter__(self) -> "Planted":
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()


# ---- search --out ----------------------------------------------------------------------------------------------
@FUZZ
@given(name=st.sampled_from(["summary.json", "weights.pt", "metrics.jsonl", "config.json", "checkpoint.npz",
                             "arch.json", "search.png", "bundle.json"]),
       kind=st.sampled_from(KINDS), resume=st.booleans())
def test_search_never_replaces_what_it_did_not_write(name, kind, resume):
    with Planted("run", name, kind) as ws:
        ws.check(["search", *TINY_SEARCH, "--out", str(ws.out), *(["--resume"] if resume else [])], name)


# ---- export --out ----------------------------------------------------------------------------------------------
@FUZZ
@given(name=st.sampled_from(["model.onnx", "model.json", "model.onnx.failed"]), kind=st.sampled_from(KINDS))
def test_export_never_replaces_what_it_did_not_write(name, kind):
    with Planted("exported", name, kind) as ws:
        ws.check(["export", "--arch", valid_long_architecture(), "--resolution", "32", "--format", "onnx", "--out", str(ws.out)], name)


@FUZZ
@given(content=st.sampled_from([b"", b"not json", b'{"format": "other", "files": []}', b"[1, 2]",
                                b'{"format": "mobilekit-manifest", "files": [1]}']))
def test_a_damaged_or_foreign_manifest_is_one_line_and_changes_nothing(content):
    with Planted("exported", "model.onnx", "user file") as ws:
        (ws.out / safewrite.MANIFEST_NAME).write_bytes(content)
        ws.before = tree(ws.root)
        ws.check(["export", "--arch", valid_long_architecture(), "--resolution", "32", "--format", "onnx", "--out", str(ws.out)],
                 safewrite.MANIFEST_NAME)


# ---- tune --out ------------------------------------------------------------------------------------------------
def _user_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE mine (x INTEGER)")
        connection.execute("INSERT INTO mine VALUES (42)")
    connection.close()


@FUZZ
@given(name=st.sampled_from(["study.db", "trials.csv", "best.json", "history.png"]), kind=st.sampled_from(KINDS),
       sqlite=st.booleans())
def test_tune_never_writes_into_a_study_or_file_it_did_not_create(name, kind, sqlite):
    with Planted("tune", name, kind) as ws:
        if sqlite and kind == "user file" and name == "study.db":
            (ws.out / name).unlink()
            _user_sqlite(ws.out / name)
            ws.before = tree(ws.root)
        ws.check(["tune", "--out", str(ws.out), "--param", "lambda:log:1e-3:1", "--trials", "1", "--no-progress",
                  "--set", f"table={TABLE}", "--set", "target_ms=80", "--set", "epochs=1", "--set",
                  "steps_per_epoch=1", "--set", "final_epochs=0", "--set", "export=none"], name)


def test_tune_refuses_an_explicit_sqlite_storage_that_is_not_optuna(tmp_path):
    db = tmp_path / "mine.db"
    _user_sqlite(db)
    before = db.read_bytes()
    code, _, err = run_cli(["tune", "--out", str(tmp_path / "t"), "--storage", f"sqlite:///{db}", "--param",
                            "lambda:log:1e-3:1", "--trials", "1", "--no-progress", "--set", f"table={TABLE}",
                            "--set", "target_ms=80"])
    assert_one_line_failure(code, err, "not an Optuna storage")
    assert db.read_bytes() == before


# ---- profile --out ---------------------------------------------------------------------------------------------
PROFILE = ["profile", "--resolution", "32", "--positions", "0", "--runs", "1", "--repeats", "1", "--warmup", "0",
           "--no-progress"]


@FUZZ
@given(kind=st.sampled_from(KINDS), resume=st.booleans(),
       content=st.sampled_from([b"my notes\n", b'{"format": "something-else"}', b"\x00\x01binary", b""]))
def test_profile_never_replaces_a_file_that_is_not_its_table(kind, resume, content):
    with Planted("tables", "host.json", kind, content) as ws:
        ws.check([*PROFILE, "--out", str(ws.out / "host.json"), *([] if resume else ["--no-resume"])], "host.json")


@pytest.mark.parametrize("resume", [True, False])
def test_profile_refuses_a_fifo_and_a_device_node(tmp_path, resume):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    for out in (fifo, Path("/dev/null")):
        code, _, err = run_cli([*PROFILE, "--out", str(out), *([] if resume else ["--no-resume"])])
        assert_one_line_failure(code, err, str(out))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_the_resume_error_for_a_file_that_is_not_a_table_does_not_recommend_no_resume(tmp_path):
    out = tmp_path / "notes.json"
    out.write_text('{"mine": true}\n')
    code, _, err = run_cli([*PROFILE, "--out", str(out)])
    assert_one_line_failure(code, err, "notes.json", "mobilekit did not write it", "another --out")
    assert "--no-resume" not in err
    assert out.read_text() == '{"mine": true}\n'


# ---- latency fit / adapt / validate outputs ----------------------------------------------------------------------
def _latency_case(ws: "Planted", case: str) -> tuple[list[str], str]:
    """(argv writing the planted name in ``ws.out``, the option that names it)."""
    out = ws.out
    if case == "fit --out":
        return ["latency", "fit", "--table", TABLE, "--out", str(out / "p.json")], "--out"
    if case == "fit --filled-table":
        return ["latency", "fit", "--table", TABLE, "--out", str(out / "q.json"), "--filled-table",
                str(out / "p.json")], "--filled-table"
    if case == "adapt --out":
        return ["latency", "adapt", "--reference", TABLE, "--device", "host", "--budget", "2", "--runs", "1",
                "--no-progress", "--out", str(out / "p.json")], "--out"
    from cli_helpers import fitted_predictor_path

    return ["latency", "validate", "--device", "host", "--table", TABLE, "--samples", "2", "--runs", "1",
            "--no-progress", "--predictor", str(fitted_predictor_path()), "--out", str(out)], "--out"


@FUZZ
@given(case=st.sampled_from(["fit --out", "fit --filled-table", "adapt --out", "validate --out"]),
       report=st.sampled_from(["validation.csv", "validation.png", "validation.json", "predictor.json"]),
       kind=st.sampled_from(KINDS))
def test_latency_commands_never_replace_what_they_did_not_write(case, report, kind):
    """Nothing is fitted or measured: each refusal comes first, names the option, and leaves no new file (a
    refused --filled-table does not leave a fresh --out behind)."""
    with Planted("out", report if case.startswith("validate") else "p.json", kind) as ws:
        argv, option = _latency_case(ws, case)
        ws.check(argv, option if kind != "folder" or case.startswith("validate") else "is a folder")


# ---- OS errors: one line naming the path, the variable or flag, and the fix (item 7) ----------------------------
@pytest.mark.parametrize("variable", ["MOBILEKIT_CACHE", "XDG_CACHE_HOME", "HOME"])
def test_a_cache_folder_that_is_a_file_is_one_line_naming_the_variable(tmp_path, monkeypatch, variable):
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("mine")
    for name in ("MOBILEKIT_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(blocker))
    code, _, err = run_cli([*PROFILE, "--out", str(tmp_path / "t.json")])
    assert_one_line_failure(code, err, variable, "MOBILEKIT_CACHE", str(blocker))
    assert blocker.read_text() == "mine" and not (tmp_path / "t.json").exists()


def _cache_from(monkeypatch, variable: str, folder: Path) -> None:
    for name in ("MOBILEKIT_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(folder))


@pytest.mark.parametrize("command", ["profile", "latency adapt"])
@pytest.mark.parametrize("variable", ["MOBILEKIT_CACHE", "XDG_CACHE_HOME", "HOME"])
def test_a_read_only_cache_folder_is_one_line_naming_the_variable(tmp_path, monkeypatch, variable, command):
    """A real failure for root too: the cache would be created in a folder that refuses new files."""
    readonly = unwritable_folder(tmp_path)
    _cache_from(monkeypatch, variable, readonly)
    out = ["--out", str(tmp_path / "t.json")]
    argv = [*PROFILE, *out] if command == "profile" else \
        ["latency", "adapt", "--reference", TABLE, "--device", "host", "--budget", "2", "--runs", "1", *out]
    code, _, err = run_cli(argv)
    assert_one_line_failure(code, err, f"(from {variable})", str(readonly), "permission denied",
                            "set MOBILEKIT_CACHE to a writable folder, or pass --work-dir")
    assert not (tmp_path / "t.json").exists()


def test_an_existing_cache_folder_that_refuses_writes_is_one_line(tmp_path, monkeypatch):
    """``model-files`` exists (here a link to a kernel folder) and ``os.access`` says yes to root, but creating a
    file in it fails: the check writes for real instead of trusting the permission bits."""
    readonly = unwritable_folder(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "model-files").symlink_to(readonly, target_is_directory=True)
    _cache_from(monkeypatch, "MOBILEKIT_CACHE", cache)
    code, _, err = run_cli([*PROFILE, "--out", str(tmp_path / "t.json")])
    assert_one_line_failure(code, err, "(from MOBILEKIT_CACHE)", str(cache / "model-files"), "not writable",
                            "set MOBILEKIT_CACHE to a writable folder")
    assert not (tmp_path / "t.json").exists()


def test_the_write_probe_leaves_nothing_behind(tmp_path):
    from mobilekit.validation.paths import write_probe

    (tmp_path / "mine.txt").write_text("mine")
    before = tree(tmp_path)
    assert write_probe(tmp_path) is None
    assert tree(tmp_path) == before
    assert isinstance(write_probe(unwritable_folder(tmp_path)), PermissionError)


@pytest.mark.parametrize("command", ["search", "tune", "export"])
def test_an_out_under_a_file_is_one_line_naming_the_file(tmp_path, command):
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    out = str(blocker / "sub")
    argv = {"search": ["search", *TINY_SEARCH, "--out", out],
            "tune": ["tune", "--out", out, "--param", "lambda:log:1e-3:1", "--set", f"table={TABLE}", "--set",
                     "target_ms=80"],
            "export": ["export", "--arch", valid_long_architecture(), "--resolution", "32", "--out", out]}[command]
    code, _, err = run_cli(argv)
    assert_one_line_failure(code, err, str(blocker))
    assert blocker.read_text() == "mine"


# ---- complete validation at load (item 5) ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_with_a_non_finite_tensor_are_refused_before_export(tmp_path, bad):
    import torch

    from mobilekit.models.torch_builder import build_torch_model
    from mobilekit.space import Architecture, get_space

    arch = Architecture.from_string(get_space(resolution=32), valid_long_architecture())
    state = build_torch_model(arch).state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone().fill_(bad)
    weights = tmp_path / "w.pt"
    torch.save(state, weights)
    out = tmp_path / "out"
    code, _, err = run_cli(["export", "--arch", valid_long_architecture(), "--resolution", "32", "--weights",
                            str(weights), "--out", str(out), "--format", "onnx"])
    assert_one_line_failure(code, err, "w.pt", name, "NaN or inf")
    assert not out.exists() or not any(out.iterdir())


def _run_folder_with(tmp: Path, config: bytes | None, metrics: bytes | None) -> Path:
    """A run folder whose files mobilekit wrote (listed in its manifest), then damaged on disk."""
    from mobilekit.search.runfolder import RunFolder

    run = RunFolder(tmp / "run")
    run.write_json("config.json", {"table": TABLE, "target_ms": 80})
    safewrite.write_bytes(run.path("weights.pt"), b"state")  # training state: --resume must read config.json
    if metrics is not None:
        run.log({"step": 0})
        run.metrics.write_bytes(metrics)
        safewrite.remove(run.path("weights.pt"))              # metrics alone hold the state
    if config is not None:
        run.path("config.json").write_bytes(config)
    return run.root


damaged_json = st.one_of(st.binary(max_size=60), st.sampled_from([b"[1, 2]", b"\"text\"", b"{", b"\xff\xfe{}",
                                                                  b"[" * 5000 + b"]" * 5000]))


@FUZZ
@given(config=damaged_json)
def test_a_damaged_config_met_on_resume_is_one_line(config):
    import json

    try:
        json.loads(config)
        if isinstance(json.loads(config), dict):
            return  # an object is a config with other settings: refused elsewhere
    except (ValueError, RecursionError):
        pass
    with tempfile.TemporaryDirectory() as tmp:
        root = _run_folder_with(Path(tmp), config, None)
        before = tree(Path(tmp))
        code, _, err = run_cli(["search", *TINY_SEARCH, "--out", str(root), "--resume"])
        assert_one_line_failure(code, err, "config.json")
        assert tree(Path(tmp)) == before


@FUZZ
@given(line=st.one_of(st.binary(min_size=1, max_size=40), st.sampled_from([b"[1]", b"3", b"{\"a\": ", b"\xff"])))
def test_a_damaged_metrics_log_met_on_resume_is_one_line(line):
    import json

    try:
        if isinstance(json.loads(line), dict) or not line.strip():
            return
    except (ValueError, RecursionError):
        pass
    with tempfile.TemporaryDirectory() as tmp:
        root = _run_folder_with(Path(tmp), None, b'{"step": 0}\n' + line + b"\n")
        before = tree(Path(tmp))
        code, _, err = run_cli(["search", *TINY_SEARCH, "--out", str(root), "--resume"])
        assert_one_line_failure(code, err, "metrics.jsonl")
        assert tree(Path(tmp)) == before


# ---- a checkpoint met on resume, mutated (item 5) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> Path:
    """A run folder as a killed search leaves it: config, metrics and ``checkpoint.npz`` after epoch 1 of 2."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    with search_interrupted_at(1):
        code, _, err = run_cli(["search", *TINY_SEARCH, "--epochs", "2", "--out", str(out)])
    assert code == 130 and (out / "checkpoint.npz").is_file(), err
    return out


def _mutated_checkpoint(source: Path, target: Path, mutation: tuple) -> None:
    """Write ``source`` (an npz checkpoint) to ``target`` with one ``mutation``."""
    import io
    import json

    import numpy as np

    kind, value = mutation
    raw = source.read_bytes()
    if kind == "truncate":
        # a cut checkpoint once made resume rewrite config.json before its one-line refusal: now read first
        target.write_bytes(raw[:1 + int(value * (len(raw) - 2))])
        return
    with np.load(io.BytesIO(raw), allow_pickle=False) as data:
        arrays = {name: data[name].copy() for name in data.files}
    tensor_names = sorted(n for n in arrays if n.startswith("m/") and arrays[n].dtype.kind == "f" and arrays[n].size)
    name = tensor_names[int(value * (len(tensor_names) - 1))]
    meta_key = next(n for n in arrays if not n.startswith(("m/", "o/", "rng/")))
    meta = json.loads(arrays[meta_key].tobytes().decode())
    if kind == "drop tensor":
        del arrays[name]
    elif kind == "reshape tensor":
        arrays[name] = np.zeros(arrays[name].size + 1, dtype=arrays[name].dtype)
    elif kind == "non-finite tensor":
        arrays[name] = arrays[name].copy()
        arrays[name].flat[0] = np.nan if value < 0.5 else np.inf
    elif kind == "meta":
        field = sorted(meta)[int(value * (len(meta) - 1))]
        meta[field] = [None, "x", -1, [1]][int(value * 3)]
        arrays[meta_key] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(target, "wb") as handle:
        np.savez(handle, **arrays)


@settings(max_examples=10, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutation=st.tuples(st.sampled_from(["truncate", "drop tensor", "reshape tensor", "non-finite tensor", "meta"]),
                          st.floats(0, 1)))
def test_a_mutated_checkpoint_met_on_resume_is_one_line_and_changes_no_file(interrupted_run, mutation):
    import shutil

    out = Path(tempfile.mkdtemp(prefix="mobilekit-ckpt-", dir=interrupted_run.parent)) / "run"
    shutil.copytree(interrupted_run, out, symlinks=True)
    config = out / "config.json"  # it names its run folder: moved with it, as a user moving a run would see it kept
    config.write_text(config.read_text().replace(f'"out": "{interrupted_run}"', f'"out": "{out}"'))
    (out / "config.json").write_text((out / "config.json").read_text().replace(str(interrupted_run), str(out)))
    _mutated_checkpoint(interrupted_run / "checkpoint.npz", out / "checkpoint.npz", mutation)
    before = {k: v for k, v in tree(out).items() if not k.startswith("tensorboard")}  # new event files may appear
    code, _, err = run_cli(["search", *TINY_SEARCH, "--epochs", "2", "--out", str(out), "--resume"])
    assert_one_line_failure(code, err, "checkpoint.npz")
    after = tree(out)
    assert {k: after.get(k) for k in before} == before, "a file of the run changed"
