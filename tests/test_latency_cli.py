"""``mobilekit latency predict / fit``: thin commands over the library; user mistakes are one-line errors."""

import json
from pathlib import Path

import pytest

from mobilekit.cli import main
from mobilekit.latency import LayerLatencyRegressor
from mobilekit.latency_table import LatencyTable
from mobilekit.space import Architecture, get_space

PIXEL1 = str(Path(__file__).parents[1] / "latency_tables" / "pixel1-spnas.json")
ARCH = ("ir_k3_e6,ir_k3_e3,skip,ir_k5_e6,ir_k5_e3,skip,ir_k3_e6,skip,ir_k5_e6,ir_k3_e3,"
        "skip,skip,ir_k5_e3,ir_k3_e6,ir_k5_e6,skip,ir_k3_e3,ir_k5_e6,skip,ir_k5_e3")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("fit") / "predictor.json"
    assert main(["latency", "fit", "--table", PIXEL1, "--out", str(path), "--model", "opcost+gbr", "--cv", "3"]) == 0
    return str(path)


def test_fit_reports_heldout_rmse_and_mape(tmp_path, capsys):
    out = tmp_path / "p.json"
    filled = tmp_path / "filled.json"
    code = main(["latency", "fit", "--table", PIXEL1, "--out", str(out), "--filled-table", str(filled)])
    text = capsys.readouterr().out
    assert code == 0
    assert "RMSE ms" in text and "MAPE %" in text and "chosen: " in text
    assert json.loads(out.read_text())["heldout"]["mape_pct"] > 0
    table = LatencyTable.load(filled)
    assert table.entry(5, "ir_k3_e3_se0.5")["note"] == "regression"


def test_predict_json_has_lookup_and_regression(predictor, capsys):
    code = main(["latency", "predict", "--table", PIXEL1, "--predictor", predictor, "--json", ARCH])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    lookup = LatencyTable.load(PIXEL1).lookup_ms(Architecture.from_string(get_space(), ARCH))
    assert result["lookup_ms"] == pytest.approx(lookup)
    assert result["regression_ms"] == pytest.approx(lookup, rel=0.05)
    assert len(result["layers"]) == 20


def test_predict_reads_an_architecture_file(predictor, tmp_path, capsys):
    path = Architecture.from_string(get_space(), ARCH).save(tmp_path / "arch.json")
    assert main(["latency", "predict", "--table", PIXEL1, "--predictor", predictor, str(path)]) == 0
    text = capsys.readouterr().out
    assert "lookup_ms" in text and "regression_ms" in text


def test_predict_without_predictor_fits_on_the_table(capsys):
    assert main(["latency", "predict", "--table", PIXEL1, "--json", ARCH]) == 0
    assert json.loads(capsys.readouterr().out)["regression_model"]


def test_predict_se_on_pixel1_has_no_lookup_but_a_regression(predictor, capsys):
    arch = ARCH.replace("ir_k5_e6", "ir_k5_e6_se0.25")
    assert main(["latency", "predict", "--table", PIXEL1, "--predictor", predictor, "--json", arch]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["lookup_ms"] is None and "not measured" in result["lookup_note"]
    assert result["regression_ms"] > 19.6


def test_predict_other_width_uses_the_regression(predictor, tmp_path, capsys):
    path = Architecture.from_string(get_space(width=0.5), ARCH).save(tmp_path / "narrow.json")
    assert main(["latency", "predict", "--table", PIXEL1, "--predictor", predictor, "--json", str(path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["lookup_ms"] is None and result["space"]["width"] == 0.5
    assert 19.6 * 0.1 < result["regression_ms"] < 70


@pytest.mark.parametrize("content", ["{", '{"format": "nope"}'])
def test_bad_table_file_is_a_one_line_error_naming_the_file(tmp_path, capsys, content):
    bad = tmp_path / "bad-table.json"
    bad.write_text(content)
    code = main(["latency", "predict", "--table", str(bad), ARCH])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and str(bad) in err and "Traceback" not in err


def test_missing_table_file_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "none.json"
    assert main(["latency", "fit", "--table", str(missing), "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(missing) in err


def test_bad_predictor_file_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "p.json"
    bad.write_text("[]")
    assert main(["latency", "predict", "--table", PIXEL1, "--predictor", str(bad), ARCH]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(bad) in err


def test_cli_model_choices_match_the_library():
    from mobilekit.cli.latency import MODEL_CHOICES
    from mobilekit.latency.regression import MODEL_KINDS

    assert MODEL_CHOICES == ("auto",) + MODEL_KINDS


def test_validate_measures_real_networks_on_this_cpu(tmp_path, capsys):
    from test_latency_validate import synthetic_table

    table = synthetic_table(get_space(width=0.25, resolution=32)).save(tmp_path / "table.json")
    predictor = LayerLatencyRegressor(model="opcost", cv=0).fit_table(LatencyTable.load(table))
    predictor.save(tmp_path / "predictor.json")
    device = tmp_path / "onnx-host.toml"
    device.write_text('name = "onnx-host"\ntransport = "host"\nruntime = "onnx"\nthreads = 1\n')
    out = tmp_path / "validation"
    code = main(["latency", "validate", "--device", str(device), "--table", str(table), "--samples", "3",
                 "--runs", "3", "--out", str(out), "--predictor", str(tmp_path / "predictor.json"),
                 "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0
    assert "repeat noise" in text and "regression + network correction" in text
    assert "protocol held" in text  # read before and after on this CPU
    assert "protocol differs from the table's: the table records no measurement protocol" in text
    assert len(list((out / "models").glob("*.onnx"))) == 3
    assert (out / "validation.csv").is_file() and (out / "validation.png").is_file()


def test_validate_rejects_a_table_of_another_runtime(tmp_path, capsys):
    device = tmp_path / "onnx-host.toml"
    device.write_text('name = "onnx-host"\ntransport = "host"\nruntime = "onnx"\nthreads = 1\n')
    assert main(["latency", "validate", "--device", str(device), "--table", PIXEL1, "--samples", "3"]) == 2
    err = capsys.readouterr().err
    assert "tflite" in err and len(err.strip().splitlines()) == 1
