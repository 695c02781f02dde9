"""Profile a device: measure every layer position x candidate type of a search space (and the fixed stem and
head) and write the latency table (:mod:`mobilekit.latency_table`).

::

    from mobilekit.profile.devices import load_device
    from mobilekit.profile.profiler import profile_device, summarize_table
    from mobilekit.profile.runners import open_runner
    from mobilekit.space import get_space

    with open_runner(load_device("devices/host.toml")) as runner:
        table = profile_device(runner, get_space(resolution=224), "latency_tables/host.json")
    print(summarize_table(table).lines())

How entries are measured:

* Each entry is a model of that layer alone with the exact input shape its position sees (stem: the network
  input; head: the last position's output), random weights, exported for the runner's runtime and checked
  against PyTorch once (:mod:`mobilekit.profile.model_files`; positions with the same shapes share a file).
  All missing files are exported first (progress bar "export models"), then measured (bar "measure on ..."):
  conversions are slow and CPU-heavy, and are kept apart from the timing.
  ``skip`` is the identity: 0 ms, ``measured: false``, ``note: "identity"``.
* ``repeats`` rounds are interleaved: every entry once, then every entry again, and so on, so a slow drift of
  the device (heat, background load) spreads over all entries instead of biasing some. Each round measures
  ``warmup`` untimed and ``runs`` timed inferences of each model.
* An entry keeps its rounds in ``repeats`` (per round: ``median_ms``, ``std_ms``, ``min_ms``, ``max_ms``, ``runs``,
  ``wall_s``) and summarises them: ``median_ms`` is the median over rounds of each round's center, ``std_ms``
  the pooled spread sqrt(mean(std_r^2) + var(center_r)), ``min_ms``/``max_ms`` over all runs, ``runs`` the
  total. ``statistic`` says what a round's center is: the ``median`` of its runs, or the ``mean`` when the
  device's runner only reports an average (``benchmark_model`` before percentiles were printed).
  ``wall_s`` is all the time spent on the entry (export share + every round, transfers, cool-downs included);
  ``export_s`` the export part; ``inference_s`` the time inside timed inferences, so
  ``(wall_s - export_s) / inference_s`` is the measuring overhead.
* The table is saved atomically after every measured entry. With ``resume`` (the default), an existing table
  for the same space, width, resolution, device and runs is continued: only missing entries and missing
  rounds are measured. A device that disconnects, or a runner that fails mid-table, raises
  :class:`~mobilekit.errors.DeviceError` and every finished entry stays in the file.
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mobilekit import __version__
from mobilekit.errors import ConfigError, DeviceError, SpaceError, TableError
from mobilekit.profile.measurement import Measurement
from mobilekit.profile.model_files import (ModelFile, ModelFileCache, check_precision, default_work_dir, head_key,
                                          layer_key, stem_key)
from mobilekit.profile.runners import DeviceRunner
from mobilekit.latency_table import LatencyTable
from mobilekit.space import Architecture, LayerSpec, SearchSpace

FIXED_PARTS = ("stem", "head")
_FILE_PRECISION = {"float32": "float32",
                   "int8": "full-integer int8 (weights, activations, input and output; post-training quantization "
                           "calibrated on seeded normal samples)"}
_ROUND = 6  # ms values are rounded to the nanosecond: runners report microseconds at best


@dataclass(frozen=True)
class ProfileItem:
    """One thing to measure: a layer type at a position, or a fixed part (``kind`` ``"stem"``/``"head"``)."""

    kind: str
    spec: LayerSpec | None = None

    @property
    def position(self) -> int | None:
        return self.spec.index if self.spec is not None else None

    @property
    def type_name(self) -> str:
        return self.spec.op.name if self.spec is not None else self.kind

    @property
    def label(self) -> str:
        return f"layer {self.position} {self.type_name}" if self.spec is not None else self.kind


def parse_positions(text: str, space: SearchSpace) -> list[int]:
    """``"1,2,5-8"`` -> [1, 2, 5, 6, 7, 8], checked against the space's positions.

    Raises:
        SpaceError: not a list of indices and ranges, or an index the space does not have.
    """
    chosen: set[int] = set()
    last = len(space.positions) - 1
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, dash, high = part.partition("-")
        try:
            first, end = int(low), int(high) if dash else int(low)
        except ValueError:
            raise SpaceError(f"cannot read positions {text!r}: use indices and ranges like '1,2,5-8'") from None
        if first > end:
            raise SpaceError(f"position range {part!r} is empty: write it low-high, e.g. '5-8'")
        for index in range(first, end + 1):
            if not 0 <= index <= last:
                raise SpaceError(f"position {index} is out of range: space {space.name!r} has positions 0-{last}")
            chosen.add(index)
    if not chosen:
        raise SpaceError(f"no positions in {text!r}: use indices and ranges like '1,2,5-8'")
    return sorted(chosen)


def plan_items(space: SearchSpace, positions: Sequence[int] | None = None) -> list[ProfileItem]:
    """What a profile measures, in order: stem, every (position, non-skip type) of ``positions`` (default all),
    head."""
    if positions is None:
        selected = [p.index for p in space.positions]
    else:
        selected = sorted(set(positions))
        for index in selected:
            if not 0 <= index < len(space.positions):
                raise SpaceError(f"position {index} is out of range: space {space.name!r} has positions "
                                 f"0-{len(space.positions) - 1}")
    items = [ProfileItem("stem")]
    for index in selected:
        position = space.positions[index]
        items.extend(ProfileItem("layer", LayerSpec(position, op)) for op in position.candidates if not op.is_skip)
    items.append(ProfileItem("head"))
    return items


def profile_device(runner: DeviceRunner, space: SearchSpace, out: str | Path, runs: int = 50, repeats: int = 3,
                   positions: Sequence[int] | None = None, resume: bool = True, progress: bool = True,
                   work_dir: str | Path | None = None, *, warmup: int | None = None,
                   batch_size: int = 8, precision: str = "float32") -> LatencyTable:
    """Measure the latency table of ``space`` on ``runner``'s device and write it to ``out`` (see the module
    docstring for what is measured and how).

    Args:
        runs: timed inferences per entry and round; ``warmup``: untimed ones before (default: the device's).
        repeats: interleaved rounds; an entry's ``median_ms`` is the median over them.
        positions: layer positions to measure (default all); the stem and head are always included.
        resume: continue ``out`` if it exists (it must match space and device), else start over.
        progress: show a progress bar with ETA on stderr.
        work_dir: where model files are kept between runs (default :func:`default_work_dir`).
        batch_size: files sent to the device in one go.
        precision: ``"float32"`` or ``"int8"`` (full-integer quantized TFLite files, recorded in the table's
            ``settings.precision``; see :mod:`mobilekit.profile.model_files`).

    Returns:
        The table, also saved at ``out``.

    Raises:
        TableError: ``out`` is a table of another space, resolution, width, device or settings (and resume is on).
        DeviceError: the device disconnected or its runner failed; finished entries are saved.
        ExportError: a model could not be exported correctly.
    """
    out = Path(out)
    if runs < 1 or repeats < 1:
        raise ConfigError(f"runs and repeats must be at least 1, got runs={runs}, repeats={repeats}")
    check_precision(precision, runner.runtime)
    warmup = runner.descriptor.warmup if warmup is None else warmup
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0, got {warmup}")
    items = plan_items(space, positions)
    device = runner.info()
    table = _open_table(out, space, device, runner, runs, warmup, repeats, resume, precision)
    for index in sorted({item.position for item in items if item.spec is not None}):
        for op in space.positions[index].candidates:
            if op.is_skip and table.entry(index, op) is None:
                table.set_entry(index, op, {"median_ms": 0.0, "std_ms": 0.0, "min_ms": 0.0, "max_ms": 0.0, "runs": 0,
                                            "measured": False, "wall_s": 0.0, "note": "identity"})
    table.save(out)

    cache = ModelFileCache(work_dir or default_work_dir(), runner.runtime, precision)
    done = {item: _rounds_done(_get_entry(table, item), repeats) for item in items}
    pending = [item for item in items if done[item] < repeats]
    paths, export_s = _export_all(cache, space, pending, progress)
    total = sum(repeats - done[item] for item in items)
    bar = _progress_bar(total, f"measure on {runner.name}", "entry", progress)
    finished = 0
    try:
        for round_index in range(repeats):
            todo = [item for item in pending if done[item] <= round_index]
            bar.set_postfix_str(f"round {round_index + 1}/{repeats}", refresh=False)
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]

                def record(i: int, measurement: Measurement, batch=batch) -> None:
                    nonlocal finished
                    item = batch[i]
                    _record(table, item, measurement, export_s.pop(item, 0.0), repeats)  # export time counted once
                    done[item] += 1
                    table.save(out)
                    finished += 1
                    bar.update(1)

                runner.measure([paths[item] for item in batch], runs=runs, warmup=warmup, on_result=record)
    except DeviceError as exc:
        kept = sum(1 for _, _, e in table.iter_entries() if e.get("measured")) + \
            sum(1 for e in table.fixed.values() if e.get("measured"))
        raise DeviceError(f"{exc}; stopped after {finished} of {total} measurements: {kept} measured entries are "
                          f"saved in {out}; re-run the same command to resume") from None
    finally:
        bar.close()
    return table


def _export_all(cache: ModelFileCache, space: SearchSpace, items: list[ProfileItem],
                progress: bool) -> tuple[dict[ProfileItem, Path], dict[ProfileItem, float]]:
    """Make sure every item has its checked model file, before anything is measured: conversions are CPU-heavy
    (and slow: seconds each), measuring right after one would time a busy machine, and a bar over files alone
    gives an honest ETA. Returns each item's file and the export time of the items that caused one."""
    paths: dict[ProfileItem, Path] = {}
    export_s: dict[ProfileItem, float] = {}
    missing = {_item_key(space, item) for item in items if not cache.has(_item_key(space, item))}
    bar = _progress_bar(len(missing), "export models", "file", progress and bool(missing))
    try:
        for item in items:
            if _item_key(space, item) in missing:
                bar.set_postfix_str(item.label, refresh=False)
            model = _model_file(cache, space, item)
            paths[item] = model.path
            if not model.reused:
                export_s[item] = model.export_s
                bar.update(1)
    finally:
        bar.close()
    return paths, export_s


def _progress_bar(total: int, description: str, unit: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, smoothing=0.05)


def _model_file(cache: ModelFileCache, space: SearchSpace, item: ProfileItem) -> ModelFile:
    if item.kind == "stem":
        return cache.stem(space)
    if item.kind == "head":
        return cache.head(space)
    return cache.layer(item.spec)


def _item_key(space: SearchSpace, item: ProfileItem) -> str:
    if item.kind == "stem":
        return stem_key(space)
    if item.kind == "head":
        return head_key(space)
    return layer_key(item.spec)


def _get_entry(table: LatencyTable, item: ProfileItem) -> dict[str, Any] | None:
    if item.spec is None:
        return table.fixed.get(item.kind)
    return table.entry(item.position, item.type_name)


def _rounds_done(entry: dict[str, Any] | None, repeats: int) -> int:
    if not entry or not entry.get("measured") or entry.get("median_ms") is None:
        return 0
    if "repeats" not in entry:
        return repeats  # measured some other way: keep it
    return min(len(entry["repeats"]), repeats)


def _record(table: LatencyTable, item: ProfileItem, m: Measurement, export_s: float, repeats: int) -> None:
    old = _get_entry(table, item) or {}
    rounds = list(old.get("repeats", [])) if old.get("measured") else []
    one = {"median_ms": round(m.median_ms, _ROUND), "std_ms": round(m.std_ms, _ROUND),
           "min_ms": round(m.min_ms, _ROUND), "max_ms": round(m.max_ms, _ROUND), "runs": m.runs,
           "wall_s": round(m.wall_s, 4)}
    inference_s = getattr(m, "inference_s", 0.0) or m.runs * m.median_ms / 1e3
    one["inference_s"] = round(inference_s, 6)
    temperature = getattr(m, "temperature_c", None)
    if temperature is not None:
        one["temperature_c"] = round(temperature, 1)
    rounds.append(one)
    statistic = getattr(m, "statistic", "median")
    centers = [r["median_ms"] for r in rounds]
    spread = math.sqrt(statistics.fmean(r["std_ms"] ** 2 for r in rounds) + statistics.pvariance(centers)) \
        if len(rounds) > 1 else rounds[0]["std_ms"]
    export_total = round(old.get("export_s", 0.0) + export_s, 3)
    run_count = rounds[0]["runs"]
    what = "median" if statistic == "median" else "mean (the runner reports no median)"
    entry = {
        "median_ms": round(statistics.median(centers), _ROUND),
        "std_ms": round(spread, _ROUND),
        "min_ms": min(r["min_ms"] for r in rounds),
        "max_ms": max(r["max_ms"] for r in rounds),
        "runs": sum(r["runs"] for r in rounds),
        "measured": True,
        "wall_s": round(export_total + sum(r["wall_s"] for r in rounds), 4),
        "export_s": export_total,
        "inference_s": round(sum(r["inference_s"] for r in rounds), 6),
        "statistic": statistic,
        "note": f"median over {len(rounds)} of {repeats} rounds; each round the {what} of {run_count} timed runs",
        "repeats": rounds,
    }
    if item.spec is None:
        table.fixed[item.kind] = {**entry, "covers": [item.kind]}
    else:
        table.set_entry(item.position, item.type_name, entry)


def _open_table(out: Path, space: SearchSpace, device: dict[str, Any], runner: DeviceRunner, runs: int, warmup: int,
                repeats: int, resume: bool, precision: str = "float32") -> LatencyTable:
    descriptor = runner.descriptor
    settings = {
        "runs": runs, "warmup": warmup, "repeats": repeats, "rounds": "interleaved",
        "center": "median over rounds of each round's center (see 'statistic' of each entry)",
        "cooldown_s": descriptor.cooldown_s, "thermal_zone": descriptor.thermal_zone,
        "thermal_max_c": descriptor.thermal_max_c if descriptor.thermal_zone else None,
        "model_files": f"single layer at its position's input shape, random weights, {_FILE_PRECISION[precision]}",
        "precision": precision,
        "mobilekit": __version__,
    }
    if resume and out.exists():
        try:
            table = LatencyTable.load(out)
        except TableError as exc:
            raise TableError(f"{exc} (or pass --no-resume to measure it again from scratch)") from None
        _check_resumable(table, out, space, device, runs, warmup)
        if table.settings.get("precision", "float32") != precision:
            raise TableError(f"{out}: cannot resume: this table holds {table.settings.get('precision', 'float32')} "
                             f"latencies, this run asks for --precision {precision}; pass another --out for a new "
                             "table, or --no-resume to measure this one again from scratch")
        table.settings = {**table.settings, **settings, "repeats": max(repeats, int(table.settings.get("repeats", 0)))}
        table.device = device
        return table
    source = (f"mobilekit {__version__} profile on {device.get('name')} ({device.get('model')}, {device.get('os')}), "
              f"{device.get('runtime')} {device.get('runtime_version')}, {device.get('threads')} thread(s)")
    return LatencyTable(space=space.describe(), device=device, settings=settings, source=source, path=out)


def _check_resumable(table: LatencyTable, out: Path, space: SearchSpace, device: dict[str, Any], runs: int,
                     warmup: int) -> None:
    fix = "pass another --out for a new table, or --no-resume to measure this one again from scratch"
    wanted = space.describe()
    for key in ("name", "width", "resolution", "num_classes"):
        if table.space.get(key) != wanted[key]:
            label = "space" if key == "name" else key
            raise TableError(f"{out}: cannot resume: this table is for {label} {table.space.get(key)!r}, this run asks "
                             f"for {wanted[key]!r}; {fix}")
    for key in ("name", "model", "runtime", "threads"):
        if key in table.device and table.device.get(key) != device.get(key):
            raise TableError(f"{out}: cannot resume: this table was measured with device {key} "
                             f"{table.device.get(key)!r}, this run uses {device.get(key)!r}; {fix}")
    for key, value in (("runs", runs), ("warmup", warmup)):
        if key in table.settings and table.settings[key] != value:
            raise TableError(f"{out}: cannot resume: this table was measured with {key}={table.settings[key]}, this "
                             f"run asks for {key}={value}; pass --{key} {table.settings[key]} to resume, or {fix}")


# ---- summary --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableSummary:
    """What a table says at a glance: measured entries, skip entries (identity), entries without a latency
    (not profiled yet, or not measured), and ``elapsed_s``, the wall time its entries cost (exports included)."""

    entries: int
    skips: int
    missing: int
    elapsed_s: float
    fastest: Architecture | None
    fastest_ms: float | None
    slowest: Architecture | None
    slowest_ms: float | None

    def lines(self) -> list[str]:
        text = [f"{self.entries} measured entries, {self.skips} skip entries, {self.missing} without a latency; "
                f"{_duration(self.elapsed_s)} of export and device time"]
        if self.fastest is not None:
            text.append(f"fastest network the table implies: {self.fastest_ms:.2f} ms  {self.fastest.to_string()}")
            text.append(f"slowest network the table implies: {self.slowest_ms:.2f} ms  {self.slowest.to_string()}")
        else:
            text.append("fastest/slowest network: not every position has a measured entry yet")
        return text


def summarize_table(table: LatencyTable) -> TableSummary:
    """Count the entries and find the fastest and slowest network the table implies (per position the
    cheapest / most expensive type that has a latency; totals via :meth:`LatencyTable.lookup_ms`)."""
    measured = skips = 0
    elapsed = 0.0
    for name, entry in [(n, e) for _, n, e in table.iter_entries()] + list(table.fixed.items()):
        if entry.get("measured"):
            measured += 1
        elif name == "skip" and entry.get("median_ms") is not None:
            skips += 1
        elapsed += float(entry.get("wall_s") or 0.0)
    space = table.search_space()
    covered = table.fixed_positions()
    fast, slow = [], []
    for position in space.positions:
        options = [op for op in position.candidates if position.index in covered or table.has(position.index, op)]
        if not options:
            return TableSummary(measured, skips, _missing(table, space), elapsed, None, None, None, None)
        if position.index in covered:
            fast.append(options[0])
            slow.append(options[0])
            continue
        fast.append(min(options, key=lambda op: table.latency_ms(position.index, op)))
        slow.append(max(options, key=lambda op: table.latency_ms(position.index, op)))
    fastest, slowest = Architecture(space, tuple(fast)), Architecture(space, tuple(slow))
    return TableSummary(measured, skips, _missing(table, space), elapsed, fastest, table.lookup_ms(fastest),
                        slowest, table.lookup_ms(slowest))


def _missing(table: LatencyTable, space: SearchSpace) -> int:
    """Entries without a latency: position x type pairs never profiled (or not measured), and stem/head."""
    covered = table.fixed_positions()
    layers = sum(1 for p in space.positions if p.index not in covered for op in p.candidates
                 if not table.has(p.index, op))
    fixed_names = {c for e in table.fixed.values() if e.get("median_ms") is not None for c in e.get("covers", [])}
    return layers + sum(1 for part in FIXED_PARTS if part not in fixed_names)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min {secs:02d} s"
