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
  Missing files are converted by a pool of worker processes (:mod:`mobilekit.profile.export_pool`, bar
  "export models") that runs ahead of the device: the first round measures each entry as soon as its file
  exists (bar "measure on ..."), so a phone never waits for conversions the pool can keep up with. On this
  computer's CPU, conversions would disturb the timing: there they overlap the measurements only when the
  device is pinned (``cpu_affinity``) and the workers get the other cores; otherwise every file is made first.
  :class:`ProfileReport` says where the time went (wall, device busy, waiting for files).
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
import os
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Sequence

from mobilekit import __version__, locks, safewrite
from mobilekit.errors import ConfigError, DeviceError, SpaceError, TableError
from mobilekit.profile.export_pool import ExportJob, ExportPool, default_workers
from mobilekit.profile.measurement import Measurement
from mobilekit.profile.protocol import ProtocolSession, ProtocolSettings
from mobilekit.profile.model_files import ModelFileCache, check_precision, default_work_dir
from mobilekit.profile.runners import DeviceRunner
from mobilekit.latency_table import LatencyTable, is_table_file
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
                   batch_size: int = 8, precision: str = "float32", export_workers: int | None = None,
                   pool: ExportPool | None = None, report: ProfileReport | None = None,
                   apply_protocol: bool = True, only: Collection[tuple[int, str]] | None = None) -> LatencyTable:
    """One writer per table: :func:`profile_table_locked` while holding ``.TABLE.lock`` beside ``out`` (a
    second ``profile`` of the same table is refused with one line, so two runs never measure at once; a dead
    holder's lock is taken over, see :mod:`mobilekit.locks`). An ``out`` that is a symlink, not a regular file,
    or a file neither listed in its folder's manifest nor a mobilekit table is refused first."""
    out = Path(out)
    safewrite.claim(out, recognise=is_table_file)
    with locks.exclusive(table_lock(out), f"latency table {out}"):
        return profile_table_locked(runner, space, out, runs, repeats, positions, resume, progress, work_dir,
                                    warmup=warmup, batch_size=batch_size, precision=precision,
                                    export_workers=export_workers, pool=pool, report=report,
                                    apply_protocol=apply_protocol, only=only)


def table_lock(out: str | Path) -> Path:
    """The lock file of the table ``out``: ``.NAME.lock`` in its folder."""
    out = Path(out)
    return out.with_name(f".{out.name}.lock")


