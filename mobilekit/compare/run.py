"""Run a comparison: every method at every seed under the same budget (:mod:`.budget`), every found architecture
retrained with the fixed recipe (:mod:`.retrain`), plus the random-search protocol; resumable cell by cell.

Layout of the output folder::

    compare.json            the settings (a rerun must match them, except methods / seeds / protocol / threads)
    runs/METHOD-sSEED/      each search's own run folder (``mobilekit search`` output; resumes mid-search)
    cells/METHOD-sSEED.json one finished cell (search summary + retraining), written atomically; skipped on rerun
    cells/METHOD-sSEED.lock the process id of the worker computing that cell (several workers may share a folder:
                            each skips cells another live worker holds; a dead worker's lock is taken over)
    cells/random-protocol-iI.json
    cells/depth-matched_METHOD-sSEED-iI.json   a random network with the skipped-layer count of METHOD-sSEED's
                                                (:mod:`.protocols`; made once that cell is finished)
    cells/REFERENCE-sSEED.json   the hand-designed reference (e.g. mnasnet-b1) trained with the recipe, seed SEED
    results.json / results.csv / results.md / accuracy_latency.png   (:mod:`.report`, rewritten after every cell)

A search is called through the public API only (:func:`mobilekit.search.make_config` with flat keys and
:func:`mobilekit.search.run_search`), so a searcher registered later is compared by naming it in ``methods``; a
variant (:mod:`.variants`) is its method with option overrides, named like a method in rows, cells and run folders.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable

import torch

from mobilekit import locks, safewrite
from mobilekit.compare.budget import forward_only_images, method_settings
from mobilekit.compare.report import write_report
from mobilekit.compare.retrain import Recipe, retrain
from mobilekit.compare.protocols import reference_network, sample_depth_matched, skipped_layers
from mobilekit.compare.settings import ADDED_DEFAULTS, DEPTH_MATCHED, PROTOCOL, RESUME_FREE, CompareSettings
from mobilekit.compare.variants import Variant
from mobilekit.errors import ConfigError
from mobilekit.jsonio import read_json, write_json_atomic
from mobilekit.validation.cell import validate_cell_data
from mobilekit.latency_table import LatencyTable
from mobilekit.space import Architecture, get_space

Log = Callable[[str], None]
PROTOCOL_WINDOW = (0.95, 1.0)    # Single-Path NAS's random-search protocol: predicted latency in [0.95 T, T]


def search_config(settings: CompareSettings, name: str, seed: int):
    """The :class:`~mobilekit.search.SearchConfig` of one cell (``name``: a method or a variant; seed) and its budget
    facts (the budget rule of the variant's method)."""
    from mobilekit.search.config import build_config

    method, overrides = settings.resolve(name)
    keys, facts = method_settings(method, settings.budget_epochs, settings.final_share,
                                  {**settings.search_keys, **overrides})
    flat = {"export": "none", **settings.search_keys, **overrides, **keys,
            "table": settings.table, "target_ms": settings.target_ms, "method": method, "data": settings.data,
            "train_subset": settings.train_subset, "seed": seed, "train_resolution": settings.train_resolution,
            "batch_size": settings.batch_size, "steps_per_epoch": settings.steps_per_epoch,
            "threads": settings.threads, "resume": True,
            "out": str(Path(settings.out) / "runs" / f"{name}-s{seed}")}
    names = {key: f"--variant {name}" for key in overrides}
    return build_config(None, flat, names), dict(facts, base_method=method)


def _prepare(settings: CompareSettings) -> None:
    out = Path(settings.out)
    stored_path = out / "compare.json"
    current = settings.to_dict()
    safewrite.check_target(stored_path)  # a planted symlink is refused before it is read, dangling or not
    if stored_path.exists():
        stored = {**ADDED_DEFAULTS, **read_json(stored_path, ConfigError, "missing")}
        changed = sorted(k for k in current if k not in RESUME_FREE | {"variants"} and stored.get(k) != current[k])
        if changed:
            detail = ", ".join(f"{k}: {stored.get(k)!r} -> {current[k]!r}" for k in changed)
            raise ConfigError(f"{out} holds a comparison with other settings ({detail}); rerun with the same "
                              "settings to resume it, or choose another --out")
        # variants may be added (and left out of a rerun), but a name keeps its definition: its cells belong to it
        stored_variants = dict(stored.get("variants") or {})
        for name, definition in current["variants"].items():
            if name in stored_variants and stored_variants[name] != definition:
                before = Variant.from_dict(name, stored_variants[name], str(stored_path)).describe()
                raise ConfigError(f"{out} holds variant {name!r} as {before}, not "
                                  f"{settings.variants[name].describe()}; give it its stored definition, or "
                                  "another name")
        current["variants"] = {**stored_variants, **current["variants"]}
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and holds no comparison; choose an empty or new --out")
    claim_outputs(settings)  # every name the comparison writes, before compare.json or anything else is written
    # the stored settings just matched this comparison's: that is the format check for a compare.json from
    # before run manifests (safewrite refuses any other file it did not list)
    write_json_atomic(stored_path, current, recognise=lambda path: stored_path.exists())


#: The report files :func:`~mobilekit.compare.report.write_report` rewrites at the top of the folder.
REPORT_NAMES = ("results.json", "results.csv", "results.md", "accuracy_latency.png")


def claim_outputs(settings: CompareSettings) -> None:
    """Refuse, in one line and before anything runs or is written, a comparison folder where a name the comparison
    writes is taken by something mobilekit did not make: ``compare.json`` and the report files (a symlink, a folder,
    a file not in the folder's manifest), ``cells/`` and ``runs/`` and each search's run folder (a symlink or a
    file), an unfinished cell's ``.json`` (a symlink or anything not mobilekit's) or ``.lock`` (anything that is not
    a lock), and the files each unfinished search writes in its run folder
    (:meth:`~mobilekit.search.runfolder.RunFolder.claim_outputs`). A finished cell is read and validated here too,
    so a damaged one stops the rerun before it computes anything; it is never rewritten.

    Raises:
        OutputError, LockedError, ConfigError: one line naming the path and the fix.
    """
    from mobilekit.search.runfolder import RunFolder

    out = Path(settings.out)
    cells, runs = out / "cells", out / "runs"
    for folder in (cells, runs):
        safewrite.check_folder(folder)
    for folder in (out, cells):
        safewrite.written_by_mobilekit(folder)  # a damaged or planted manifest: refused before the first write
    stored = out / "compare.json"
    # a compare.json whose settings matched (checked by the caller) is this comparison's, manifest or not
    safewrite.claim(stored, recognise=lambda path: True)
    for name in REPORT_NAMES:
        safewrite.claim(out / name)
    for method, index in comparison_plan(settings):
        name = cell_name(method, index)
        cell = safewrite.check_target(cells / f"{name}.json")
        if cell.exists():
            _read_cell(cell)  # finished: read back for the report, never rewritten
            continue
        locks.check_lock(cells / f"{name}.lock")
        if method == PROTOCOL or method == settings.reference or method.startswith(DEPTH_MATCHED + ":"):
            continue
        run = safewrite.check_folder(runs / name)
        RunFolder(run).claim_outputs()


def run_comparison(settings: CompareSettings, *, log: Log | None = None, progress: bool = False) -> dict[str, Any]:
    """Run (or resume) the comparison; returns the report (also written as results.json, see :mod:`.report`).

    Torch uses ``settings.threads`` CPU threads while it runs.

    Raises:
        ConfigError: an unknown method or bad setting (every cell's search config is built before anything
            runs), or an output folder holding another comparison.
        SearchError, TableError, DataError: from the searches (a target outside the table, bad data).
    """
    say = log or (lambda message: None)
    recipe = Recipe.named(settings.recipe, epochs=settings.retrain_epochs, batch_size=settings.batch_size,
                          steps_per_epoch=settings.steps_per_epoch)
    for method in settings.methods:                 # fail fast on an unknown method or setting
        search_config(settings, method, 0)
    table = LatencyTable.load(settings.table)
    from mobilekit.latency.differentiable import ExpectedLatency

    fastest, slowest = ExpectedLatency(table, include_se=settings.search_keys.get("include_se")).bounds_ms()
    if not fastest <= settings.target_ms <= slowest:
        raise ConfigError(f"--target-ms {settings.target_ms:g} is outside what {settings.table} allows: the fastest "
                          f"network takes {fastest:.1f} ms and the slowest {slowest:.1f} ms; pick a target in between")
    _prepare(settings)
    if search_config(settings, settings.methods[0], 0)[0].tensorboard:
        from mobilekit.search.board import logdir_line

        say(logdir_line(settings.out) + " (every searched cell's run folder under runs/)")
    cells = Path(settings.out) / "cells"
    plan = comparison_plan(settings)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan), desc="compare", disable=None)
    data_cache: dict[int, Any] = {}
    try:
        for method, index in plan:
            name = cell_name(method, index)
            path = cells / f"{name}.json"
            source = None
            if method.startswith(DEPTH_MATCHED + ":"):     # needs its found network's cell (rerun: made then)
                source_path = cells / f"{method.split(':', 1)[1]}-s{index // 1000}.json"
                source = _read_cell(source_path) if source_path.exists() else None
            ready = source is not None or not method.startswith(DEPTH_MATCHED + ":")
            if ready and not path.exists() and _claim(path.with_suffix(".lock")):
                try:
                    started = time.perf_counter()
                    seed = index // 1000 if source is not None else index
                    splits = _data(settings, seed, data_cache)
                    if method == PROTOCOL:
                        row = _protocol_cell(settings, table, splits, recipe, index)
                    elif source is not None:
                        row = _depth_matched_cell(settings, table, splits, recipe, method, source, index)
                    elif method == settings.reference:
                        row = _reference_cell(settings, table, splits, recipe, index)
                    else:
                        row = _search_cell(settings, splits, recipe, method, index, say)
                    row["cell_wall_s"] = round(time.perf_counter() - started, 2)
                    write_json_atomic(path, row)
                finally:
                    locks.release(path.with_suffix(".lock"))
                say(f"{name}: predicted {row['predicted_ms']:.2f} ms"
                    + (f", retrained test accuracy {row['retrain_test_accuracy']:.4f}"
                       if row.get("retrain_test_accuracy") is not None else "")
                    + (f", deliverable test accuracy {row['test_accuracy']:.4f}" if row.get("test_accuracy") is not None
                       else ""))
                write_report(settings, _rows(cells, plan))
            if bar is not None:
                bar.update(1)
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()
    return write_report(settings, _rows(cells, plan))


