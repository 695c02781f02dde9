"""Builders and exporters: PyTorch == Keras == ONNX == TFLite on random weights at small resolution."""

import json
import random

import numpy as np
import pytest
import torch

from mobilekit.cli import main
from mobilekit.errors import ExportError
from mobilekit.export import export_model, load_model_file, load_weights
from mobilekit.models import build_torch_model, randomize_batchnorm
from mobilekit.space import Architecture, get_space, reference_architecture

SMALL = dict(resolution=32, num_classes=10)


def random_model(arch: Architecture, seed: int = 0):
    torch.manual_seed(seed)
    return randomize_batchnorm(build_torch_model(arch), seed).eval()


def every_type_architecture(space) -> Architecture:
    """Each searchable position takes the first type not used yet that it allows, so every block variant (and
    skip) appears at least once."""
    unused = [t for t in space.all_layer_types if any(t in p.candidates for p in space.searchable_positions)]
    choices = []
    for position in space.positions:
        allowed = [t for t in unused if t in position.candidates]
        choice = allowed[0] if allowed else position.candidates[-1]
        choices.append(choice)
        if choice in unused:
            unused.remove(choice)
    return Architecture(space, tuple(choices))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    space = get_space(**SMALL)
    arch = every_type_architecture(space)
    model = random_model(arch)
    out = tmp_path_factory.mktemp("export")
    report = export_model(model, out, formats=("onnx", "tflite", "tflite-int8"))
    return model, report


def test_every_type_appears_in_the_parity_architecture():
    space = get_space(**SMALL)
    searchable_types = {t for p in space.searchable_positions for t in p.candidates}
    assert set(every_type_architecture(space).choices) >= searchable_types and len(searchable_types) == 13


def test_keras_twin_matches_pytorch():
    from mobilekit.models.keras_builder import keras_model_from_torch

    space = get_space(**SMALL)
    model = random_model(every_type_architecture(space), seed=1)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).numpy()
    got = keras_model_from_torch(model)(x.numpy().transpose(0, 2, 3, 1), training=False).numpy()
    assert np.abs(got - expected).max() <= 1e-4


def test_onnx_matches_pytorch(exported):
    _, report = exported
    assert report.parity["onnx"].max_abs_diff <= 1e-4 and report.parity["onnx"].passed


def test_onnx_file_is_self_contained(exported):
    _, report = exported
    folder = report.files["onnx"].parent
    assert not list(folder.glob("*.data")) and report.files["onnx"].stat().st_size > 100_000


def test_tflite_float_matches_pytorch(exported):
    _, report = exported
    assert report.parity["tflite"].max_abs_diff <= 1e-4


def test_int8_model_is_quantized_and_reports_agreement(exported):
    _, report = exported
    model = load_model_file(report.files["tflite-int8"])
    assert model.quantized
    assert 0.0 <= report.parity["tflite-int8"].top1_agreement <= 1.0
    assert report.files["tflite-int8"].stat().st_size < report.files["tflite"].stat().st_size / 2


def test_model_json_describes_every_file(exported):
    model, report = exported
    info = json.loads(report.model_json.read_text())
    assert info["architecture"]["block_string"] == model.arch.to_string()
    assert info["files"]["onnx"]["input_shape"] == [1, 3, 32, 32]
    assert info["files"]["tflite"]["layout"] == "NHWC"
    assert info["files"]["tflite-int8"]["input_dtype"] == "int8"
    assert info["mobilekit_version"]
    # issue 22: the int8 file's quantisation parameters, as LiteRT reports them, so a caller can quantise inputs
    q = info["files"]["tflite-int8"]["quantization"]
    details = load_model_file(report.files["tflite-int8"]).input
    assert q["input"]["dtype"] == "int8" and q["input"]["scale"] == pytest.approx(float(details["quantization"][0]))
    assert q["input"]["zero_point"] == int(details["quantization"][1]) and q["output"]["scale"] > 0
    assert "quantization" not in info["files"]["tflite"]


