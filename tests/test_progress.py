"""Progress display: a bar only on a terminal, one plain line per epoch in redirected output (no ``\\r``)."""

import contextlib
import io

from mobilekit.progress import EpochLines, progress_display
from mobilekit.search import make_config, run_search


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_is_shown_only_on_a_terminal():
    assert isinstance(progress_display(io.StringIO()), EpochLines)
    bar = progress_display(_Terminal())
    assert not isinstance(bar, EpochLines) and hasattr(bar, "set_postfix_str")
    bar.close()


def test_redirected_search_writes_one_line_per_epoch_and_no_carriage_return(tmp_path, table_path, target):
    config = make_config(table=str(table_path), target_ms=target, out=str(tmp_path / "run"), data="digits",
                         epochs=2, steps_per_epoch=3, batch_size=16, final_epochs=1, export=(), train_resolution=32)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        run_search(config, progress=True, log=print)
    text = err.getvalue()
    assert "\r" not in text and "\x1b[" not in text
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines if " epoch " in line] == [
        "search epoch 1/2", "search epoch 2/2", "final epoch 1/1"], text
    assert all("CE " in line for line in lines if line.startswith("search epoch"))
    assert all("val acc " in line for line in lines if " epoch " in line), text


def test_every_epoch_records_its_validation_accuracy(tmp_path, table_path, target):
    """metrics.jsonl: the last record of each epoch (search and final training) carries val_accuracy in [0, 1];
    no other record does; the search plot is drawn with the curve."""
    import json

    out = tmp_path / "run"
    config = make_config(table=str(table_path), target_ms=target, out=str(out), data="digits", epochs=2,
                         steps_per_epoch=3, batch_size=16, final_epochs=1, export=(), train_resolution=32)
    run_search(config)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    validated = [(r["phase"], r["epoch"], r["step"]) for r in records if "val_accuracy" in r]
    assert validated == [("search", 0, 2), ("search", 1, 5), ("final", 0, 2)]
    assert all(0.0 <= r["val_accuracy"] <= 1.0 for r in records if "val_accuracy" in r)
    assert (out / "search.png").stat().st_size > 0


def test_native_start_up_logs_are_errors_only_unless_verbose(monkeypatch):
    from mobilekit.cli import NATIVE_LOG_LEVELS, build_parser, quiet_native_logs

    for name in NATIVE_LOG_LEVELS:
        monkeypatch.delenv(name, raising=False)
    quiet_native_logs(verbose=False)
    import os

    assert all(os.environ[name] == "2" for name in NATIVE_LOG_LEVELS)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")           # the user's own setting is kept
    quiet_native_logs(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    quiet_native_logs(verbose=True)
    assert all(os.environ[name] == "0" for name in NATIVE_LOG_LEVELS)
    assert build_parser().parse_args(["--verbose", "devices"]).verbose