def profile_table_locked(runner: DeviceRunner, space: SearchSpace, out: str | Path, runs: int = 50, repeats: int = 3,
                   positions: Sequence[int] | None = None, resume: bool = True, progress: bool = True,
                   work_dir: str | Path | None = None, *, warmup: int | None = None,
                   batch_size: int = 8, precision: str = "float32", export_workers: int | None = None,
                   pool: ExportPool | None = None, report: ProfileReport | None = None,
                   apply_protocol: bool = True, only: Collection[tuple[int, str]] | None = None) -> LatencyTable:
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
        export_workers: worker processes converting model files ahead of the device (default: one per core,
            minus the host device's pinned cores; 0: convert in this process, all before measuring).
        pool: an :class:`~mobilekit.profile.export_pool.ExportPool` shared with other devices (a farm); its
            cache must hold this runner's runtime and ``precision``. ``export_workers`` is then ignored.
        only: measure just these (position, type name) layer entries (and the stem and head); default all of
            ``positions``.
        apply_protocol: apply and record the measurement protocol (:mod:`mobilekit.profile.protocol`: big
            cores, governor, core state before/after, re-measuring rounds above the CV limit) in
            ``settings.protocol``.
        report: filled with where the time went (:class:`ProfileReport`: wall, device busy, waits).
        precision: ``"float32"`` or ``"int8"`` (full-integer quantized TFLite files, recorded in the table's
            ``settings.precision``; see :mod:`mobilekit.profile.model_files`).

    Returns:
        The table, also saved at ``out``.

    Raises:
        TableError: ``out`` is a table of another space, resolution, width, device or settings (and resume is on).
        DeviceError: the device disconnected or its runner failed; finished entries are saved.
        ExportError: a model could not be exported correctly.
    """
    started = time.perf_counter()
    out = Path(out)
    if runs < 1 or repeats < 1:
        raise ConfigError(f"runs and repeats must be at least 1, got runs={runs}, repeats={repeats}")
    check_precision(precision, runner.runtime)
    warmup = runner.descriptor.warmup if warmup is None else warmup
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0, got {warmup}")
    items = plan_items(space, positions)
    if only is not None:
        wanted = {(int(p), str(t)) for p, t in only}
        items = [item for item in items if item.spec is None or (item.position, item.type_name) in wanted]
    session = ProtocolSession.start(runner) if apply_protocol else None  # may pin a phone to its big cores
    limits = session.settings if session else ProtocolSettings()
    try:  # a failure before measuring still restores what the protocol changed on the device
        device = runner.info()
        table = _open_table(out, space, device, runner, runs, warmup, repeats, resume, precision)
        for index in sorted({item.position for item in items if item.spec is not None}):
            for op in space.positions[index].candidates:
                if op.is_skip and table.entry(index, op) is None:
                    table.set_entry(index, op, {"median_ms": 0.0, "std_ms": 0.0, "min_ms": 0.0, "max_ms": 0.0, "runs": 0,
                                                "measured": False, "wall_s": 0.0, "note": "identity"})
        if resume or not Path(out).exists():  # --no-resume keeps the old table until the first new entry replaces it
            table.save(out)

        if pool is not None and (pool.cache.runtime, pool.cache.precision) != (runner.runtime, precision):
            raise ConfigError(f"the shared export pool makes {pool.cache.runtime} {pool.cache.precision} files, device "
                              f"{runner.name!r} needs {runner.runtime} {precision}")
        cache = pool.cache if pool is not None else ModelFileCache(work_dir or default_work_dir(), runner.runtime, precision)
        done = {item: _rounds_done(_get_entry(table, item), repeats) for item in items}
        pending = [item for item in items if done[item] < repeats]
        jobs = {item: ExportJob(item.kind, space, item.spec) for item in pending}
        keys = {item: job.key for item, job in jobs.items()}
        paths = {item: cache.path_for(key) for item, key in keys.items()}
        missing = list(dict.fromkeys(key for key in keys.values() if not cache.has(key)))
        first_item = {}  # the export time of a file is counted once, on the first entry that needed it
        for item in pending:
            first_item.setdefault(keys[item], item)
        export_s: dict[ProfileItem, float] = {}
        ready = set(keys.values()) - set(missing)
        measuring = _measuring_cores(runner)
        own_pool = pool is None and bool(missing)
        if own_pool:
            workers = default_workers(len(missing), len(measuring)) if export_workers is None else export_workers
            spare = _spare_cores(measuring, getattr(runner, "_saved_affinity", None))
            pinned_apart = bool(measuring and spare)  # a host device measures while the pool converts on other cores
            pool = ExportPool(cache, min(workers, len(missing)), spare if pinned_apart else (), 5 if pinned_apart else 0)
        # measuring while the pool converts is fair when the device is not this computer, or when the workers are
        # pinned to other cores than the measuring ones; otherwise every file is made first
        overlap = pool is not None and (runner.descriptor.transport != "host" or bool(measuring and pool.cores))
        report = report if report is not None else ProfileReport()
        report.export_workers, report.overlapped, report.files_made = (pool.workers if pool else 0), overlap, len(missing)
        futures = {key: pool.submit(jobs[first_item[key]]) for key in missing} if pool else {}
        export_bar = _progress_bar(len(missing), "export models", "file", progress and bool(missing), position=1)
        total = sum(repeats - done[item] for item in items)
        bar = _progress_bar(total, f"measure on {runner.name}", "entry", progress, position=0)
        finished = 0

        def collect(block: bool) -> None:
            """Move finished conversions to ``ready`` (waiting for at least one with ``block``)."""
            if block and futures:
                wait_started = time.perf_counter()
                wait(list(futures.values()), return_when=FIRST_COMPLETED)
                report.device_wait_s += time.perf_counter() - wait_started
            for key, future in list(futures.items()):
                if future.done():
                    model = future.result()  # raises the worker's ExportError
                    del futures[key]
                    ready.add(key)
                    if not model.reused:
                        export_s[first_item[key]] = model.export_s
                    export_bar.update(1)

    except BaseException:
        if session is not None:
            session.finish()
        raise

    retries: dict[ProfileItem, int] = {}

    def measure_batch(batch: list[ProfileItem], replace: bool) -> None:
        """Measure ``batch`` once; ``replace``: a re-measurement that replaces the last round when calmer."""
        nonlocal finished

        def record(i: int, measurement: Measurement) -> None:
            nonlocal finished
            item = batch[i]
            if replace:
                _record(table, item, measurement, 0.0, repeats, replace_last=True)
            else:
                _record(table, item, measurement, export_s.pop(item, 0.0), repeats)  # export time counted once
                done[item] += 1
                finished += 1
                bar.update(1)
            table.save(out)

        busy_started = time.perf_counter()
        try:
            runner.measure([paths[item] for item in batch], runs=runs, warmup=warmup, on_result=record)
        finally:
            report.device_busy_s += time.perf_counter() - busy_started
            report.measurements = finished
            report.remeasured += len(batch) if replace else 0

    try:
        if not overlap:
            while futures:
                collect(True)
        for round_index in range(repeats):
            todo = [item for item in pending if done[item] <= round_index]
            bar.set_postfix_str(f"round {round_index + 1}/{repeats}", refresh=False)
            while todo:
                collect(False)
                batch = [item for item in todo if keys[item] in ready][:batch_size]
                if not batch:
                    if not futures:  # cannot happen unless a shared pool was closed under us
                        raise DeviceError(f"{runner.name}: model files of {len(todo)} entries were never made")
                    collect(True)
                    continue
                measured = set(batch)
                todo = [item for item in todo if item not in measured]
                measure_batch(batch, replace=False)
                noisy = [item for item in batch if _noisy(_get_entry(table, item), limits)]
                while noisy:  # the protocol: rounds above cv_max are measured again, the calmest one is kept
                    noisy = [item for item in noisy if retries.get(item, 0) < limits.remeasure]
                    for item in noisy:
                        retries[item] = retries.get(item, 0) + 1
                    if noisy:
                        measure_batch(noisy, replace=True)
                        noisy = [item for item in noisy if _noisy(_get_entry(table, item), limits)]
    except DeviceError as exc:
        kept = sum(1 for _, _, e in table.iter_entries() if e.get("measured")) + \
            sum(1 for e in table.fixed.values() if e.get("measured"))
        raise DeviceError(f"{exc}; stopped after {finished} of {total} measurements: {kept} measured entries are "
                          f"saved in {out}; re-run the same command to resume") from None
    finally:
        bar.close()
        export_bar.close()
        if own_pool:
            pool.close(wait=sys.exc_info()[0] is None or isinstance(sys.exc_info()[1], Exception))
        if session is not None:
            session.finish()
            noisy_labels = [item.label for item in items if _noisy(_get_entry(table, item), limits)]
            record = session.to_dict(noisy_labels)
            table.settings["protocol"] = [*table.settings.get("protocol", []), record]
            report.protocol = session.summary()
            if noisy_labels:
                report.protocol = report.protocol.replace("protocol held", "protocol NOT held:", 1) + \
                    f"; {len(noisy_labels)} entries above CV {limits.cv_max:g} after re-measuring"
            if resume or finished or not Path(out).exists():  # --no-resume: the old table stays until a new entry
                table.save(out)
        report.wall_s = time.perf_counter() - started
    return table


def _noisy(entry: dict[str, Any] | None, limits: ProtocolSettings) -> bool:
    """True when the entry's last round has a coefficient of variation (std / median) above ``cv_max`` (rounds of
    fewer than ``cv_min_runs`` runs are not judged)."""
    if not entry or not entry.get("repeats"):
        return False
    last = entry["repeats"][-1]
    return last.get("runs", 0) >= limits.cv_min_runs and _cv(last) > limits.cv_max


def _cv(one_round: dict[str, Any]) -> float:
    median = one_round.get("median_ms") or 0.0
    return one_round.get("std_ms", 0.0) / median if median > 0 else 0.0


@dataclass
class ProfileReport:
    """Where the time of one :func:`profile_device` call went (seconds).

    ``device_busy_s`` is the time inside the runner's ``measure`` calls (the device is occupied), ``device_wait_s``
    the time the device had nothing to measure because its next file was still being converted, ``wall_s`` the
    whole call. ``wall_s / device_busy_s`` (:attr:`ratio`) is 1 when the device never waited and nothing else
    cost time.
    """

    wall_s: float = 0.0
    device_busy_s: float = 0.0
    device_wait_s: float = 0.0
    files_made: int = 0
    export_workers: int = 0
    overlapped: bool = False
    measurements: int = 0
    remeasured: int = 0
    protocol: str = ""

    @property
    def ratio(self) -> float:
        return self.wall_s / self.device_busy_s if self.device_busy_s > 0 else math.inf

    def line(self) -> str:
        how = (f"{self.files_made} files converted by {self.export_workers} worker process(es)"
               + (" while the device measured" if self.overlapped else " before measuring")
               if self.files_made else "every model file was cached")
        return (f"wall {self.wall_s:.1f} s, device busy {self.device_busy_s:.1f} s, wall/device-busy "
                f"{self.ratio:.2f}; {self.measurements} measurements; device waited {self.device_wait_s:.1f} s for "
                f"files; {how}" + (f"; {self.remeasured} noisy rounds measured again" if self.remeasured else ""))


def _measuring_cores(runner: DeviceRunner) -> tuple[int, ...]:
    """The cores of this computer a host device measures on (empty: a remote device, or no pinning)."""
    if runner.descriptor.transport != "host":
        return ()
    return tuple(runner.descriptor.cpu_affinity)


def _spare_cores(measuring: tuple[int, ...], before_pinning: set[int] | None = None) -> tuple[int, ...]:
    """Cores this process may use that the host device does not measure on (``before_pinning``: the process's
    cores before the host runner pinned it)."""
    try:
        available = set(before_pinning or os.sched_getaffinity(0)) | set(measuring)
    except AttributeError:
        return ()
    return tuple(sorted(available - set(measuring)))


def _progress_bar(total: int, description: str, unit: str, enabled: bool, position: int = 0):
    """A tqdm bar on stderr, shown only when ``enabled`` and stderr is a terminal (no ``\r`` or cursor codes in
    redirected logs, e.g. ``make demo > demo.log``)."""
    from tqdm.auto import tqdm

    from mobilekit.progress import is_terminal

    return tqdm(total=total, desc=description, unit=unit, disable=not (enabled and is_terminal(sys.stderr)),
                file=sys.stderr,
                dynamic_ncols=True, smoothing=0.05, position=position, leave=position == 0)


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


def _record(table: LatencyTable, item: ProfileItem, m: Measurement, export_s: float, repeats: int,
            replace_last: bool = False) -> None:
    """Add a round to the item's entry (``replace_last``: a re-measurement of its last round, kept only when its
    coefficient of variation is lower) and recompute the entry's summary."""
    old = _get_entry(table, item) or {}
    rounds = list(old.get("repeats", [])) if old.get("measured") else []
    remeasured = int(old.get("remeasured", 0)) + (1 if replace_last else 0)
    one = {"median_ms": round(m.median_ms, _ROUND), "std_ms": round(m.std_ms, _ROUND),
           "min_ms": round(m.min_ms, _ROUND), "max_ms": round(m.max_ms, _ROUND), "runs": m.runs,
           "wall_s": round(m.wall_s, 4)}
    inference_s = getattr(m, "inference_s", 0.0) or m.runs * m.median_ms / 1e3
    one["inference_s"] = round(inference_s, 6)
    temperature = getattr(m, "temperature_c", None)
    if temperature is not None:
        one["temperature_c"] = round(temperature, 1)
    one["cv"] = round(_cv(one), 4)
    if replace_last and rounds:
        if one["cv"] >= _cv(rounds[-1]):
            one = rounds[-1]  # the earlier round was calmer: keep it
        rounds.pop()
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
        "cv": round(max(_cv(r) for r in rounds), 4),
        "remeasured": remeasured,
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
        if not is_table_file(out):
            raise TableError(f"{out}: exists and is not a mobilekit latency table; mobilekit never replaces such a "
                             "file: move it away or pass another --out")
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
