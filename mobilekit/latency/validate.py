"""Validation against the device: predicted vs measured latency of whole random networks.

:func:`validate_predictor` samples architectures from a table's space spread over its whole latency range
(:func:`sample_spread`), exports each whole network for the device's runtime, measures every network
``repeats`` times (the repeats interleaved: all networks once in a shuffled order, then again in another
order, so slow drifts of a shared machine show up as repeat noise instead of as prediction error), and compares
with the table lookup and the layer regression, with and without a whole-network correction. The correction
(``measured ~ scale x layer sum + overhead``) is cross-fitted: each network is predicted by a correction fitted
on the other folds of networks, so no figure is in-sample.

Every error is relative to the mean of the repeats. The device's own repeat noise is the same metrics for repeat 2
against repeat 1: the floor any predictor is measured against.
"""

from __future__ import annotations

import copy
import csv
import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from mobilekit import safewrite
from mobilekit.errors import TableError
from mobilekit.export.torch_threads import one_torch_thread
from mobilekit.latency.lookup import LookupPredictor
from mobilekit.latency.metrics import error_metrics, format_metrics_header, format_metrics_row
from mobilekit.latency.regression import LayerLatencyRegressor, fit_network_correction
from mobilekit.latency_table import FILL_ROUTES, LatencyTable
from mobilekit.space import Architecture, LayerType, SearchSpace

PREDICTORS = ("lookup", "lookup + network correction", "regression", "regression + network correction")
NOISE = "repeat noise (repeat 2 vs 1)"
CORRECTION_FOLDS = 5


class Runner(Protocol):
    """What validation needs from a device runner (:func:`mobilekit.profile.runners.open_runner`)."""

    runtime: str

    def info(self) -> dict: ...

    def measure(self, model_paths: Sequence[Path], runs: int = 50, warmup: int = 5) -> list: ...


