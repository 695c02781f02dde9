"""A phone farm: several devices profiled at once, one thread per device, one table each, one shared pool of
model-file conversions (:class:`~mobilekit.profile.export_pool.ExportPool`) and one model-file cache, so a
file needed by every device is converted once and each device measures it as soon as it exists::

    results = profile_farm([load_device("a.toml"), load_device("b.toml")], space,
                           ["latency_tables/a.json", "latency_tables/b.json"], runs=50)
    for result in results:
        print(result.descriptor.name, result.error or result.report.line())

A device that fails (unreachable, disconnected mid-table) does not stop the others; its error is returned and
its finished entries stay in its table (which resumes like any other).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mobilekit.errors import ConfigError, MobilekitError
from mobilekit.latency_table import LatencyTable
from mobilekit.profile.devices import DeviceDescriptor
from mobilekit.profile.export_pool import ExportPool, default_workers
from mobilekit.profile.model_files import ModelFileCache, default_work_dir
from mobilekit.profile.profiler import ProfileReport, profile_device
from mobilekit.profile.runners import open_runner
from mobilekit.space import SearchSpace


@dataclass
class FarmResult:
    """One device's outcome: its table (None if it failed before measuring), report, and error message."""

    descriptor: DeviceDescriptor
    out: Path
    table: LatencyTable | None = None
    report: ProfileReport = field(default_factory=ProfileReport)
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def profile_farm(descriptors: Sequence[DeviceDescriptor], space: SearchSpace, outs: Sequence[str | Path], *,
                 work_dir: str | Path | None = None, export_workers: int | None = None, precision: str = "float32",
                 **profile_kwargs: Any) -> list[FarmResult]:
    """Profile every device of ``descriptors`` into its ``outs`` table at the same time (see the module
    docstring). ``profile_kwargs`` go to :func:`~mobilekit.profile.profiler.profile_device` (runs, repeats,
    positions, resume, warmup, batch_size; ``runs=None``: each device's own); progress bars are off (several devices would share one terminal).

    Raises:
        ConfigError: the device and table lists differ in length, two devices write one table, or more than
            one device is this computer (two host devices would time each other).
    """
    if len(descriptors) != len(outs):
        raise ConfigError(f"{len(descriptors)} devices but {len(outs)} tables: give one table per device")
    if len({Path(o).resolve() for o in outs}) != len(outs):
        raise ConfigError("two devices would write the same table; give each device its own --out")
    hosts = [d.name for d in descriptors if d.transport == "host"]
    if len(hosts) > 1:
        raise ConfigError(f"devices {', '.join(hosts)} are all this computer: profile them one after the other "
                          "(at once they would time each other)")
    folder = Path(work_dir) if work_dir else default_work_dir()
    pools: dict[str, ExportPool] = {}
    for runtime in dict.fromkeys(d.runtime for d in descriptors):
        workers = default_workers(10**6) if export_workers is None else export_workers
        pools[runtime] = ExportPool(ModelFileCache(folder, runtime, precision), workers)
    results = [FarmResult(d, Path(o)) for d, o in zip(descriptors, outs)]
    _prepare_adb_keys(descriptors)

    def run(result: FarmResult) -> None:
        kwargs = dict(profile_kwargs)
        if kwargs.get("runs") is None:  # each device's own default
            kwargs["runs"] = result.descriptor.runs
        try:
            with open_runner(result.descriptor) as runner:
                result.info = runner.info()
                result.table = profile_device(runner, space, result.out, progress=False, precision=precision,
                                              pool=pools[result.descriptor.runtime], report=result.report,
                                              **kwargs)
        except MobilekitError as exc:
            result.error = str(exc)
        except Exception as exc:  # one broken device must not take the farm down; say what happened
            result.error = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=run, args=(r,), name=f"profile-{r.descriptor.name}") for r in results]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for pool in pools.values():
            pool.close()
    return results


def _prepare_adb_keys(descriptors: Sequence[DeviceDescriptor]) -> None:
    """Create the adb keys the devices share before their threads start (two threads creating one key file at
    once would race)."""
    adb = [d for d in descriptors if d.transport == "adb" and d.use_server is not True]
    if not adb:
        return
    from mobilekit.profile.transports.adb import default_adb_key_path, ensure_adb_key

    for key_path in dict.fromkeys(d.key_path or default_adb_key_path() for d in adb):
        try:
            ensure_adb_key(Path(key_path))
        except MobilekitError:
            pass  # the device's own connection reports it, next to the device's name