def comparison_plan(settings: CompareSettings) -> list[tuple[str, int]]:
    """Every cell (row name, index) of the comparison in the order they run: per seed the methods, then the
    reference, then the depth-matched networks of that seed's found networks (index ``1000 * seed + i``), with the
    random-search protocol's samples interleaved."""
    plan: list[tuple[str, int]] = []
    for index in range(max(settings.seeds, settings.protocol_samples)):
        if index < settings.seeds:
            plan += [(method, index) for method in settings.methods]
            plan += [(settings.reference, index)] if settings.reference else []
            plan += [(f"{DEPTH_MATCHED}:{method}", 1000 * index + i) for method in settings.methods
                     for i in range(settings.depth_matched)]
        plan += [(PROTOCOL, index)] if index < settings.protocol_samples else []
    return plan


def cell_name(method: str, index: int) -> str:
    """The file stem of a cell: ``METHOD-sSEED``, ``random-protocol-iI``, ``depth-matched_METHOD-sSEED-iI``."""
    if method == PROTOCOL:
        return f"{method}-i{index}"
    if method.startswith(DEPTH_MATCHED + ":"):
        return f"{method.replace(':', '_')}-s{index // 1000}-i{index % 1000}"
    return f"{method}-s{index}"


def _claim(lock: Path) -> bool:
    """Take the cell's lock for this process; False when another live process holds it (a dead worker's lock
    is taken over: :func:`mobilekit.locks.try_lock`)."""
    return locks.try_lock(lock)


