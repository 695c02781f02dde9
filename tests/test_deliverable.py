"""Issue 22: the deliverable is what it says. A search on a small image folder (written here) exports files
whose own accuracy, measured by this test with the LiteRT interpreter and the preprocessing model.json
describes, is the accuracy summary.json reports."""

import json

import numpy as np
import pytest
from PIL import Image

from _synthetic_tables import SEARCH_WIDTH, synthetic_table
from mobilekit.data import load_dataset
from mobilekit.latency.differentiable import SuperkernelLatency
from mobilekit.search import make_config, run_search


CLASSES = ("circle", "cross", "stripes")


def write_folder(root, per_class=20, size=44, seed=0):
    """Three easily told-apart patterns in noisy RGB images of ``size`` px (not the network's resolution, so
    the files' resizing matters)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    patterns = {"circle": ((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.09), "cross": (abs(yy - 0.5) < 0.12) |
                (abs(xx - 0.5) < 0.12), "stripes": (np.floor(xx * 6) % 2 == 0)}
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            base = patterns[name][..., None] * rng.uniform(120, 220, 3) + rng.normal(40, 25, (size, size, 3))
            Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def deliverable(tmp_path_factory):
    """A single-path run on the written folder with a table at 32 px (train = deploy resolution), exporting
    ONNX, TFLite float and int8."""
    tmp = tmp_path_factory.mktemp("deliverable")
    table = synthetic_table(width=SEARCH_WIDTH, resolution=32)
    fastest, slowest = SuperkernelLatency(table).bounds_ms()
    table_path = table.save(tmp / "table32.json")
    data = write_folder(tmp / "images")
    out = tmp / "run"
    config = make_config(table=str(table_path), target_ms=round(fastest + 0.5 * (slowest - fastest), 1),
                         out=str(out), data=f"folder:{data}", epochs=2, steps_per_epoch=4, batch_size=16,
                         final_epochs=3, lr=1e-2, train_resolution=32, workers=0, seed=0,
                         export=("onnx", "tflite", "tflite-int8"))
    summary = run_search(config)
    return out, data, summary


def litert_accuracy(tflite_file, model_json, files, labels):
    """What a user does: open each image as model.json's preprocessing says, feed it to LiteRT, argmax."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_file), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    size = model_json["resolution"]
    mean, std = np.asarray(model_json["mean"], np.float32), np.asarray(model_json["std"], np.float32)
    correct = 0
    for file, label in zip(files, labels):
        with Image.open(file) as image:
            rgb = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), np.float32) / 255.0
        interpreter.set_tensor(inp["index"], ((rgb - mean) / std)[None].astype(np.float32))
        interpreter.invoke()
        correct += int(interpreter.get_tensor(out["index"])[0].argmax() == label)
    return correct / len(files)


def test_litert_on_the_exported_file_scores_what_the_summary_reports(deliverable):
    out, data, summary = deliverable
    model_json = json.loads((out / "exported" / "model.json").read_text())
    assert model_json["class_names"] == list(CLASSES)
    # the documented split (stratified 70/15/15 per class, seeded by --seed) names the test images
    test = load_dataset(f"folder:{data}", resolution=32, seed=0).test
    accuracy = litert_accuracy(out / "exported" / model_json["files"]["tflite"]["file"], model_json, test.files,
                               test.labels)
    assert summary["accuracy_file"] == "tflite" and summary["accuracy_images"] == len(test.files)
    assert abs(accuracy - summary["accuracy"]) <= 0.01
    stored = json.loads((out / "summary.json").read_text())
    assert stored["accuracy"] == summary["accuracy"]
    assert model_json["files"]["tflite"]["test_accuracy"]["accuracy"] == summary["accuracy"]


def test_every_exported_file_is_scored_and_int8_agreement_is_on_the_same_images(deliverable):
    out, _, summary = deliverable
    scores = summary["exported_accuracy"]
    assert set(scores) == {"onnx", "tflite", "tflite-int8", "pytorch"}
    images = {score["images"] for score in scores.values()}
    assert images == {summary["accuracy_images"]}
    assert all(score["resolution"] == 32 for score in scores.values())
    # float files agree with PyTorch to 1e-4, so their accuracies are PyTorch's at that resolution
    assert scores["onnx"]["accuracy"] == scores["tflite"]["accuracy"] == scores["pytorch"]["accuracy"]
    int8 = scores["tflite-int8"]
    assert int8["agreement_with"] == "tflite" and 0.0 <= int8["agreement"] <= 1.0
    # agreement is a share of the scored images, not of 8 random samples
    assert round(int8["agreement"] * int8["images"]) == pytest.approx(int8["agreement"] * int8["images"], abs=1e-6)
    assert "test split" in json.loads((out / "exported" / "model.json").read_text())["scored_on"]


