"""Model files made ahead of the device in a pool of worker processes.

A latency table from scratch is dominated by conversions (seconds per TFLite file, ~120 files at 224 px),
while a device measures a file in well under a second. :class:`ExportPool` converts in ``workers`` spawned
processes (``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` start method: no forked TensorFlow or
PyTorch state), each with one PyTorch / TensorFlow / OpenMP thread, so the profiler can measure every file as
soon as it exists instead of waiting for the last one::

    pool = ExportPool(ModelFileCache(work_dir, "tflite"), workers=2)
    future = pool.submit(ExportJob("layer", space, spec))       # a concurrent.futures.Future of a ModelFile
    ...
    pool.close()

Jobs with the same content key share one future (positions with the same shapes share one file). Files are
written the way :class:`~mobilekit.profile.model_files.ModelFileCache` always writes them (temp file + rename,
check record last), so a worker killed mid-conversion leaves no file that looks finished.

``workers=0`` converts in this process at :meth:`ExportPool.submit` time (the serial way, kept for comparison
and for callers that patch the exporter in-process).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mobilekit.profile.model_files import ModelFile, ModelFileCache, head_key, layer_key, stem_key
from mobilekit.space import LayerSpec, SearchSpace

#: Environment of a worker: one thread for every math library it may load.
_ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                   "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


@dataclass(frozen=True)
class ExportJob:
    """One model file to make: ``kind`` ``"layer"`` (``spec``), ``"stem"`` or ``"head"`` of ``space``."""

    kind: str
    space: SearchSpace
    spec: LayerSpec | None = None

    @property
    def key(self) -> str:
        """The content key of the file (see :mod:`mobilekit.profile.model_files`)."""
        if self.kind == "stem":
            return stem_key(self.space)
        if self.kind == "head":
            return head_key(self.space)
        return layer_key(self.spec)


def make_file(cache: ModelFileCache, job: ExportJob) -> ModelFile:
    """The checked file of ``job`` in ``cache`` (made now if missing)."""
    if job.kind == "stem":
        return cache.stem(job.space)
    if job.kind == "head":
        return cache.head(job.space)
    return cache.layer(job.spec)


def _worker_init(cores: tuple[int, ...], niceness: int) -> None:
    os.environ.update(_ONE_THREAD_ENV)
    if cores:
        os.sched_setaffinity(0, cores)
    if niceness:
        try:
            os.nice(niceness)
        except OSError:
            pass


def _worker_make(work_dir: str, runtime: str, precision: str, job: ExportJob) -> ModelFile:
    return make_file(ModelFileCache(work_dir, runtime, precision), job)


class ExportPool:
    """Makes the model files of :class:`ExportJob` s in ``workers`` processes (see the module docstring).

    ``cores``: pin the workers to these CPU cores (e.g. the ones the host device does not measure on); empty:
    no pinning. ``niceness``: added to the workers' nice value, so conversions yield to a measurement on this
    computer (0: compete as equals, the right choice when nothing here is being timed).
    """

    def __init__(self, cache: ModelFileCache, workers: int, cores: tuple[int, ...] = (), niceness: int = 0) -> None:
        self.cache = cache
        self.workers = max(0, int(workers))
        self.cores = tuple(cores)
        self._futures: dict[str, Future] = {}
        self._lock = threading.Lock()  # several devices (threads of a farm) submit to one pool
        self._executor: ProcessPoolExecutor | None = None
        if self.workers > 0:
            self._executor = ProcessPoolExecutor(max_workers=self.workers,
                                                 mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_worker_init, initargs=(self.cores, niceness))

    def submit(self, job: ExportJob) -> Future:
        """A future of ``job``'s :class:`~mobilekit.profile.model_files.ModelFile` (shared by jobs of one key).
        Its ``result()`` raises :class:`~mobilekit.errors.ExportError` when the conversion or its check failed."""
        key = job.key
        with self._lock:
            return self._submit(key, job)

    def _submit(self, key: str, job: ExportJob) -> Future:
        if key in self._futures:
            return self._futures[key]
        if self._executor is None:
            future: Future = Future()
            try:
                future.set_result(make_file(self.cache, job))
            except Exception as exc:
                future.set_exception(exc)
        else:
            future = self._executor.submit(_worker_make, str(self.cache.work_dir), self.cache.runtime,
                                           self.cache.precision, job)
        self._futures[key] = future
        return future

    def close(self, wait: bool = True) -> None:
        """Cancel queued jobs; with ``wait``, let running conversions finish (their files stay in the cache),
        else stop the workers now (a killed conversion leaves no finished-looking file)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if not wait:
            for process in list(getattr(executor, "_processes", {}).values()):  # no public API to stop workers
                try:
                    process.terminate()
                except (OSError, AttributeError):
                    pass
        executor.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> "ExportPool":
        return self

    def __exit__(self, exc_type, *rest: object) -> None:
        self.close(wait=exc_type is None or issubclass(exc_type, Exception))


def default_workers(missing: int, measuring_cores: int = 0) -> int:
    """How many workers: one per core this computer lets us use, minus ``measuring_cores`` kept free for a
    host device, never more than the ``missing`` files."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(missing, max(1, cores - measuring_cores)))


def cache_path(cache: ModelFileCache, job: ExportJob) -> Path:
    """Where ``job``'s file is (or will be) in ``cache``."""
    return cache.path_for(job.key)
