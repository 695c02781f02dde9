"""The regression on real published phone tables (shared/latency beside the repository)."""

import math
from pathlib import Path

import pytest

from mobilekit.errors import DataError
from mobilekit.latency.published_eval import (
    evaluate_published, load_ofa_note10, load_proxyless_pixel1, load_spnas_pixel1,
)

SHARED = Path(__file__).parents[2] / "shared" / "latency"


@pytest.fixture(scope="module")
def root() -> Path:
    if not (SHARED / "pixel1_spnas_layers.csv").is_file():
        pytest.fail(f"published latency tables not found at {SHARED}: the tests expect the shared reference data "
                    "in ../shared beside the repository")
    return SHARED


def test_published_tables_load(root):
    assert len(load_spnas_pixel1(root).shapes) == 80
    proxyless = load_proxyless_pixel1(root)
    assert {s.kernel for s in proxyless.shapes} == {3, 5, 7}
    ofa = load_ofa_note10(root)
    assert sorted(set(ofa.attrs["resolution"].tolist())) == [160, 176, 192, 208, 224]
    assert ofa.attrs["se"].any() and not ofa.attrs["se"].all()


def test_published_evaluation_runs_and_beats_a_macs_baseline(root):
    evaluation = evaluate_published(root, model="opcost+gbr", cv=0)
    assert len(evaluation.results) >= 9
    for result in evaluation.results:
        assert result.n_train > 0 and result.n_test > 0
        assert math.isfinite(result.metrics["rmse_ms"]) and math.isfinite(result.metrics["mape_pct"])
    by_name = {(r.dataset, r.scenario): r for r in evaluation.results}
    spnas_cv = by_name[("pixel1-spnas", "5-fold CV by layer shape")]
    assert spnas_cv.metrics["mape_pct"] < 8.0                  # 5.2 % when written
    assert spnas_cv.metrics["mape_pct"] < spnas_cv.baseline["mape_pct"]
    resolution = by_name[("note10-ofa", "resolution 224 from 160-208")]
    assert resolution.metrics["mape_pct"] < 5.0
    text = evaluation.format()
    assert "RMSE ms" in text and "pixel1-proxylessnas" in text and "note10-ofa" in text


def test_missing_data_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="missing"):
        evaluate_published(tmp_path)