def test_export_from_the_run_folder_scores_its_files_on_the_runs_test_split(deliverable, tmp_path, capsys):
    """`mobilekit export --run` reads the data set and seed from bundle.json: same images, same accuracy."""
    from mobilekit.cli import main

    out, _, summary = deliverable
    code = main(["export", "--run", str(out), "--format", "tflite", "--out", str(tmp_path / "again")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    model_json = json.loads((tmp_path / "again" / "model.json").read_text())
    score = model_json["files"]["tflite"]["test_accuracy"]
    assert score["images"] == summary["accuracy_images"] and score["accuracy"] == summary["accuracy"]
    assert "scored model.tflite: test accuracy" in printed.out


def test_check_scores_a_file_on_labelled_images_and_compares_with_weights(deliverable, tmp_path, capsys):
    from mobilekit.cli import main

    out, data, summary = deliverable
    code = main(["check", str(out / "exported" / "model.tflite"), "--runs", "1", "--data", f"folder:{data}",
                 "--weights", str(out / "weights.pt"), "--out", str(tmp_path / "check")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    result = json.loads((tmp_path / "check" / "check.json").read_text())
    assert result["accuracy"] == summary["accuracy"] and result["images"] == summary["accuracy_images"]
    assert result["class_names"] == list(CLASSES)
    confusion = np.asarray(result["confusion"])
    assert confusion.shape == (3, 3) and confusion.sum() == result["images"]
    assert np.trace(confusion) == round(result["accuracy"] * result["images"])
    assert result["agreement"] == 1.0 and result["pytorch_accuracy"] == summary["exported_accuracy"]["pytorch"]["accuracy"]
    assert (tmp_path / "check" / "confusion.png").stat().st_size > 0
    assert "confusion matrix" in printed.out
    code = main(["check", str(out / "exported" / "model.onnx"), "--runs", "1", "--data", f"folder:{data}",
                 "--split", "val", "--out", str(tmp_path / "val")])
    assert code == 0, capsys.readouterr().err
    val = json.loads((tmp_path / "val" / "check.json").read_text())
    assert val["split"] == "val" and val["images"] == len(load_dataset(f"folder:{data}", 32, seed=0).val)


def test_check_errors_are_one_line(deliverable, tmp_path, capsys):
    import shutil

    from mobilekit.cli import main

    out, data, _ = deliverable
    lone = tmp_path / "lone.onnx"
    shutil.copy(out / "exported" / "model.onnx", lone)
    cases = [(["check", str(lone), "--runs", "1", "--data", f"folder:{data}"], "model.json"),
             (["check", str(out / "exported" / "model.onnx"), "--runs", "1", "--data", "digits"], "classes"),
             (["check", str(out / "exported" / "model.onnx"), "--runs", "1", "--weights", str(out / "weights.pt")],
              "--data")]
    for argv, word in cases:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and word in err, err


def test_the_prediction_reprices_the_tables_1000_class_head_for_3_classes(deliverable):
    _, _, summary = deliverable
    head = summary["head_correction"]
    assert head["table_classes"] == 1000 and head["num_classes"] == 3
    assert -head["head_ms"] < head["delta_ms"] < 0
    assert summary["predicted_ms"] == pytest.approx(summary["predicted_ms_table"] + head["delta_ms"])
    assert summary["within_window"] == (0.9 * summary["target_ms"] <= summary["predicted_ms"] <= summary["target_ms"])


def read_table(buf, pos):
    import flatbuffers

    return flatbuffers.table.Table(buf, pos)


def field_offset(table, slot):
    return table.Offset(4 + 2 * slot)


def sub_table(table, slot):
    return read_table(table.Bytes, table.Indirect(table.Pos + field_offset(table, slot)))


def vector_tables(table, slot):
    offset = field_offset(table, slot)
    start = table.Vector(offset)
    return [read_table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(table.VectorLen(offset))]


def string(table, slot):
    return table.String(table.Pos + field_offset(table, slot)).decode()


def test_class_names_round_trip_through_model_json_and_the_tflite_metadata(deliverable):
    """The TFLite Support metadata layout, read with plain flatbuffers tables: the model's TFLITE_METADATA buffer
    is a ModelMetadata (M001) whose output tensor has labels.txt as a TENSOR_AXIS_LABELS file, and labels.txt
    is zipped into the .tflite file."""
    import io
    import zipfile

    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    out, _, _ = deliverable
    model_json = json.loads((out / "exported" / "model.json").read_text())
    assert model_json["class_names"] == list(CLASSES) and model_json["labels_file"] == "labels.txt"
    assert (out / "exported" / "labels.txt").read_text().splitlines() == list(CLASSES)
    for name in ("model.tflite", "model_int8.tflite"):
        data = (out / "exported" / name).read_bytes()
        assert zipfile.ZipFile(io.BytesIO(data)).read("labels.txt").decode().splitlines() == list(CLASSES)
        model = schema.Model.GetRootAs(data, 0)
        entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
        meta = model.Buffers(entries["TFLITE_METADATA"]).DataAsNumpy().tobytes()
        assert flatbuffers.util.BufferHasIdentifier(meta, 0, b"M001")
        root = read_table(meta, flatbuffers.encode.Get(flatbuffers.packer.uoffset, meta, 0))
        subgraph = vector_tables(root, 3)[0]
        output = vector_tables(subgraph, 3)[0]
        label_file = vector_tables(output, 6)[0]
        assert string(label_file, 0) == "labels.txt"
        assert label_file.Get(flatbuffers.number_types.Int8Flags, label_file.Pos + field_offset(label_file, 2)) == 2
        unit = vector_tables(vector_tables(subgraph, 2)[0], 4)[0]
        normalization = sub_table(unit, 1)
        mean = normalization.GetVectorAsNumpy(flatbuffers.number_types.Float32Flags, field_offset(normalization, 0))
        assert mean == pytest.approx([255 * m for m in model_json["mean"]], rel=1e-5)


def test_a_proxy_run_whose_files_score_far_below_the_proxy_is_warned():
    from mobilekit.search.run import resolution_warning

    summary = {"accuracy_is_proxy": True, "accuracy": 0.157, "test_accuracy": 0.659, "train_resolution": 32,
               "deploy_resolution": 224}
    assert "--train-resolution 224" in resolution_warning(summary)
    assert resolution_warning({**summary, "accuracy": 0.64}) is None
    assert resolution_warning({**summary, "accuracy_is_proxy": False}) is None
