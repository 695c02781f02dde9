"""One search run, end to end: check the target against the table, search (single-path, random or multipath),
derive the architecture, train it, save the run folder (:mod:`.runfolder`), export the network and measure it
on the table's device when that device is reachable.

:func:`run_search` is what ``mobilekit search`` calls; a notebook calls it the same way with a
:class:`~mobilekit.search.config.SearchConfig`. Training happens at ``train_resolution`` on the data set;
latency comes from the table, at the table's own (deployment) resolution; the exported files take the
deployment resolution. The summary states both.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Callable

import torch

from mobilekit.errors import ExportError, MobilekitError, SearchError
from mobilekit.latency.runtime_loss import ExpectedLatency, SuperkernelRuntime, se_scaling_factors
from mobilekit.models.torch_builder import MobileNet
from mobilekit.latency_table import LatencyTable
from mobilekit.search.budget import WINDOW, check_target
from mobilekit.search.config import RESUME_FREE, SearchConfig
from mobilekit.search.runfolder import RunFolder, save_weights
from mobilekit.search.training import SearchContext, TrainPhase, evaluate, recalibrate_batchnorm
from mobilekit.space import Architecture, get_space

Log = Callable[[str], None]


def build_runtime(config: SearchConfig, table: LatencyTable | None = None):
    """The runtime model a method optimises: :class:`SuperkernelRuntime` for single-path, otherwise
    :class:`ExpectedLatency` (both built from the table, with SE factors from ``config.se_factors``)."""
    table = table or LatencyTable.load(config.table)
    factors = se_scaling_factors(LatencyTable.load(config.se_factors)) if config.se_factors else None
    kind = SuperkernelRuntime if config.method == "single-path" else ExpectedLatency
    return kind(table, include_se=config.include_se, se_factors=factors)


def _searcher(method: str):
    if method == "single-path":
        from mobilekit.search.single_path import search
    elif method == "random":
        from mobilekit.search.random_search import search
    else:
        from mobilekit.search.multipath import search
    return search


def prepare_run_folder(run: RunFolder, config: SearchConfig) -> None:
    """Create the folder and write config.json; refuse to mix runs.

    Raises:
        SearchError: the folder holds another run and ``resume`` is off, or ``resume`` is on and the stored
            config differs in a field that changes the result.
    """
    stored_path = run.path("config.json")
    if stored_path.exists():
        if not config.resume:
            raise SearchError(f"{run.root} already holds a run; pass --resume to continue it or choose another --out")
        stored = run.read_json("config.json")
        current = config.to_dict()
        changed = sorted(k for k in current if k not in RESUME_FREE and stored.get(k) != current[k])
        if changed:
            detail = ", ".join(f"{k}: {stored.get(k)!r} -> {current[k]!r}" for k in changed)
            raise SearchError(f"{run.root} was started with other settings ({detail}); resume with the same "
                              "settings or choose another --out")
    run.root.mkdir(parents=True, exist_ok=True)
    run.write_json("config.json", config.to_dict())


def default_threads() -> int:
    """Half the cores, at least 1: on a small shared CPU, torch's default (all cores) spins against other work
    and was seen to run a step 30x slower than one thread."""
    return max(1, (os.cpu_count() or 2) // 2)


def run_search(config: SearchConfig, *, progress: bool = False, log: Log | None = None,
               on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Search, train, save, export and measure; returns the summary (also written to ``summary.json``).

    Sets torch's CPU thread count to ``config.threads`` (default :func:`default_threads`) while it runs.

    Raises:
        SearchError: the target lies outside the table's [fastest, slowest] (checked before anything else runs),
            or the run folder cannot be used (see :func:`prepare_run_folder`).
        TableError, DataError, ConfigError: a bad table, data set or setting.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or default_threads())
    try:
        return _run(config, progress, log or (lambda message: None), on_step)
    finally:
        torch.set_num_threads(threads)


def _run(config: SearchConfig, progress: bool, say: Log, on_step) -> dict[str, Any]:
    table = LatencyTable.load(config.table)
    runtime = build_runtime(config, table)
    bounds = check_target(runtime, config.target_ms, where=str(config.table))
    run = RunFolder(config.out)
    prepare_run_folder(run, config)
    if config.resume and run.path("summary.json").exists():
        say(f"{run.root}: the run is complete; nothing to resume")
        return run.read_json("summary.json")

    from mobilekit.data import load_dataset

    splits = load_dataset(config.data, config.train_resolution, seed=config.seed, train_subset=config.train_subset)
    table_space = runtime.space
    train_space = get_space(table_space.name, width=table_space.width, resolution=config.train_resolution,
                            num_classes=splits.num_classes)
    deploy_space = get_space(table_space.name, width=table_space.width, resolution=table_space.resolution,
                             num_classes=splits.num_classes)
    device_name = table.device.get("name", "?")
    say(f"{config.method} search on {splits.name} ({len(splits.train)} train / {len(splits.val)} val / "
        f"{len(splits.test)} test images): training resolution {config.train_resolution}x{config.train_resolution}; "
        f"latency from {config.table} (device {device_name}, deployment resolution "
        f"{table_space.resolution}x{table_space.resolution}); target {config.target_ms:g} ms, table range "
        f"{bounds[0]:.1f}-{bounds[1]:.1f} ms; SE types {'searched' if runtime.include_se else 'not searched'}")

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    checkpoint = run.load_checkpoint()
    if checkpoint is None and run.metrics.exists():
        run.truncate_metrics(0)
    bar = _progress_bar() if progress else None
    if bar is not None:
        plain = say

        def say(message: str) -> None:  # keep messages off the progress bar's line
            with bar.external_write_mode():
                plain(message)
    try:
        ctx = SearchContext(config, runtime, splits, train_space, run, checkpoint, bar, on_step)
        if checkpoint is not None and checkpoint[1].get("phase") == "final":
            search = checkpoint[1]["search"]
            arch = Architecture.load(run.path("arch.json")).with_space(train_space)
            model = MobileNet(arch)
        else:
            outcome = _searcher(config.method)(ctx)
            arch, model = outcome.arch, outcome.model
            search = dict(outcome.info, search_s=outcome.search_s)
            arch.with_space(deploy_space).save(run.path("arch.json"))
            if config.final_init == "scratch":
                torch.manual_seed(config.seed + 1)
                model = MobileNet(arch)
            elif outcome.recalibrate_bn:
                recalibrate_batchnorm(model, splits.train, config.batch_size, seed=config.seed)
            checkpoint = None
        say(f"architecture: {arch.to_string()}")
        say(f"predicted latency {runtime.lookup_ms(arch):.2f} ms on {device_name} (target {config.target_ms:g} ms)"
            + (f"; the search derived {search['derived_ms']:.2f} ms and {len(search['repairs'])} layer change(s) "
               "moved it into [0.9T, T]" if search.get("repairs") else ""))
        final = TrainPhase(model=model, lr=config.lr, **ctx.phase_kwargs("final", epochs=config.final_epochs_))
        start = final.restore(checkpoint)
        if checkpoint is None:
            final.save(0, {"search": search})
        final.run_loop(start, {"search": search})
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    val_accuracy, test_accuracy = evaluate(model, splits.val), evaluate(model, splits.test)
    save_weights(model, run.path("weights.pt"))
    predicted = runtime.lookup_ms(arch)
    summary: dict[str, Any] = {
        "method": config.method,
        "target_ms": config.target_ms,
        "predicted_ms": predicted,
        "measured_ms": None,
        "val_accuracy": val_accuracy,
        "test_accuracy": test_accuracy,
        "search_s": round(float(search["search_s"]), 2),
        "final_train_s": round(final.elapsed_s, 2),
        "within_window": WINDOW[0] * config.target_ms <= predicted <= WINDOW[1] * config.target_ms,
        "arch": arch.to_string(),
        "derived_arch": search.get("derived_arch"),
        "derived_ms": search.get("derived_ms"),
        "repairs": search.get("repairs", []),
        "lambda_final": search.get("lambda_final"),
        "search_steps": search.get("search_steps"),
        "table": str(config.table),
        "table_device": device_name,
        "table_range_ms": [round(bounds[0], 4), round(bounds[1], 4)],
        "include_se": runtime.include_se,
        "data": splits.name,
        "train_resolution": config.train_resolution,
        "deploy_resolution": table_space.resolution,
        "resolution_note": (f"trained at {config.train_resolution}x{config.train_resolution}; latency predicted "
                            f"from the table at {table_space.resolution}x{table_space.resolution}; exported files "
                            f"take {table_space.resolution}x{table_space.resolution}"),
        "num_classes": splits.num_classes,
        "relax": config.relax if config.method == "single-path" else None,
        "epochs": config.epochs,
        "final_epochs": config.final_epochs_,
        "final_init": config.final_init,
        "seed": config.seed,
    }
    if "candidates" in search:
        summary["candidates"] = search["candidates"]
    _plots(run, arch, runtime, config, summary)
    summary.update(export_and_measure(model, deploy_space, config, table, splits, run, say, predicted))
    run.write_json("summary.json", summary)
    run.checkpoint.unlink(missing_ok=True)
    return summary


def _progress_bar():
    from tqdm.auto import tqdm

    return tqdm(total=0, dynamic_ncols=True, leave=True)


def _plots(run: RunFolder, arch: Architecture, runtime, config: SearchConfig, summary: dict[str, Any]) -> None:
    from mobilekit.search.plots import plot_architecture, plot_search

    records = [r for r in run.records() if r.get("phase") == "search" or str(r.get("phase")).startswith("proxy-")]
    records = [dict(r, step=i) for i, r in enumerate(records)]
    plot_search(records, config.target_ms, run.path("search.png"),
                title=f"{config.method} search, target {config.target_ms:g} ms")
    layer_ms = [runtime.type_ms(s.index, s.op) if s.position.searchable else None for s in arch.layers()]
    plot_architecture(arch, layer_ms, run.path("architecture.png"),
                      title=f"{arch.to_string()[:60]}...  predicted {summary['predicted_ms']:.1f} ms")


def export_and_measure(model: MobileNet, deploy_space, config: SearchConfig, table: LatencyTable, splits,
                       run: RunFolder, say: Log, predicted_ms: float) -> dict[str, Any]:
    """Export to ``config.export`` formats at the deployment resolution, then measure on the table's device
    when it is reachable (``config.device``, or the host when the table was measured on the host)."""
    out: dict[str, Any] = {"exported": {}, "export_checks": {}, "measured_on": None, "measure_note": None}
    if not config.export:
        out["measure_note"] = "export disabled"
        return out
    from mobilekit.export import export_model

    deploy_model = MobileNet(model.arch.with_space(deploy_space))
    deploy_model.load_state_dict(model.state_dict())
    try:
        report = export_model(deploy_model.eval(), run.path("exported"), formats=config.export,
                              representative=splits.sample_images(32), deploy_resolution=deploy_space.resolution,
                              mean=splits.mean, std=splits.std)
    except ExportError as exc:
        out["export_error"] = str(exc)
        out["measure_note"] = "export failed"
        say(f"export failed: {exc}")
        return out
    out["exported"] = {fmt: str(path) for fmt, path in report.files.items()}
    out["export_checks"] = dict(report.checks)
    for fmt, check in report.checks.items():
        say(f"exported {report.files[fmt]}: {check}")
    device_arg = config.device or ("host" if table.device.get("name") == "host" else None)
    if device_arg is None:
        out["measure_note"] = (f"the table's device {table.device.get('name')!r} is not reachable from here; pass "
                               "--device DESCRIPTOR.toml to measure on it")
        return out
    measured, note, device_name = _measure(device_arg, report.files, config.measure_runs)
    out.update(measured_ms=measured, measure_note=note, measured_on=device_name)
    if measured is not None:
        say(f"measured {measured:.2f} ms on {device_name} (predicted {predicted_ms:.2f} ms, target "
            f"{config.target_ms:g} ms)")
    elif note:
        say(f"not measured: {note}")
    return out


def _measure(device_arg: str, files: dict[str, Path], runs: int) -> tuple[float | None, str | None, str | None]:
    try:
        from mobilekit.profile.devices import load_device
        from mobilekit.profile.runners import open_runner
    except ImportError as exc:
        return None, f"no device runner in this installation ({exc})", None
    try:
        device = load_device(device_arg)
        wanted = "onnx" if device.model_suffix == ".onnx" else "tflite"
        if wanted not in files:
            return None, f"device {device.name} runs {wanted} files, which were not exported", device.name
        runner = open_runner(device)
        if hasattr(runner, "__enter__"):
            with runner as active:
                result = active.measure([files[wanted]], runs=runs, warmup=5)[0]
        else:
            result = runner.measure([files[wanted]], runs=runs, warmup=5)[0]
        return float(result.median_ms), None, device.name
    except MobilekitError as exc:
        return None, str(exc), None