def _rows(cells: Path, plan: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """The finished cells of this plan (a rerun with fewer --seeds reports only those seeds)."""
    if not cells.is_dir():
        return []
    wanted = {cell_name(method, index) for method, index in plan}
    return [_read_cell(p) for p in sorted(cells.glob("*.json")) if p.stem in wanted]


def _read_cell(path: Path) -> dict[str, Any]:
    """A finished cell, validated (:mod:`mobilekit.validation.cell`): a damaged one is one line naming it."""
    fix = "; the cell is damaged: move it out of cells/ and rerun 'mobilekit compare' to compute it again"
    data = read_json(path, ConfigError, "missing", fix)
    validate_cell_data(data, str(path))
    return data


def _data(settings: CompareSettings, seed: int, cache: dict[int, Any]):
    """The splits the searches of ``seed`` train on (one cached at a time: a test split is large)."""
    if seed not in cache:
        from mobilekit.data import load_dataset

        cache.clear()
        cache[seed] = load_dataset(settings.data, settings.train_resolution, seed=seed,
                                   train_subset=settings.train_subset)
    return cache[seed]


def _train_space(table: LatencyTable, settings: CompareSettings, num_classes: int):
    space = table.search_space()
    return get_space(space.name, width=space.width, resolution=settings.train_resolution, num_classes=num_classes)


def _search_cell(settings: CompareSettings, splits, recipe: Recipe, method: str, seed: int, say: Log) -> dict:
    from mobilekit.search import run_search

    config, facts = search_config(settings, method, seed)
    summary = run_search(config, log=lambda message: say(f"{method}-s{seed}: {message}"))
    result = {"test_accuracy": None, "val_accuracy": None, "train_s": None}
    if recipe.epochs > 0:
        table = LatencyTable.load(settings.table)
        arch = Architecture.from_string(_train_space(table, settings, splits.num_classes), summary["arch"])
        result = retrain(arch, splits.train, recipe, seed, {"val": splits.val, "test": splits.test})
    repairs = summary.get("repairs") or []
    search_s, final_s = float(summary["search_s"]), float(summary.get("final_train_s") or 0.0)
    forward = forward_only_images(config.method, config, summary, len(splits.train), len(splits.val), config.out)
    return {
        "kind": "search", "method": method, "seed": seed, "arch": summary["arch"],
        "predicted_ms": float(summary["predicted_ms"]), "derived_ms": summary.get("derived_ms"),
        "within_window": bool(summary["within_window"]), "repairs": len(repairs),
        "skipped_layers": skipped_layers(Architecture.from_string(
            _train_space(LatencyTable.load(settings.table), settings, splits.num_classes), summary["arch"])),
        "within_window_without_repair": bool(summary["within_window"]) and not repairs,
        "test_accuracy": float(summary["test_accuracy"]), "val_accuracy": float(summary["val_accuracy"]),
        "retrain_test_accuracy": result["test_accuracy"], "retrain_val_accuracy": result["val_accuracy"],
        "retrain_s": result["train_s"], "search_s": round(search_s, 2), "final_train_s": round(final_s, 2),
        "total_s": round(search_s + final_s, 2), **facts,
        "forward_only_images": forward,
        "forward_only_epochs": None if forward is None else round(forward / max(1, len(splits.train)), 3),
        **searched_hyperparameters(summary),
    }


def searched_hyperparameters(summary: dict) -> dict[str, float | None]:
    """``searched_lr`` and ``searched_weight_decay`` of a search that chose its final training's hyper-parameters
    (their ``source`` is not the settings: AutoHAS, random-has, tpe); both None otherwise. A searched per-stage
    learning rate counts as the mean of its stages (equal shares of the steps: the mean over the steps)."""
    hp = summary.get("final_hyperparameters") or summary.get("searched_hyperparameters") or {}
    if not hp or hp.get("source", "settings") == "settings":
        return {"searched_lr": None, "searched_weight_decay": None}
    stages = hp.get("lr_stages") or [hp["lr"]]
    return {"searched_lr": float(sum(stages) / len(stages)), "searched_weight_decay": float(hp["weight_decay"])}


def _protocol_cell(settings: CompareSettings, table: LatencyTable, splits, recipe: Recipe, index: int) -> dict:
    """One architecture of the random-search protocol: uniform per layer, moved into [0.95 T, T] by the random
    search's own window sampler, trained with the fixed recipe."""
    from mobilekit.latency.differentiable import ExpectedLatency
    from mobilekit.search.budget import sample_in_window

    space = _train_space(table, settings, splits.num_classes)
    include_se = settings.search_keys.get("include_se")
    runtime = ExpectedLatency(table, include_se=include_se)
    lo, hi = (w * settings.target_ms for w in PROTOCOL_WINDOW)
    arch = sample_in_window(runtime, space, lo, hi, random.Random(1_000_003 + index))
    result = retrain(arch, splits.train, recipe, index, {"val": splits.val, "test": splits.test})
    predicted = runtime.lookup_ms(arch)
    return {
        "kind": "protocol", "method": PROTOCOL, "seed": index, "arch": arch.to_string(), "predicted_ms": predicted,
        "derived_ms": predicted, "within_window": 0.9 * settings.target_ms <= predicted <= settings.target_ms,
        "repairs": 0, "within_window_without_repair": True, "test_accuracy": None, "val_accuracy": None,
        "retrain_test_accuracy": result["test_accuracy"], "retrain_val_accuracy": result["val_accuracy"],
        "retrain_s": result["train_s"], "search_s": 0.0, "final_train_s": 0.0, "total_s": result["train_s"],
        "search_epochs_nominal": 0.0, "final_epochs": settings.retrain_epochs,
        "images_epochs": float(settings.retrain_epochs), "rule": "fixed recipe only",
        "skipped_layers": skipped_layers(arch),
    }


def _retrain_row(kind: str, method: str, seed: int, arch: Architecture, predicted: float, target_ms: float,
                 result: dict, retrain_epochs: int, rule: str) -> dict:
    return {
        "kind": kind, "method": method, "seed": seed, "arch": arch.to_string(), "predicted_ms": predicted,
        "derived_ms": predicted, "within_window": 0.9 * target_ms <= predicted <= target_ms,
        "repairs": 0, "within_window_without_repair": True, "test_accuracy": None, "val_accuracy": None,
        "retrain_test_accuracy": result["test_accuracy"], "retrain_val_accuracy": result["val_accuracy"],
        "retrain_s": result["train_s"], "search_s": 0.0, "final_train_s": 0.0, "total_s": result["train_s"],
        "search_epochs_nominal": 0.0, "final_epochs": retrain_epochs, "images_epochs": float(retrain_epochs),
        "rule": rule, "skipped_layers": skipped_layers(arch),
    }


def _depth_matched_cell(settings: CompareSettings, table: LatencyTable, splits, recipe: Recipe, row_name: str,
                        source: dict, index: int) -> dict:
    """A random network with the skipped-layer count of the found network in ``source`` (a finished cell), in
    [0.95 T, T] (or [0.9 T, T] when none exists there), trained with the fixed recipe."""
    from mobilekit.errors import SearchError
    from mobilekit.latency.differentiable import ExpectedLatency

    space = _train_space(table, settings, splits.num_classes)
    runtime = ExpectedLatency(table, include_se=settings.search_keys.get("include_se"))
    skips = skipped_layers(Architecture.from_string(space, source["arch"]))
    rng = random.Random(2_000_003 * (index + 1) + sum(map(ord, row_name)))
    try:
        arch = sample_depth_matched(runtime, space, skips, *(w * settings.target_ms for w in PROTOCOL_WINDOW), rng)
    except SearchError:
        arch = sample_depth_matched(runtime, space, skips, 0.9 * settings.target_ms, settings.target_ms, rng)
    seed = index // 1000
    result = retrain(arch, splits.train, recipe, 10_000 + index, {"val": splits.val, "test": splits.test})
    row = _retrain_row("depth-matched", row_name, seed, arch, runtime.lookup_ms(arch), settings.target_ms, result,
                       settings.retrain_epochs, f"fixed recipe; {skips} skipped layers, as {source['method']}-s{seed}")
    return dict(row, sample=index % 1000, matched_arch=source["arch"])


def _reference_cell(settings: CompareSettings, table: LatencyTable, splits, recipe: Recipe, seed: int) -> dict:
    """The hand-designed reference network trained with the fixed recipe at ``seed``."""
    from mobilekit.latency.differentiable import ExpectedLatency

    space = _train_space(table, settings, splits.num_classes)
    arch = reference_network(settings.reference, space)
    runtime = ExpectedLatency(table, include_se=settings.search_keys.get("include_se"))
    result = retrain(arch, splits.train, recipe, seed, {"val": splits.val, "test": splits.test})
    return _retrain_row("reference", settings.reference, seed, arch, runtime.lookup_ms(arch), settings.target_ms,
                        result, settings.retrain_epochs, "hand-designed; fixed recipe only")