ExportFn = Callable[[Architecture, Path, str], Path]


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_predictor`.

    ``rows``: one dict per network (``architecture``, the predictions in ms, ``measured_ms`` = mean of the
    repeats, ``repeat_<k>_ms``); ``metrics``: label -> :func:`~mobilekit.latency.metrics.error_metrics` for each of
    :data:`PREDICTORS` and :data:`NOISE`; ``network_correction``: scale and overhead fitted on all networks (what
    the saved predictor carries).
    """

    device: dict[str, Any]
    table: str
    samples: int
    repeats: int
    runs: int
    rows: list[dict[str, Any]]
    metrics: dict[str, dict[str, float]]
    network_correction: dict[str, float]
    regression_model: str
    export_s: float
    measure_s: float
    files: dict[str, str] = field(default_factory=dict)

    @property
    def best_predictor(self) -> str:
        return min(PREDICTORS, key=lambda name: self.metrics[name]["mape_pct"])

    def noise_ratio(self, predictor: str | None = None) -> float:
        """Mean absolute % error of ``predictor`` (default: the best) divided by that of the repeat noise."""
        noise = self.metrics[NOISE]["mape_pct"]
        error = self.metrics[predictor or self.best_predictor]["mape_pct"]
        return error / noise if noise > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "best_predictor": self.best_predictor, "noise_ratio": self.noise_ratio()}

    def format(self) -> str:
        measured = [row["measured_ms"] for row in self.rows]
        info = self.device
        device = info.get("model") or info.get("name") or "device"
        runtime = " ".join(str(info[k]) for k in ("runtime", "runtime_version") if info.get(k))
        lines = [
            f"Validation on {device} ({runtime}, {info.get('threads', '?')} thread(s)): {len(self.rows)} networks "
            f"from {min(measured):.1f} to {max(measured):.1f} ms, {self.repeats} interleaved repeats x "
            f"{self.runs} runs (export {self.export_s:.0f} s, measurement {self.measure_s:.0f} s)",
            f"table: {self.table}; regression model: {self.regression_model}",
            format_metrics_header("vs mean of repeats", 34),
        ]
        for name in PREDICTORS + (NOISE,):
            lines.append(format_metrics_row(name + ("*" if "correction" in name else ""), self.metrics[name], 34))
        correction = self.network_correction
        lines += [
            f"* correction cross-fitted over {CORRECTION_FOLDS} folds of networks; fitted on all {len(self.rows)}: "
            f"measured = {correction['regression_scale']:.4f} x regression sum "
            f"{correction['regression_overhead_ms']:+.3f} ms = {correction['lookup_scale']:.4f} x lookup "
            f"{correction['lookup_overhead_ms']:+.3f} ms",
            f"best: {self.best_predictor}; its error / repeat noise (mean abs %): {self.noise_ratio():.2f}",
        ]
        lines += [f"wrote {path}" for path in self.files.values()]
        return "\n".join(lines)


def candidate_latencies(table: LatencyTable, space: SearchSpace) -> list[dict[LayerType, float]]:
    """Per position, the measured candidate types and their table latency (ms); skip without entry is 0 ms."""
    covered = table.fixed_positions()
    where = str(table.path) if table.path else "latency table"
    out = []
    for position in space.positions:
        if position.index in covered:
            out.append({position.candidates[0]: 0.0})
            continue
        options = {op: table.latency_ms(position.index, op) for op in position.candidates
                   if op.is_skip or table.has(position.index, op)}
        if not options:
            raise TableError(f"{where}: layer {position.index} has no measured type (a partial table); profile it "
                             f"first (mobilekit profile --positions {position.index}), or {FILL_ROUTES}")
        out.append(options)
    return out


def sample_spread(table: LatencyTable, samples: int, seed: int = 0, pool_factor: int = 30) -> list[Architecture]:
    """``samples`` distinct architectures of the table's space whose lookup latencies spread evenly over the
    range of the space (uniform sampling would bunch them around the mean).

    A pool of ``pool_factor x samples`` networks is drawn, each with its own tilt towards light or heavy types
    (weight of a type at a position: exp(tilt x standardised latency)); then for evenly spaced target latencies
    from the lightest to the heaviest pooled network the nearest unused one is taken. Only measured types are
    used (and skip).
    """
    if samples < 1:
        raise ValueError("samples must be at least 1")
    space = table.search_space()
    options = candidate_latencies(table, space)
    rng = random.Random(seed)
    weights_of = []
    for choices in options:
        values = np.array(list(choices.values()))
        spread = values.std()
        weights_of.append((values - values.mean()) / spread if spread > 0 else np.zeros_like(values))
    pool: dict[tuple[LayerType, ...], float] = {}
    for _ in range(max(pool_factor * samples, 200)):
        tilt = rng.uniform(-4.0, 4.0)
        picks = []
        for choices, z in zip(options, weights_of):
            weights = np.exp(tilt * z)
            picks.append(rng.choices(list(choices), weights=weights.tolist())[0])
        pool[tuple(picks)] = table.fixed_ms() + sum(c[p] for c, p in zip(options, picks))
    ordered = sorted(pool.items(), key=lambda item: item[1])
    latencies = np.array([ms for _, ms in ordered])
    chosen: list[int] = []
    used = np.zeros(len(ordered), dtype=bool)
    for target in np.linspace(latencies[0], latencies[-1], min(samples, len(ordered))):
        distance = np.where(used, np.inf, np.abs(latencies - target))
        index = int(np.argmin(distance))
        used[index] = True
        chosen.append(index)
    return [Architecture(space, ordered[i][0]) for i in sorted(chosen)]


def cross_fitted_correction(predicted_ms: np.ndarray, measured_ms: np.ndarray, folds: int = CORRECTION_FOLDS,
                            seed: int = 0) -> np.ndarray:
    """Corrected predictions (ms, shape (N,)), each from a network correction fitted on the other folds."""
    n = len(predicted_ms)
    if n < 2:
        return predicted_ms.copy()
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty(n)
    for fold in np.array_split(order, min(folds, n)):
        train = np.setdiff1d(order, fold)
        scale, overhead = fit_network_correction(predicted_ms[train], measured_ms[train])
        out[fold] = scale * predicted_ms[fold] + overhead
    return out


def _default_export() -> ExportFn:
    from mobilekit.profile.model_files import export_network_file

    return export_network_file


def validate_predictor(runner: Runner, table: LatencyTable, samples: int = 100, repeats: int = 2, seed: int = 0,
                       out_dir: str | Path | None = None, progress: bool = True,
                       predictor: LayerLatencyRegressor | None = None, runs: int = 30, warmup: int = 5,
                       batch: int = 10, export_fn: ExportFn | None = None) -> ValidationReport:
    """Measure ``samples`` whole networks on ``runner``'s device and compare them with the predictions.

    Args:
        runner: an open device runner (``runtime``, ``info()``, ``measure(paths, runs, warmup)``).
        table: the latency table of that device (lookup), also what the regression is fitted on unless
            ``predictor`` is given.
        repeats: measurements of each network (>= 2: the repeat noise needs two).
        out_dir: where the model files, ``validation.csv``, ``validation.png``, ``validation.json`` and
            ``predictor.json`` (the regression with the network correction fitted on every network) go;
            default a temporary folder, and only the model files are written.
        runs, warmup: timed and untimed inferences per measurement; ``batch``: files per ``measure`` call.
        export_fn: ``(arch, out_dir, runtime) -> path`` of the whole-network model file (default
            :func:`mobilekit.profile.model_files.export_network_file`).

    Raises:
        TableError: the table lacks entries the sampled networks need.
        ValueError: ``repeats`` < 2 or ``samples`` < 2.
    """
    if repeats < 2:
        raise ValueError("repeats must be at least 2: the repeat noise compares two measurements of each network")
    if samples < 2:
        raise ValueError("samples must be at least 2")
    from tqdm.auto import tqdm

    export = export_fn or _default_export()
    regressor = copy.deepcopy(predictor) if predictor is not None else LayerLatencyRegressor().fit_table(table)
    archs = sample_spread(table, samples, seed)
    lookup_ms = LookupPredictor().fit(table).predict(archs)
    regression_ms = regressor.predict_network(archs, corrected=False)

    base = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="mobilekit-validate-"))
    model_dir = base / "models"
    model_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with one_torch_thread():
        paths = [Path(export(arch, model_dir, runner.runtime))
                 for arch in tqdm(archs, desc="export", unit="net", disable=not progress)]
    export_s = time.perf_counter() - started

    started = time.perf_counter()
    rng = random.Random(seed + 1)
    measured = np.zeros((repeats, len(archs)))
    with tqdm(total=repeats * len(archs), desc="measure", unit="net", disable=not progress) as bar:
        for repeat in range(repeats):
            order = list(range(len(archs)))
            rng.shuffle(order)
            for start in range(0, len(order), batch):
                chunk = order[start:start + batch]
                results = runner.measure([paths[i] for i in chunk], runs=runs, warmup=warmup)
                for i, result in zip(chunk, results):
                    measured[repeat, i] = result.median_ms
                bar.update(len(chunk))
    measure_s = time.perf_counter() - started

    target = measured.mean(axis=0)
    predictions = {
        "lookup": lookup_ms,
        "lookup + network correction": cross_fitted_correction(lookup_ms, target, seed=seed),
        "regression": regression_ms,
        "regression + network correction": cross_fitted_correction(regression_ms, target, seed=seed),
    }
    metrics = {name: error_metrics(target, predictions[name]) for name in PREDICTORS}
    metrics[NOISE] = error_metrics(measured[0], measured[1])
    lookup_scale, lookup_overhead = fit_network_correction(lookup_ms, target)
    regressor.fit_network(archs, target)
    correction = {"regression_scale": regressor.network_scale_,
                  "regression_overhead_ms": regressor.network_overhead_ms_,
                  "lookup_scale": lookup_scale, "lookup_overhead_ms": lookup_overhead}

    rows = []
    for i, arch in enumerate(archs):
        row: dict[str, Any] = {"architecture": arch.to_string()}
        row.update({prediction_column(name): round(float(predictions[name][i]), 4) for name in PREDICTORS})
        row["measured_ms"] = round(float(target[i]), 4)
        row.update({f"repeat_{k + 1}_ms": round(float(measured[k, i]), 4) for k in range(repeats)})
        row["model_file"] = paths[i].name
        rows.append(row)
    report = ValidationReport(
        device=dict(runner.info()), table=str(table.path or table.source or "latency table"), samples=len(archs),
        repeats=repeats, runs=runs, rows=rows, metrics=metrics, network_correction=correction,
        regression_model=regressor.model_, export_s=export_s, measure_s=measure_s,
    )
    if out_dir is not None:
        report.files = write_report(report, base, regressor)
    return report


REPORT_FILES = ("validation.csv", "validation.png", "validation.json", "predictor.json")


def claim_report_files(out_dir: str | Path) -> None:
    """Refuse, before anything is measured, an ``out_dir`` where a report file (:data:`REPORT_FILES`) is a
    symlink, not a regular file, or a file mobilekit did not write (one line, :func:`mobilekit.safewrite.claim`)."""
    from mobilekit.jsonio import json_field_is
    from mobilekit.latency.regression import FORMAT

    for name in REPORT_FILES:
        recognise = (lambda p: json_field_is(p, "format", FORMAT)) if name == "predictor.json" else None
        safewrite.claim(Path(out_dir) / name, recognise=recognise)


def write_report(report: ValidationReport, out_dir: Path, regressor: LayerLatencyRegressor | None = None
                 ) -> dict[str, str]:
    """Write ``validation.csv`` (one row per network), ``validation.png`` (scatter), ``validation.json`` and,
    given the regressor, ``predictor.json``; returns label -> path."""
    import json

    from mobilekit.latency.plots import scatter_plot

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    csv_path = out_dir / "validation.csv"
    with safewrite.atomic_open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(report.rows[0]))
        writer.writeheader()
        writer.writerows(report.rows)
    files["csv"] = str(csv_path)
    measured = [row["measured_ms"] for row in report.rows]
    shown = ("lookup", "regression + network correction")
    png = scatter_plot(
        out_dir / "validation.png", measured,
        {f"{name} (mean abs {report.metrics[name]['mape_pct']:.1f} %)":
         [row[prediction_column(name)] for row in report.rows] for name in shown},
        title=f"{report.device.get('model') or report.device.get('name', 'device')}: {len(report.rows)} networks",
        repeats=([row["repeat_1_ms"] for row in report.rows], [row["repeat_2_ms"] for row in report.rows]),
        repeat_label=f"repeat 2 vs repeat 1 (noise, mean abs {report.metrics[NOISE]['mape_pct']:.1f} %)",
    )
    files["png"] = str(png)
    if regressor is not None:
        files["predictor"] = str(regressor.save(out_dir / "predictor.json"))
    summary = out_dir / "validation.json"
    files["json"] = str(summary)
    data = report.to_dict()
    data["files"] = files
    data.pop("rows")
    safewrite.write_text(summary, json.dumps(data, indent=1, default=str) + "\n")
    return files


def prediction_column(name: str) -> str:
    """CSV column of a predictor in :data:`PREDICTORS`: ``lookup_ms``, ``regression_corrected_ms``..."""
    return name.replace(" + network correction", "_corrected").replace(" ", "_") + "_ms"
