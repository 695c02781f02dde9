"""How well the layer regression predicts real phone measurements it was not fitted on.

Reads the published per-layer tables in ``shared/latency/`` (see its README; all TFLite, batch 1, ms):

``pixel1-spnas``        Google Pixel 1, Single-Path NAS (Stamoulis et al. 2019, dstamoulis/single-path-nas,
                        ``pixel1_runtime_model.json``; ``pixel1_spnas_layers.csv``): the 20 searchable MnasNet
                        layers x {k3, k5} x {e3, e6}. The two fixed layers are left out: the reference measured
                        the same fixed block under all four op labels.
``pixel1-proxylessnas`` Google Pixel 1, ProxylessNAS (Cai et al. 2019, ``mobile_trim.yaml``): the same backbone's
                        layers x {k3, k5, k7} x {e3, e6}, an independent measurement on the same phone model.
``note10-ofa``          Samsung Note10, Once-for-All (Cai et al. 2020, ``{160..224}_lookup_table.yaml``): a
                        MobileNetV3-style space with SE and h-swish at five input resolutions.

:func:`evaluate_published` fits :class:`~mobilekit.latency.regression.LayerLatencyRegressor` on part of the
layers and predicts the rest, in these scenarios: grouped cross-validation (every operation of a layer shape on
the same side of the split), kernel 7 from kernels 3 and 5, one resolution from the other four (extrapolating
to 160 and 224, interpolating 192), SE layers from layers without SE, and the Single-Path NAS table predicting
the ProxylessNAS measurements of the same layers. Each row also gives a MACs-proportional baseline
(``latency = a x MACs + b``, fitted on the same training layers), and for the Pixel 1 cross-check how far the two
published tables disagree with each other on the layers they share.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mobilekit.errors import DataError
from mobilekit.latency.features import FEATURE_NAMES, LayerShape, feature_matrix
from mobilekit.latency.metrics import error_metrics, format_metrics_header, format_metrics_row
from mobilekit.latency.regression import LayerLatencyRegressor

SPNAS_CSV = "pixel1_spnas_layers.csv"
PROXYLESS_CSV = "proxylessnas_pixel1/mobile_trim_flat.csv"
OFA_CSV = "once_for_all_note10/note10_lookup_table_flat.csv"


@dataclass
class PublishedLayers:
    """Measured layers of one published table: ``shapes[i]`` took ``latency_ms[i]``; ``groups[i]`` names the
    layer (all its operations share it); ``attrs`` holds per-layer columns such as ``resolution``."""

    name: str
    device: str
    source: str
    shapes: list[LayerShape]
    latency_ms: np.ndarray
    groups: list[Any]
    attrs: dict[str, np.ndarray] = field(default_factory=dict)

    def subset(self, mask: np.ndarray) -> "PublishedLayers":
        index = np.nonzero(mask)[0]
        return PublishedLayers(self.name, self.device, self.source, [self.shapes[i] for i in index],
                               self.latency_ms[index], [self.groups[i] for i in index],
                               {k: v[index] for k, v in self.attrs.items()})


@dataclass
class PublishedResult:
    """One train/predict scenario: metrics of the regression and of the MACs baseline on the predicted part."""

    dataset: str
    scenario: str
    n_train: int
    n_test: int
    model: str
    metrics: dict[str, float]
    baseline: dict[str, float]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PublishedEvaluation:
    """All scenarios; :meth:`format` renders them as a text table."""

    root: str
    results: list[PublishedResult]
    reference: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "results": [r.to_dict() for r in self.results], "reference": self.reference}

    def format(self) -> str:
        rows = []
        for r in self.results:
            rows.append((f"{r.dataset}: {r.scenario}", r.metrics))
            rows.append((f"  {r.n_train} -> {r.n_test} layers, {r.model}; MACs baseline:", r.baseline))
        rows += [(label, metrics) for label, metrics in self.reference.items()]
        width = max(len(label) for label, _ in rows)
        lines = ["Layer regression on published phone tables (fit on part, predict the rest; TFLite, 1 thread)",
                 format_metrics_header("dataset: scenario", width)]
        lines += [format_metrics_row(label, metrics, width) for label, metrics in rows]
        return "\n".join(lines)


# ---- loading ----------------------------------------------------------------------------------------------
def _read_csv(root: Path, relative: str) -> list[dict[str, str]]:
    path = Path(root) / relative
    try:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        raise DataError(f"{path}: missing; pass the folder that holds the published tables "
                        "(the 'latency' folder of the shared reference data)") from None


def _row_shape(row: dict[str, str], where: str, **extra: Any) -> LayerShape:
    try:
        return LayerShape(in_hw=(int(row["in_h"]), int(row["in_w"])), in_channels=int(row["in_c"]),
                          out_channels=int(row["out_c"]), kernel=int(row["kernel"]),
                          expansion=float(row["expand_ratio"]), stride=int(row["stride"]),
                          mid_channels=int(row["mid_c"]), **extra)
    except (KeyError, ValueError) as exc:
        raise DataError(f"{where}: unreadable row ({exc})") from None


def load_spnas_pixel1(root: str | Path) -> PublishedLayers:
    """The 80 searchable entries of the Single-Path NAS Pixel 1 table."""
    shapes, latency = [], []
    for row in _read_csv(Path(root), SPNAS_CSV):
        if row.get("searchable") != "1":
            continue
        shapes.append(_row_shape(row, SPNAS_CSV))
        latency.append(float(row["runtime_ms"]))
    return PublishedLayers("pixel1-spnas", "Google Pixel 1", "Single-Path NAS pixel1_runtime_model.json", shapes,
                           np.array(latency), [s.key() for s in shapes],
                           {"kernel": np.array([s.kernel for s in shapes])})


def load_proxyless_pixel1(root: str | Path) -> PublishedLayers:
    """The MBConv entries of ProxylessNAS's Pixel 1 table (kernels 3/5/7, expansions 1/3/6)."""
    shapes, latency = [], []
    for row in _read_csv(Path(root), PROXYLESS_CSV):
        if row.get("layer_type") != "expanded_conv":
            continue
        shapes.append(_row_shape(row, PROXYLESS_CSV, residual=row.get("idskip") == "1"))
        latency.append(float(row["mean_ms"]))
    return PublishedLayers("pixel1-proxylessnas", "Google Pixel 1", "ProxylessNAS mobile_trim.yaml", shapes,
                           np.array(latency), [s.key() for s in shapes],
                           {"kernel": np.array([s.kernel for s in shapes])})


