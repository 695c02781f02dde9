"""One search run, end to end: check the target against the table, run the registered searcher
(:mod:`.registry`), train its architecture with the hyper-parameters it hands over, save the run folder
(:mod:`.runfolder`), export the network and measure it on the table's device when that device is reachable.

:func:`run_search` is what ``mobilekit search`` calls; a notebook calls it the same way with a
:class:`~mobilekit.search.config.SearchConfig`. This module names no method: the method's module declares the
latency model it consumes and returns a :class:`~mobilekit.search.outcome.SearchOutcome`. Training happens at
``train_resolution`` on the data set; latency comes from the table, at the table's own (deployment)
resolution; the exported files take the deployment resolution. The summary states both.

Under ``torchrun`` every process runs this function; only rank 0 writes the run folder (see :mod:`.engine`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import torch

from mobilekit import locks, safewrite
from mobilekit.errors import ExportError, MobilekitError, SearchError
from mobilekit.interrupts import stop_at_safe_points
from mobilekit.latency.differentiable import TableLatency, build_latency_model
from mobilekit.latency_table import LatencyTable
from mobilekit.models.torch_builder import MobileNet
from mobilekit.search.budget import WINDOW, check_target
from mobilekit.search.config import RESUME_FREE, SearchConfig, common_fields
from mobilekit.search.engine import Engine
from mobilekit.search.options import options_dict
from mobilekit.search.outcome import SearchOutcome, TrainingHyperparameters
from mobilekit.search.registry import get_method
from mobilekit.search.runfolder import RunFolder, load_state, save_weights
from mobilekit.search.training import SearchContext, TrainPhase, evaluate, recalibrate_batchnorm, seed_everything
from mobilekit.space import Architecture, get_space
from mobilekit.validation.run_files import load_summary

Log = Callable[[str], None]


def build_latency_model_for(config: SearchConfig, table: LatencyTable | None = None) -> TableLatency:
    """The latency model ``config.method`` consumes (its module's ``LATENCY_MODEL``), built from the table (its
    unmeasured entries predicted by the regression ``config.predictor`` when given), with SE factors from
    ``config.se_factors``."""
    table = table or LatencyTable.load(config.table)
    if config.predictor:
        from mobilekit.latency.regression import LayerLatencyRegressor

        table = LayerLatencyRegressor.load(config.predictor).fill_table(table)
    se_table = LatencyTable.load(config.se_factors) if config.se_factors else None
    return build_latency_model(get_method(config.method).latency_model, table, config.include_se, se_table)




RUN_LOCK = ".mobilekit-run.lock"
LEGACY_TRAIN_RESOLUTION = 32    # px: what a run folder written before the table-resolution default trained at
FINETUNE_LR_FACTOR = 0.1        # fine-tuning at the deployed resolution runs at this share of the final lr


def resolve_train_resolution(config: SearchConfig, table_resolution: int, run: RunFolder) -> SearchConfig:
    """``config`` with ``train_resolution`` (pixels) filled in when it was left out: the stored run's own when
    resuming (``LEGACY_TRAIN_RESOLUTION`` = 32 for a folder whose config.json predates the field: what it was
    trained at), else ``table_resolution`` (the resolution the latency is predicted for and the files are
    exported at). A copy; ``config`` itself is left as it is. An explicit value is kept."""
    if config.train_resolution is not None:
        return config
    resolved = copy.copy(config)
    stored_path = run.path("config.json")
    if config.resume and stored_path.exists() and has_training_state(run):
        stored = run.read_json("config.json").get("train_resolution")
        resolved.train_resolution = int(stored) if stored is not None else LEGACY_TRAIN_RESOLUTION
    else:
        resolved.train_resolution = int(table_resolution)
    return resolved
TRAINING_STATE = ("checkpoint.npz", "weights.pt", "arch.json", "summary.json")


def has_training_state(run: RunFolder) -> bool:
    """Whether the folder holds anything a run trained: a checkpoint, weights, an architecture, a summary, or
    metrics records."""
    return any(run.path(name).exists() for name in TRAINING_STATE) or bool(run.records())


def prepare_run_folder(run: RunFolder, config: SearchConfig, write: bool = True) -> None:
    """Create the folder and write config.json (when ``write``); refuse to mix runs.

    A folder whose run stopped before it trained (only ``config.json``: a bad data path, a target outside the
    table) holds no training state and is reused with the new settings, with or without ``resume``.

    Raises:
        SearchError: the folder holds another run's training state and ``resume`` is off, or ``resume`` is on and the stored
            config differs in a field that changes the result.
    """
    stored_path = run.path("config.json")
    if write:
        run.claim_outputs()  # never replace a file mobilekit did not write: refused before anything runs
    if write and stored_path.exists() and has_training_state(run):
        if not config.resume:
            raise SearchError(f"{run.root} already holds a run; pass --resume to continue it or choose another --out")
        stored = run.read_json("config.json")
        current = config.to_dict()
        # a key an older run folder lacks counts as its default (settings added since)
        defaults = {**{f.name: f.default for f in common_fields()}, **options_dict(type(config.method_options)())}
        defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}
        defaults["train_resolution"] = LEGACY_TRAIN_RESOLUTION     # trained before the table-resolution default
        changed = sorted(k for k in current if k not in RESUME_FREE and stored.get(k, defaults.get(k)) != current[k])
        if changed:
            detail = ", ".join(f"{k}: {stored.get(k, defaults.get(k))!r} -> {current[k]!r}" for k in changed)
            raise SearchError(f"{run.root} was started with other settings ({detail}); resume with the same "
                              "settings or choose another --out")
        if run.checkpoint.exists() and not run.path("summary.json").exists():
            load_state(run.checkpoint)  # a damaged checkpoint is one line, before anything is written
        if run.path("summary.json").exists():
            load_summary(run.path("summary.json"))  # a finished run's summary is read back: checked before writing
        if all(k in stored for k in current):
            return  # resumed: config.json keeps the run's settings (only resume-free ones such as --threads differ)
        # an older folder lacking settings added since: recorded with the values it resumes with
    if write:
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
    # one process: a first Ctrl-C stops at the end of a training step (torchrun ranks would part ways there)
    single = int(os.environ.get("WORLD_SIZE", "1")) <= 1
    try:
        with stop_at_safe_points() if single else contextlib.nullcontext():
            return _run(config, progress, log or (lambda message: None), on_step)
    finally:
        torch.set_num_threads(threads)


def _run(config: SearchConfig, progress: bool, say: Log, on_step) -> dict[str, Any]:
    method = get_method(config.method)
    table = LatencyTable.load(config.table)
    latency_model = build_latency_model_for(config, table)
    bounds = check_target(latency_model, config.target_ms, where=str(config.table))
    engine = Engine.from_config(config)
    try:
        return _run_on(engine, config, method, table, latency_model, bounds, progress, say, on_step)
    finally:
        engine.close()


def _run_on(engine: Engine, config: SearchConfig, method, table: LatencyTable, latency_model: TableLatency,
            bounds: tuple[float, float], progress: bool, say: Log, on_step) -> dict[str, Any]:
    """One writer per run folder: the writing rank holds ``RUN/.mobilekit-run.lock`` for the whole run (a second
    ``search`` or ``search --resume`` on the same folder is refused with one line; a dead holder's lock is taken
    over, see :mod:`mobilekit.locks`)."""
    if not engine.is_writer:
        return _run_locked(engine, config, method, table, latency_model, bounds, progress, say, on_step)
    root = Path(config.out)
    RunFolder(root).claim_outputs()  # before the lock creates the folder: a user's file is refused first
    with locks.exclusive(root / RUN_LOCK, f"run folder {root}"):
        return _run_locked(engine, config, method, table, latency_model, bounds, progress, say, on_step)


def _run_locked(engine: Engine, config: SearchConfig, method, table: LatencyTable, latency_model: TableLatency,
                bounds: tuple[float, float], progress: bool, say: Log, on_step) -> dict[str, Any]:
    if not engine.is_writer:
        say = lambda message: None  # noqa: E731 - only rank 0 talks
    run = RunFolder(config.out)
    config = resolve_train_resolution(config, latency_model.space.resolution, run)
    if not (config.resume and run.path("summary.json").exists()):
        check_memory(config, latency_model.space, latency_model)  # before the run folder is written
    prepare_run_folder(run, config, write=engine.is_writer)
    engine.barrier()
    if config.resume and run.path("summary.json").exists():
        say(f"{run.root}: the run is complete; nothing to resume")
        return load_summary(run.path("summary.json"))

    from mobilekit.data import load_dataset

    splits = load_dataset(config.data, config.train_resolution, seed=config.seed, train_subset=config.train_subset)
    table_space = latency_model.space
    train_space = get_space(table_space.name, width=table_space.width, resolution=config.train_resolution,
                            num_classes=splits.num_classes)
    deploy_space = get_space(table_space.name, width=table_space.width, resolution=table_space.resolution,
                             num_classes=splits.num_classes)
    device_name = table.device.get("name", "?")
    head = apply_head_correction(latency_model, table, splits.num_classes)
    if head.delta_ms:
        bounds = check_target(latency_model, config.target_ms, where=str(config.table))
        say(f"the table's classifier was measured with {head.table_classes} classes, this network has "
            f"{head.num_classes}: predictions corrected by {head.delta_ms:+.3g} ms ({head.method})")
    say(f"{config.method} search on {splits.name} ({len(splits.train)} train / {len(splits.val)} val / "
        f"{len(splits.test)} test images): training resolution {config.train_resolution}x{config.train_resolution}; "
        f"latency from {config.table} (device {device_name}, deployment resolution "
        f"{table_space.resolution}x{table_space.resolution}); target {config.target_ms:g} ms, table range "
        f"{bounds[0]:.1f}-{bounds[1]:.1f} ms; SE types {'searched' if latency_model.include_se else 'not searched'}")
    say(f"training on {engine.describe()}" + "".join(f"; {note}" for note in engine.notes))

    board = None
    if config.tensorboard and engine.is_writer:
        from mobilekit.search.board import logdir_line, open_board

        board = open_board(run.root, True, train_space, latency_model)
        board.json_text("config", config.to_dict())
        say(logdir_line(run.root))
    try:
        seed_everything(config.seed)
        checkpoint = run.load_checkpoint()
        if checkpoint is None and run.metrics.exists() and engine.is_writer:
            run.truncate_metrics(0)
        bar = _progress_bar() if progress and engine.is_writer else None
        if bar is not None:
            plain = say

            def say(message: str) -> None:  # keep messages off the progress bar's line
                with bar.external_write_mode():
                    plain(message)
        finetune = finetune_plan(config, table_space.resolution)
        resumed_phase = checkpoint[1].get("phase") if checkpoint is not None else None
        try:
            ctx = SearchContext(config, latency_model, splits, train_space, run, checkpoint, bar, on_step, engine, board)
            if resumed_phase in ("final", "finetune"):
                search = checkpoint[1]["search"]
                hyperparameters = TrainingHyperparameters(**search["hyperparameters"])
                arch = Architecture.load(run.path("arch.json")).with_space(train_space)
                model = MobileNet(arch)
            else:
                outcome: SearchOutcome = method.searcher(ctx)
                arch, model, hyperparameters = outcome.arch, outcome.model, outcome.hyperparameters
                derived = outcome.derived_arch or arch
                search = {"search_s": outcome.search_s, "derived_arch": derived.to_string(),
                          "derived_ms": latency_model.lookup_ms(derived), "repairs": [r.to_dict() for r in outcome.repairs],
                          "hyperparameters": hyperparameters.to_dict(), **outcome.details}
                if engine.is_writer:
                    arch.with_space(deploy_space).save(run.path("arch.json"))
                if config.final_init == "scratch" and config.final_epochs_ > 0:
                    torch.manual_seed(config.seed + 1)
                    model = MobileNet(arch)
                elif outcome.recalibrate_bn:
                    recalibrate_batchnorm(engine.place(model), splits.train, config.batch_size, seed=config.seed,
                                          engine=engine, workers=config.workers)
                checkpoint = None
            say(f"architecture: {arch.to_string()}")
            say(f"predicted latency {latency_model.lookup_ms(arch):.2f} ms on {device_name} (target {config.target_ms:g} ms)"
                + (f"; the search derived {search['derived_ms']:.2f} ms and {len(search['repairs'])} layer change(s) "
                   "moved it into [0.9T, T]" if search.get("repairs") else ""))
            if board is not None:
                board.architecture("final/architecture", arch, 0)
                board.json_text("final/hyperparameters", search["hyperparameters"])
            if config.final_epochs_ > 0:
                say(f"final training, {config.final_epochs_} epochs: {TrainingHyperparameters(**search['hyperparameters']).describe()}")
            else:
                say("final epochs 0: the search's own network is the deliverable")
            final = TrainPhase(model=model, hyperparameters=hyperparameters,
                               **ctx.phase_kwargs("final", epochs=config.final_epochs_))
            if resumed_phase == "finetune":            # the final training finished before the checkpoint
                final_train_s = float(checkpoint[1].get("final_train_s", 0.0))
            else:
                start = final.restore(checkpoint)
                if checkpoint is None:
                    final.save(0, {"search": search})
                final.run_loop(start, {"search": search})
                final_train_s = final.elapsed_s
            finetune_s = 0.0
            if finetune:
                model, splits, finetune_s = _finetune(model, arch, deploy_space, hyperparameters, ctx, checkpoint,
                                                      search, final_train_s, say)
        finally:
            if bar is not None:
                bar.close()
        model.eval()
        val_accuracy = evaluate(model, splits.val, engine=engine, workers=config.workers)
        test_accuracy = evaluate(model, splits.test, engine=engine, workers=config.workers)
        model = model.cpu().to(memory_format=torch.contiguous_format)
        predicted = latency_model.lookup_ms(arch)
        summary: dict[str, Any] = {
            "method": config.method,
            "target_ms": config.target_ms,
            "predicted_ms": predicted,
            "predicted_ms_table": predicted - head.delta_ms,
            "head_correction": head.to_dict(),
            "measured_ms": None,
            "val_accuracy": val_accuracy,
            "test_accuracy": test_accuracy,
            "test_accuracy_of": (f"the PyTorch network at the {'deployed' if finetune else 'training'} resolution "
                                 f"{splits.resolution}x{splits.resolution}; `accuracy` is the exported file's own"),
            "search_s": round(float(search["search_s"]), 2),
            "final_train_s": round(final_train_s, 2),
            "finetune_epochs": config.finetune_epochs if finetune else 0,
            "finetune_s": round(finetune_s, 2),
            "deliverable_training": deliverable_training(config.train_resolution, table_space.resolution, finetune),
            "within_window": WINDOW[0] * config.target_ms <= predicted <= WINDOW[1] * config.target_ms,
            "arch": arch.to_string(),
            "derived_arch": search.get("derived_arch"),
            "derived_ms": search.get("derived_ms"),
            "repairs": search.get("repairs", []),
            "lambda_final": search.get("lambda_final"),
            "search_steps": search.get("search_steps"),
            "final_hyperparameters": search["hyperparameters"] if config.final_epochs_ > 0 else None,
            "table": str(config.table),
            "table_device": device_name,
            "table_range_ms": [round(bounds[0], 4), round(bounds[1], 4)],
            "include_se": latency_model.include_se,
            "data": splits.name,
            "train_resolution": config.train_resolution,
            "deploy_resolution": table_space.resolution,
            "resolution_note": (f"trained at {config.train_resolution}x{config.train_resolution}"
                                + (f", fine-tuned {config.finetune_epochs} epoch(s) at {table_space.resolution}x"
                                   f"{table_space.resolution}" if finetune else "")
                                + f"; latency predicted from the table at {table_space.resolution}x"
                                f"{table_space.resolution}; exported files take {table_space.resolution}x"
                                f"{table_space.resolution}"),
            "accuracy_is_proxy": splits.resolution != table_space.resolution,
            "accuracy_note": (None if splits.resolution == table_space.resolution else
                              f"proxy: val/test accuracy of the network at {config.train_resolution}x"
                              f"{config.train_resolution}, not of the exported {table_space.resolution}x"
                              f"{table_space.resolution} files"),
            "num_classes": splits.num_classes,
            "relax": getattr(config.method_options, "relax", None),
            "epochs": config.epochs,
            "final_epochs": config.final_epochs_,
            "final_init": config.final_init,
            "seed": config.seed,
            "accelerator": engine.describe(),
            "processes": engine.world_size,
            "rank": engine.rank,
            "engine_notes": list(engine.notes),
        }
        for key, value in search.items():
            if key not in summary and key not in ("search_s", "hyperparameters"):
                summary[key] = value
        if not engine.is_writer:
            return summary
        save_weights(model, run.path("weights.pt"))
        run.write_json("bundle.json", run_bundle(arch.with_space(deploy_space), config, splits, table_space.resolution,
                                                 device_name))
        _plots(run, arch, latency_model, config, summary)
        summary.update(export_and_measure(model, deploy_space, config, table, splits, run, say, predicted))
        summary["resolution_warning"] = resolution_warning(summary)
        if summary["resolution_warning"]:
            say(f"warning: {summary['resolution_warning']}")
        run.write_json("summary.json", summary)
        if board is not None:
            board.json_text("summary", summary)
        safewrite.remove(run.checkpoint)
        return summary
    finally:
        if board is not None:
            board.close()


def check_memory(config: SearchConfig, table_space, latency_model: TableLatency | None = None) -> None:
    """Refuse, in one line, a search whose data and training step (at the training resolution, or at the
    table's when it fine-tunes there; the method's own search network at the training resolution when it trains
    more than one path, e.g. multipath, given ``latency_model``) could not fit in the available memory (see
    :mod:`mobilekit.search.memory`)."""
    from mobilekit.data.datasets import split_sizes
    from mobilekit.search.memory import check_search_memory, gpu_free_memory

    resolution = max(config.train_resolution, table_space.resolution if finetune_plan(config, table_space.resolution)
                     else 0)
    space = get_space(table_space.name, width=table_space.width, resolution=resolution,
                      num_classes=table_space.num_classes)
    builder = get_method(config.method).search_network if latency_model is not None else None
    network = (lambda s: builder(s, latency_model)) if builder is not None else None
    train_space = get_space(table_space.name, width=table_space.width, resolution=config.train_resolution,
                            num_classes=table_space.num_classes)
    gpu_available = gpu_free_memory(config.accelerator)
    check_search_memory(space, config.batch_size, split_sizes(config.data, config.train_subset),
                        search_network=network, search_space=train_space, gpu_available=gpu_available,
                        mixed_precision=gpu_available is not None and config.mixed_precision != "off")


def finetune_plan(config: SearchConfig, deploy_resolution: int) -> bool:
    """Whether the run fine-tunes at ``deploy_resolution`` (pixels) after its final training: ``finetune_epochs``
    > 0 and the network trained at another resolution (at the deployed one there is nothing to fine-tune)."""
    return config.finetune_epochs > 0 and config.train_resolution != deploy_resolution


def deliverable_training(train_resolution: int, deploy_resolution: int, finetuned: bool) -> str:
    """How the exported network was trained, as ``summary.json`` says it: ``"deployed-resolution"`` (trained at
    the resolution it is exported at), ``"finetuned"`` (trained smaller, then fine-tuned at the deployed
    resolution) or ``"proxy"`` (trained smaller only: its PyTorch accuracy is a proxy for the files')."""
    if train_resolution == deploy_resolution:
        return "deployed-resolution"
    return "finetuned" if finetuned else "proxy"


def _finetune(model: MobileNet, arch: Architecture, deploy_space, hyperparameters: TrainingHyperparameters,
              ctx: SearchContext, checkpoint, search: dict[str, Any], final_train_s: float,
              say: Log) -> tuple[MobileNet, Any, float]:
    """Fine-tune the trained ``model`` ``config.finetune_epochs`` epochs at the deployed resolution (the same
    images, loaded at ``deploy_space.resolution`` with that resolution's normalisation; the final training's
    hyper-parameters at ``FINETUNE_LR_FACTOR`` times its learning rate), checkpointed as phase ``finetune``.
    Returns (the network at the deployed resolution, the data splits at that resolution, seconds spent)."""
    from mobilekit.data import load_dataset

    config = ctx.config
    size = deploy_space.resolution
    splits = load_dataset(config.data, size, seed=config.seed, train_subset=config.train_subset)
    deployed = MobileNet(arch.with_space(deploy_space))
    deployed.load_state_dict(model.cpu().to(memory_format=torch.contiguous_format).state_dict())
    hp = dataclasses.replace(hyperparameters, lr=hyperparameters.lr * FINETUNE_LR_FACTOR,
                             lr_stages=tuple(v * FINETUNE_LR_FACTOR for v in hyperparameters.lr_stages))
    say(f"fine-tuning {config.finetune_epochs} epoch(s) at the deployed resolution {size}x{size} "
        f"(trained at {config.train_resolution}x{config.train_resolution}): {hp.describe()}")
    kwargs = ctx.phase_kwargs("finetune", dataset=splits.train, epochs=config.finetune_epochs)
    kwargs["val_dataset"] = splits.val
    phase = TrainPhase(model=deployed, hyperparameters=hp, **kwargs)
    meta = {"search": search, "final_train_s": final_train_s}
    start = phase.restore(checkpoint)
    if start == 0:
        phase.save(0, meta)
    phase.run_loop(start, meta)
    return deployed, splits, phase.elapsed_s


def _progress_bar():
    from mobilekit.progress import progress_display

    return progress_display()


def _plots(run: RunFolder, arch: Architecture, latency_model, config: SearchConfig, summary: dict[str, Any]) -> None:
    from mobilekit.search.plots import plot_architecture, plot_search

    records = [r for r in run.records() if r.get("phase") == "search" or str(r.get("phase")).startswith("proxy-")]
    records = [dict(r, step=i) for i, r in enumerate(records)]
    plot_search(records, config.target_ms, run.path("search.png"),
                title=f"{config.method} search, target {config.target_ms:g} ms")
    layer_ms = [latency_model.type_ms(s.index, s.op) if s.position.searchable else None for s in arch.layers()]
    plot_architecture(arch, layer_ms, run.path("architecture.png"),
                      title=f"{arch.to_string()[:60]}...  predicted {summary['predicted_ms']:.1f} ms")


def apply_head_correction(latency_model: TableLatency, table: LatencyTable, num_classes: int):
    """Re-price the table's classifier for ``num_classes`` outputs (:mod:`mobilekit.latency.head`) in
    ``latency_model``'s fixed latency (ms), so the search, its target check and the summary use the network's
    own head; returns the :class:`~mobilekit.latency.head.HeadCorrection` (``delta_ms`` 0 when the table was
    measured with that class count)."""
    from mobilekit.latency.head import head_correction

    correction = head_correction(table, num_classes)
    latency_model.fixed_ms = float(latency_model.fixed_ms) + correction.delta_ms
    return correction


def run_bundle(deploy_arch: Architecture, config: SearchConfig, splits, deploy_resolution: int,
               device_name: str) -> dict[str, Any]:
    """What ``mobilekit export --run RUN_FOLDER`` needs besides ``arch.json`` and ``weights.pt``: the training
    normalisation (mean / std per RGB channel on the [0, 1] scale), class names in output-index order, the
    resolutions (pixels), the preprocessing recipe, the data set and seed (its test split scores the exported
    files), and the table / device the latency was predicted for."""
    from mobilekit.export.pipeline import PREPROCESSING

    return {"arch": "arch.json", "weights": "weights.pt", "architecture": deploy_arch.to_dict(),
            "train_resolution": config.train_resolution, "deploy_resolution": deploy_resolution,
            "mean": list(map(float, splits.mean)), "std": list(map(float, splits.std)),
            "class_names": list(splits.class_names), "num_classes": splits.num_classes, "data": splits.name,
            "seed": config.seed,
            "preprocessing": PREPROCESSING, "table": str(config.table), "table_device": device_name}


def export_and_measure(model: MobileNet, deploy_space, config: SearchConfig, table: LatencyTable, splits,
                       run: RunFolder, say: Log, predicted_ms: float) -> dict[str, Any]:
    """Export to ``config.export`` formats at the deployment resolution, then measure on the table's device
    when it is reachable (``config.device``, or the host when the table was measured on the host)."""
    out: dict[str, Any] = {"exported": {}, "export_checks": {}, "measured_on": None, "measure_note": None,
                           "accuracy": None, "accuracy_file": None, "accuracy_images": None, "exported_accuracy": {}}
    if not config.export:
        out["measure_note"] = "export disabled"
        return out
    from mobilekit.export import export_model

    precision = table_precision(table)
    formats = deliverable_formats(config.export, precision)

    deploy_model = MobileNet(model.arch.with_space(deploy_space))
    deploy_model.load_state_dict(model.state_dict())
    from mobilekit.export.scoring import stratified_subset

    scored = stratified_subset(splits.test_at(deploy_space.resolution), config.score_images, config.seed)
    try:
        report = export_model(deploy_model.eval(), run.path("exported"), formats=formats,
                              representative=splits.sample_images(32), deploy_resolution=deploy_space.resolution,
                              mean=splits.mean, std=splits.std, class_names=splits.class_names,
                              evaluation=scored, evaluation_name=f"{splits.name} test split (seed {config.seed}), "
                              f"{len(scored)} images at {deploy_space.resolution}x{deploy_space.resolution}")
    except ExportError as exc:
        out["export_error"] = str(exc)
        out["measure_note"] = "export failed"
        say(f"export failed: {exc}")
        return out
    out["exported"] = {fmt: str(path) for fmt, path in report.files.items()}
    out["export_checks"] = dict(report.checks)
    for fmt, check in report.checks.items():
        say(f"exported {report.files[fmt]}: {check}")
    out.update(deliverable_accuracy_fields(report.scores, precision))
    for score in report.scores.values():
        say(f"scored {score.line()}")
    device_arg = config.device or ("host" if table.device.get("name") == "host" else None)
    if device_arg is None:
        out["measure_note"] = (f"the table's device {table.device.get('name')!r} is not reachable from here; pass "
                               "--device DESCRIPTOR.toml to measure on it")
        return out
    measured, note, device_name = _measure(device_arg, report.files, config.measure_runs, precision)
    out.update(measured_ms=measured, measure_note=note, measured_on=device_name)
    if measured is not None:
        say(f"measured {measured:.2f} ms on {device_name} (predicted {predicted_ms:.2f} ms, target "
            f"{config.target_ms:g} ms)")
        out.update(latency_gap_check(predicted_ms, measured, int(table.space.get("num_classes", 1000)),
                                     deploy_space.num_classes, device_name, table.device.get("name", "?"),
                                     head_corrected=True))
        if out["latency_warning"]:
            say(f"warning: {out['latency_warning']}")
    elif note:
        say(f"not measured: {note}")
    return out


def deliverable_accuracy_fields(scores: dict, precision: str) -> dict[str, Any]:
    """The summary's accuracy of the deliverable: ``accuracy`` (test accuracy of the exported file the table's
    latency is for, at its exported resolution), ``accuracy_file`` (its format), ``exported_accuracy`` (every
    scored file, the PyTorch network at the deployed resolution under ``pytorch``)."""
    from mobilekit.export.scoring import deliverable_format

    files = {fmt: score for fmt, score in scores.items() if fmt != "pytorch"}
    chosen = deliverable_format(files, precision)
    return {"accuracy": files[chosen].accuracy if chosen else None, "accuracy_file": chosen,
            "accuracy_images": files[chosen].images if chosen else None,
            "exported_accuracy": {fmt: score.to_dict() for fmt, score in scores.items()}}


RESOLUTION_DROP_WARN = 0.05     # deliverable accuracy this far (absolute) below the proxy figure: warn


def resolution_warning(summary: dict[str, Any]) -> str | None:
    """One line when a run trained at another resolution exports files that score more than 5 points below the
    PyTorch figure at the training resolution (on Fashion-MNIST, trained at 32 and deployed at 224: 0.659 ->
    0.157, docs/export.md), naming the fix; None otherwise."""
    if not summary.get("accuracy_is_proxy") or summary.get("accuracy") is None:
        return None
    drop = summary["test_accuracy"] - summary["accuracy"]
    if drop <= RESOLUTION_DROP_WARN:
        return None
    size = summary["deploy_resolution"]
    return (f"the exported files score {summary['accuracy']:.3f} at {size}x{size}, {drop:.3f} below the "
            f"{summary['test_accuracy']:.3f} of the network at the training resolution {summary['train_resolution']}; "
            f"train at the deployed resolution (leave --train-resolution out, or --train-resolution {size}) or "
            "fine-tune there (--finetune-epochs N) for a deliverable")


LATENCY_GAP_WARN = 0.15     # relative |measured - predicted| / predicted above which the run warns


def latency_gap_check(predicted_ms: float, measured_ms: float, table_classes: int, network_classes: int,
                      measured_on: str, table_device: str, head_corrected: bool = False) -> dict[str, Any]:
    """``{"latency_gap": (measured - predicted) / predicted, "latency_warning": one line or None}``: a warning
    when the measured latency (ms) is more than 15 % off the table's prediction, naming the likely cause (the
    table's head measured for another class count, another device, or per-layer sums missing fused effects)."""
    gap = (measured_ms - predicted_ms) / predicted_ms if predicted_ms > 0 else float("inf")
    if abs(gap) <= LATENCY_GAP_WARN:
        return {"latency_gap": round(gap, 4), "latency_warning": None}
    causes = []
    if table_classes != network_classes:
        causes.append(f"the table's classifier was measured with {table_classes} classes and this network has "
                      f"{network_classes}" + (" (the prediction re-prices it with a cost model, which may be off)"
                                              if head_corrected else ""))
    if measured_on != table_device:
        causes.append(f"measured on {measured_on!r}, the table is for {table_device!r}")
    causes.append("a sum of per-layer latencies misses whole-network effects (fusion, caching, thread start-up)")
    return {"latency_gap": round(gap, 4),
            "latency_warning": f"measured {measured_ms:.3f} ms is {gap:+.0%} off the predicted {predicted_ms:.3f} ms; "
                               f"likely: {'; '.join(causes)}"}


def table_precision(table: LatencyTable) -> str:
    """``"int8"`` for a table of full-integer quantized layers (``mobilekit profile --precision int8``), else
    ``"float32"``."""
    return "int8" if table.settings.get("precision") == "int8" else "float32"


def deliverable_formats(export: tuple[str, ...], precision: str) -> tuple[str, ...]:
    """The formats to export: ``export``, plus the int8 TFLite file when the table's latencies are int8 (the
    file whose latency the table predicts) and TFLite is asked for."""
    formats = tuple(export)
    if precision == "int8" and "tflite" in formats and "tflite-int8" not in formats:
        formats += ("tflite-int8",)
    return formats


def measured_format(model_suffix: str, precision: str) -> str:
    """The exported format a device measures: ONNX on an onnxruntime device, else the TFLite file of the table's
    precision."""
    if model_suffix == ".onnx":
        return "onnx"
    return "tflite-int8" if precision == "int8" else "tflite"


def _measure(device_arg: str, files: dict[str, Path], runs: int,
             precision: str = "float32") -> tuple[float | None, str | None, str | None]:
    try:
        from mobilekit.profile.devices import load_device
        from mobilekit.profile.runners import open_runner
    except ImportError as exc:
        return None, f"no device runner in this installation ({exc})", None
    try:
        device = load_device(device_arg)
        wanted = measured_format(device.model_suffix, precision)
        if wanted == "onnx" and precision == "int8":
            return None, (f"device {device.name} runs ONNX files; the table is an int8 TFLite table: measure on a "
                          "TFLite device (--device)"), device.name
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