def test_export_at_a_deployment_resolution_keeps_the_weights(tmp_path):
    space = get_space(**SMALL)
    model = random_model(reference_architecture(space))
    report = export_model(model, tmp_path, formats=("onnx",), deploy_resolution=64)
    assert load_model_file(report.files["onnx"]).input_shape == (1, 3, 64, 64)
    assert report.parity["onnx"].passed


@pytest.mark.parametrize("suffix,damage", [(".onnx", "truncate"), (".tflite", "truncate"), (".tflite", "garbage"),
                                           (".onnx", "empty")])
def test_damaged_model_file_gives_a_clear_error(exported, tmp_path, suffix, damage):
    _, report = exported
    source = report.files["onnx" if suffix == ".onnx" else "tflite"].read_bytes()
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes({"truncate": source[: len(source) // 3], "garbage": b"\x00" * 64, "empty": b""}[damage])
    with pytest.raises(ExportError, match="bad" + suffix.replace(".", "\\.") + ": .*export it again"):
        model = load_model_file(bad)
        model.run(np.zeros((1, *model.input_shape[1:]), np.float32))


def test_weights_of_another_architecture_are_rejected(tmp_path):
    space = get_space(**SMALL)
    torch.save(random_model(reference_architecture(space)).state_dict(), tmp_path / "w.pt")
    other = build_torch_model(every_type_architecture(space))
    with pytest.raises(ExportError, match="w.pt: weights do not fit this architecture"):
        load_weights(other, tmp_path / "w.pt")


def test_cli_export_writes_a_verified_onnx(tmp_path, capsys):
    space = get_space(**SMALL)
    arch = reference_architecture(space)
    torch.save(random_model(arch, seed=4).state_dict(), tmp_path / "w.pt")
    code = main(["export", "--arch", arch.to_string(), "--weights", str(tmp_path / "w.pt"), "--resolution", "32",
                 "--num-classes", "10", "--format", "onnx", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0 and "onnx: max abs diff vs PyTorch" in out and "[ok]" in out
    assert (tmp_path / "out" / "model.onnx").is_file() and (tmp_path / "out" / "model.json").is_file()


def test_cli_bad_architecture_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["export", "--arch", "ir_k3_e6,skip", "--format", "onnx", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "2 layers" in err and "Traceback" not in err


def test_cli_check_rejects_a_truncated_file_with_exit_2(exported, tmp_path, capsys):
    _, report = exported
    bad = tmp_path / "m.tflite"
    bad.write_bytes(report.files["tflite"].read_bytes()[:5000])
    assert main(["check", str(bad)]) == 2
    assert "m.tflite" in capsys.readouterr().err


def test_random_architectures_build_and_run():
    from mobilekit.space import sample_architecture

    space = get_space(**SMALL)
    rng = random.Random(0)
    for _ in range(5):
        model = build_torch_model(sample_architecture(space, rng)).eval()
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_cli_export_from_a_run_folder_writes_the_trained_normalisation_and_class_names(tmp_path, capsys):
    """issue 22: export without --data wrote mean 0 / std 1; a run folder's bundle.json carries what was trained."""
    import json

    space = get_space(**SMALL)
    arch = reference_architecture(space)
    run = tmp_path / "run"
    run.mkdir()
    arch.save(run / "arch.json")
    torch.save(random_model(arch, seed=4).state_dict(), run / "weights.pt")
    names = [f"class-{i}" for i in range(space.num_classes)]
    bundle = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "class_names": names,
              "deploy_resolution": space.resolution}
    (run / "bundle.json").write_text(json.dumps(bundle))
    code = main(["export", "--run", str(run), "--format", "onnx", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    info = json.loads((tmp_path / "out" / "model.json").read_text())
    assert info["mean"] == bundle["mean"] and info["std"] == bundle["std"] and info["class_names"] == names
    assert "bilinear" in info["preprocessing"] and info["resolution"] == space.resolution


def test_cli_export_run_folder_without_bundle_is_one_line(tmp_path, capsys):
    code = main(["export", "--run", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "bundle.json" in err