def ofa_se_channels(mid_channels: int) -> int:
    """Once-for-All's SE squeeze width: mid / 4 rounded to a multiple of 8 (``make_divisible``)."""
    return max(8, int(mid_channels / 4 + 4) // 8 * 8)


def load_ofa_note10(root: str | Path) -> PublishedLayers:
    """The MBConv entries of Once-for-All's Note10 tables at resolutions 160-224 (with SE and h-swish)."""
    shapes, latency, resolution = [], [], []
    for row in _read_csv(Path(root), OFA_CSV):
        if row.get("layer_type") != "expanded_conv":
            continue
        mid = int(row["mid_c"])
        shapes.append(_row_shape(row, OFA_CSV, residual=row["idskip"] == "1", hswish=row["hs"] == "1",
                                 se_channels=ofa_se_channels(mid) if row["se"] == "1" else 0))
        latency.append(float(row["mean_ms"]))
        resolution.append(int(row["resolution"]))
    return PublishedLayers("note10-ofa", "Samsung Note10", "Once-for-All {160..224}_lookup_table.yaml", shapes,
                           np.array(latency), [s.key() for s in shapes],
                           {"resolution": np.array(resolution), "se": np.array([s.se_channels > 0 for s in shapes]),
                            "kernel": np.array([s.kernel for s in shapes])})


# ---- evaluation -------------------------------------------------------------------------------------------
def macs_baseline(train: PublishedLayers, test: PublishedLayers) -> np.ndarray:
    """``latency = a x MACs + b`` fitted for relative error on ``train``, predicted on ``test`` (ms)."""
    macs_column = FEATURE_NAMES.index("macs")
    x_train = feature_matrix(train.shapes)[:, macs_column]
    design = np.stack([x_train, np.ones_like(x_train)], axis=1) / train.latency_ms[:, None]
    (a, b), *_ = np.linalg.lstsq(design, np.ones_like(x_train), rcond=None)
    return a * feature_matrix(test.shapes)[:, macs_column] + b


def _holdout(data: PublishedLayers, train_mask: np.ndarray, scenario: str, make: Callable[[], LayerLatencyRegressor],
             test: PublishedLayers | None = None, note: str = "") -> PublishedResult:
    train = data.subset(train_mask)
    test = test if test is not None else data.subset(~train_mask)
    model = make().fit(train.shapes, train.latency_ms, groups=train.groups)
    return PublishedResult(data.name, scenario, len(train.shapes), len(test.shapes), model.model_,
                           error_metrics(test.latency_ms, model.predict(test.shapes)),
                           error_metrics(test.latency_ms, macs_baseline(train, test)), note)


def _grouped_cv(data: PublishedLayers, make: Callable[[], LayerLatencyRegressor], folds: int) -> PublishedResult:
    from sklearn.model_selection import GroupKFold

    codes = {g: i for i, g in enumerate(dict.fromkeys(data.groups))}
    groups = np.array([codes[g] for g in data.groups])
    predicted = np.empty_like(data.latency_ms)
    baseline = np.empty_like(data.latency_ms)
    chosen = set()
    for train_idx, test_idx in GroupKFold(folds, shuffle=True, random_state=0).split(data.shapes, groups=groups):
        train_mask = np.zeros(len(groups), dtype=bool)
        train_mask[train_idx] = True
        train, test = data.subset(train_mask), data.subset(~train_mask)
        model = make().fit(train.shapes, train.latency_ms, groups=train.groups)
        chosen.add(model.model_)
        predicted[test_idx] = model.predict(test.shapes)
        baseline[test_idx] = macs_baseline(train, test)
    return PublishedResult(data.name, f"{folds}-fold CV by layer shape", len(groups) * (folds - 1) // folds,
                           len(groups) // folds, "/".join(sorted(chosen)),
                           error_metrics(data.latency_ms, predicted), error_metrics(data.latency_ms, baseline))


def table_disagreement(a: PublishedLayers, b: PublishedLayers) -> dict[str, float]:
    """Error of ``a``'s values as predictions of ``b``'s on the layers (shape, kernel, mid channels) both hold."""
    index = {(s.key(), s.kernel, s.mid): v for s, v in zip(b.shapes, b.latency_ms)}
    pairs = [(index[(s.key(), s.kernel, s.mid)], v) for s, v in zip(a.shapes, a.latency_ms)
             if (s.key(), s.kernel, s.mid) in index]
    if not pairs:
        return error_metrics([], [])
    measured, predicted = zip(*pairs)
    return error_metrics(measured, predicted)


def evaluate_published(root: str | Path, model: str = "auto", folds: int = 5, cv: int = 5,
                       random_state: int = 0) -> PublishedEvaluation:
    """Run every scenario (see the module docstring) on the tables under ``root`` (the ``latency`` folder).

    ``model``/``cv``/``random_state`` configure each fitted :class:`LayerLatencyRegressor` (``cv`` is its inner
    cross-validation that chooses the family under ``auto``); ``folds`` is the outer, reported split.

    Raises:
        DataError: a table file is missing or unreadable.
    """
    root = Path(root)

    def make() -> LayerLatencyRegressor:
        return LayerLatencyRegressor(model=model, cv=cv, random_state=random_state)

    spnas, proxyless, ofa = load_spnas_pixel1(root), load_proxyless_pixel1(root), load_ofa_note10(root)
    results = [_grouped_cv(spnas, make, folds), _grouped_cv(proxyless, make, folds),
               _holdout(proxyless, proxyless.attrs["kernel"] != 7, "kernel 7 from kernels 3, 5", make)]
    expansions = np.array([s.expansion in (3.0, 6.0) for s in proxyless.shapes])
    shared = np.isin(proxyless.attrs["kernel"], (3, 5)) & expansions
    results.append(_holdout(spnas, np.ones(len(spnas.shapes), dtype=bool), "SPNAS table -> ProxylessNAS k3/k5", make,
                            test=proxyless.subset(shared), note="same phone model, independent measurement"))
    results.append(_grouped_cv(ofa, make, folds))
    resolution = ofa.attrs["resolution"]
    for held, label in ((224, "resolution 224 from 160-208"), (160, "resolution 160 from 176-224"),
                        (192, "resolution 192 from the other four")):
        results.append(_holdout(ofa, resolution != held, label, make))
    results.append(_holdout(ofa, ~ofa.attrs["se"], "SE layers from layers without SE", make))
    reference = {"pixel1: SPNAS table vs ProxylessNAS table": table_disagreement(spnas, proxyless)}
    return PublishedEvaluation(str(root), results, reference)
