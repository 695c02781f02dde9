"""Few-shot tables: the chosen entries span the reference, the map recovers a known transform, and
`mobilekit latency adapt` measures only the budget on a device and marks the rest predicted."""

import numpy as np
import pytest

from mobilekit.cli import main
from mobilekit.latency.adapt import TransferMap, few_shot_heldout, reference_prior, select_entries
from mobilekit.latency.published_eval import load_ofa_note10
from mobilekit.latency_table import LatencyTable
from mobilekit.space import get_space

DATA = "/work/shared/latency"


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return str(tmp_path_factory.getbasetemp() / "profile-model-files")  # shared with the other profile tests


def test_a_device_twice_as_slow_with_a_power_law_is_recovered_from_ten_layers():
    ofa = load_ofa_note10(DATA)
    ref = ofa.subset(ofa.attrs["resolution"] == 224)
    truth = 2.0 * ref.latency_ms ** 0.9
    result = few_shot_heldout(ref.shapes, ref.latency_ms, ref.shapes, truth, budget=10)
    assert result.mape < 0.5 and len(result.chosen) == 10


def test_chosen_entries_span_the_reference_latency_range():
    ofa = load_ofa_note10(DATA)
    ref = ofa.subset(ofa.attrs["resolution"] == 192)
    prior = reference_prior(ref.shapes, ref.latency_ms, ref.shapes)
    chosen = select_entries(ref.shapes, prior, 8)
    assert len(set(chosen)) == 8
    assert prior[chosen].min() <= np.quantile(prior, 0.1) and prior[chosen].max() >= np.quantile(prior, 0.9)


def test_transfer_map_picks_the_family_by_leave_one_out_error():
    ofa = load_ofa_note10(DATA)
    ref = ofa.subset(ofa.attrs["resolution"] == 160)
    mapping = TransferMap().fit(ref.latency_ms[:15], 3.0 * ref.latency_ms[:15], ref.shapes[:15])
    assert mapping.loo_mape_["ratio"] < 1e-6 and np.allclose(mapping.predict(ref.latency_ms, ref.shapes),
                                                             3.0 * ref.latency_ms, rtol=1e-4)


def test_cli_adapt_measures_only_the_budget_and_predicts_the_rest(tmp_path, work_dir, capsys):
    from test_latency_validate import synthetic_table

    reference = synthetic_table(get_space("mnasnet-k357", resolution=32)).save(tmp_path / "reference.json")
    device = tmp_path / "onnx-host.toml"
    device.write_text('name = "onnx-host"\ntransport = "host"\nruntime = "onnx"\nthreads = 1\n')
    out = tmp_path / "new.json"
    code = main(["latency", "adapt", "--reference", str(reference), "--device", str(device), "--budget", "6",
                 "--out", str(out), "--runs", "3", "--repeats", "1", "--work-dir", work_dir, "--no-progress"])
    assert code == 0, capsys.readouterr()
    table = LatencyTable.load(out)
    layers = [(p, n, e) for p, n, e in table.iter_entries() if n != "skip"]
    measured = [e for _, _, e in layers if e.get("measured")]
    assert len(measured) == 4 and {"stem", "head"} <= set(table.fixed)  # 6 = stem + head + 4 layers
    predicted = [e for _, _, e in layers if e.get("predicted")]
    assert predicted and all(e["median_ms"] > 0 and not e["measured"] for e in predicted)
    assert len(measured) + len(predicted) == len(layers)
    assert table.settings["adapt"]["budget"] == 6 and len(table.settings["adapt"]["measured_layers"]) == 4
    assert "predicted from" in capsys.readouterr().out
