"""Running model files on a device and timing them.

:func:`open_runner` turns a :class:`~mobilekit.profile.devices.DeviceDescriptor` into a :class:`DeviceRunner`
(a context manager)::

    with open_runner(load_device("devices/host.toml")) as runner:
        print(runner.info())                     # model, abi, runtime, runtime_version, threads, os
        timings = runner.measure([Path("a.tflite"), Path("b.tflite")], runs=50, warmup=5)

* :class:`HostRunner` runs the files in this process (LiteRT interpreter for ``.tflite``, onnxruntime for
  ``.onnx``) with :func:`~mobilekit.profile.host_timing.time_model`: median of the timed runs.
* :class:`AdbRunner` reaches a phone through :func:`~mobilekit.profile.transports.connect_adb`. It pushes the
  benchmark binary once and checks that it runs; each :meth:`~DeviceRunner.measure` call pushes its files in one
  sync session, runs ``benchmark_model --graph=... --num_threads=N --num_runs=R --warmup_runs=W`` (or
  ``onnxruntime_perf_test``) once per file through the shell and parses the tool's own output
  (:mod:`~mobilekit.profile.benchmark_output`). ``benchmark_model`` reports the mean ("avg") of its runs and,
  in newer versions, the median; the median is used when printed, and each measurement says which statistic it
  holds (:attr:`RunnerMeasurement.statistic`). Between two files it pauses ``cooldown_s`` and, when the
  descriptor names a thermal zone, waits while that zone is hotter than ``thermal_max_c``. It works only in
  its own folder ``<device_dir>/mobilekit-run`` (:mod:`~mobilekit.profile.device_folder`: a marker file, a
  manifest of what it pushed, ``device_dir`` restricted to ``/data/local/tmp``); its files are removed from the
  device after each batch, the binary when the runner closes, and it never deletes a file it did not push.

A device that disconnects, or a benchmark that crashes or prints something unexpected, raises
:class:`~mobilekit.errors.DeviceError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilekit.errors import ConfigError, DeviceError
from mobilekit.profile.device_folder import DeviceWorkFolder, check_device_dir
from mobilekit.profile.devices import DeviceDescriptor, load_device
from mobilekit.profile.measurement import Measurement

#: Called after each file of a batch with (index in the batch, its measurement).
ResultCallback = Callable[[int, Measurement], None]


@dataclass(frozen=True)
class RunnerMeasurement(Measurement):
    """A :class:`Measurement` plus how it was obtained.

    ``statistic`` is what ``median_ms`` holds: ``"median"`` of the timed runs, or ``"mean"`` when the runner only
    reports an average (``benchmark_model`` before it printed percentiles). ``inference_s`` is the time spent in
    the timed inferences themselves (runs x their mean), so ``wall_s / inference_s`` is the overhead.
    ``temperature_c`` is the thermal zone's reading just before the runs (None without a zone).
    """

    statistic: str = "median"
    inference_s: float = 0.0
    temperature_c: float | None = None

    def to_entry(self) -> dict:
        entry = super().to_entry()
        if entry.get("temperature_c") is None:
            entry.pop("temperature_c", None)
        return entry


class DeviceRunner(ABC):
    """Times model files on one device. Use as a context manager; :meth:`close` releases the device."""

    def __init__(self, descriptor: DeviceDescriptor) -> None:
        self.descriptor = descriptor

    @property
    def runtime(self) -> str:
        """``"tflite"`` or ``"onnx"``: the kind of file :meth:`measure` takes."""
        return self.descriptor.runtime

    @property
    def model_suffix(self) -> str:
        return self.descriptor.model_suffix

    @property
    def name(self) -> str:
        return self.descriptor.name

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """What the device reports about itself: ``model``, ``abi``, ``runtime``, ``runtime_version``,
        ``threads``, ``os`` (plus ``name`` and ``transport``)."""

    @abstractmethod
    def measure(self, model_paths: Sequence[Path], runs: int = 50, warmup: int = 5,
                on_result: ResultCallback | None = None) -> list[Measurement]:
        """Time each file: ``warmup`` untimed runs, then ``runs`` timed ones. Returns one measurement per file
        (latencies in ms), in order; ``on_result(i, measurement)`` is called as soon as file ``i`` is done.

        Raises:
            DeviceError: the device is gone, or its runner failed on a file.
        """

    def close(self) -> None:
        """Release the device (idempotent)."""

    def __enter__(self) -> "DeviceRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_paths(self, model_paths: Sequence[Path], runs: int, warmup: int) -> list[Path]:
        if runs < 1 or warmup < 0:
            raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
        paths = [Path(p) for p in model_paths]
        for path in paths:
            if path.suffix != self.model_suffix:
                raise ConfigError(f"{self.descriptor.source}: runtime {self.runtime!r} runs {self.model_suffix} files, "
                                  f"got {path.name}; export for this runtime or change 'runtime'")
            if not path.is_file():
                raise FileNotFoundError(f"no such model file: {path}")
        return paths

    def _cooldown(self, index: int) -> None:
        if index > 0 and self.descriptor.cooldown_s > 0:
            time.sleep(self.descriptor.cooldown_s)

    def _wait_until_cool(self) -> float | None:
        """Wait while the thermal zone is above ``thermal_max_c`` (at most ``thermal_timeout_s``); return the last
        reading (degrees C) or None without a zone."""
        if self.descriptor.thermal_zone is None:
            return None
        deadline = time.monotonic() + self.descriptor.thermal_timeout_s
        while True:
            temperature = self._read_temperature()
            if temperature <= self.descriptor.thermal_max_c or time.monotonic() >= deadline:
                return temperature
            time.sleep(self.descriptor.thermal_poll_s)

    def _read_temperature(self) -> float:
        raise NotImplementedError

    def _thermal_value(self, text: str) -> float:
        try:
            value = float(text.strip().split()[0])
        except (ValueError, IndexError):
            raise ConfigError(f"{self.descriptor.source}: thermal zone {self.descriptor.thermal_zone} reads "
                              f"{text.strip()[:60]!r}, not a temperature; fix 'thermal_zone'") from None
        return value / 1000.0 if abs(value) >= 1000 else value  # sysfs reports milli-degrees C


def open_runner(descriptor: DeviceDescriptor | str | Path) -> DeviceRunner:
    """Open the runner for ``descriptor`` (a :class:`DeviceDescriptor` or the path of its TOML file).

    Raises:
        ConfigError: the descriptor is wrong (missing benchmark binary, unreadable thermal zone...).
        DeviceError: the device cannot be reached or its benchmark binary does not run.
    """
    if not isinstance(descriptor, DeviceDescriptor):
        descriptor = load_device(descriptor)
    if descriptor.transport == "host":
        return HostRunner(descriptor)
    if descriptor.transport == "adb":
        return AdbRunner(descriptor)
    raise ConfigError(f"{descriptor.source}: unknown transport {descriptor.transport!r}; use 'host' or 'adb'")


# ---- this CPU -----------------------------------------------------------------------------------------------
class HostRunner(DeviceRunner):
    """Runs files in this process, ``threads`` threads, pinned to ``cpu_affinity`` while the runner is open."""

    def __init__(self, descriptor: DeviceDescriptor) -> None:
        super().__init__(descriptor)
        self._saved_affinity: set[int] | None = None
        if descriptor.cpu_affinity:
            available = os.sched_getaffinity(0)
            wanted = set(descriptor.cpu_affinity)
            if not wanted <= set(range(os.cpu_count() or 1)):
                raise ConfigError(f"{descriptor.source}: cpu_affinity {sorted(wanted)} names cores this computer does "
                                  f"not have (it has {os.cpu_count()}: 0-{(os.cpu_count() or 1) - 1})")
            self._saved_affinity = available
            os.sched_setaffinity(0, wanted)
        if descriptor.thermal_zone is not None:
            self._read_temperature()  # fail now, not in the middle of a table

    def info(self) -> dict[str, Any]:
        return {
            "name": self.descriptor.name,
            "transport": "host",
            "model": _host_cpu_model(),
            "abi": platform.machine(),
            "runtime": self.runtime,
            "runtime_version": _host_runtime_version(self.runtime),
            "threads": self.descriptor.threads,
            "cpu_affinity": list(self.descriptor.cpu_affinity),
            "os": platform.platform(),
        }

    def measure(self, model_paths: Sequence[Path], runs: int = 50, warmup: int = 5,
                on_result: ResultCallback | None = None) -> list[Measurement]:
        from mobilekit.export.runtimes import load_model_file
        from mobilekit.profile.host_timing import time_model

        paths = self._check_paths(model_paths, runs, warmup)
        results: list[Measurement] = []
        for index, path in enumerate(paths):
            self._cooldown(index)
            temperature = self._wait_until_cool()
            started = time.perf_counter()
            model = load_model_file(path, threads=self.descriptor.threads)
            timing = time_model(model, runs=runs, warmup=warmup)
            del model
            measurement = RunnerMeasurement(
                median_ms=timing.median_ms, std_ms=timing.std_ms, min_ms=timing.min_ms, max_ms=timing.max_ms,
                runs=timing.runs, wall_s=time.perf_counter() - started, statistic="median",
                inference_s=timing.runs * timing.median_ms / 1e3, temperature_c=temperature)
            results.append(measurement)
            if on_result is not None:
                on_result(index, measurement)
        return results

    def _read_temperature(self) -> float:
        zone = self.descriptor.thermal_zone
        try:
            return self._thermal_value(Path(zone).read_text())
        except OSError as exc:
            raise ConfigError(f"{self.descriptor.source}: cannot read thermal zone {zone} ({exc.strerror}); fix or "
                              "remove 'thermal_zone'") from None

    def close(self) -> None:
        if self._saved_affinity is not None:
            os.sched_setaffinity(0, self._saved_affinity)
            self._saved_affinity = None


def _host_cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _host_runtime_version(runtime: str) -> str:
    from importlib import metadata

    package = "onnxruntime" if runtime == "onnx" else "ai-edge-litert"
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return package


# ---- a phone over ADB ---------------------------------------------------------------------------------------
_TOOLS = {"tflite": "benchmark_model", "onnx": "onnxruntime_perf_test"}


class AdbRunner(DeviceRunner):
    """Runs files on an Android device with ``benchmark_model`` / ``onnxruntime_perf_test`` over ADB.

    ``transport`` is an open :class:`~mobilekit.profile.transports.DeviceTransport` (default: connect as the
    descriptor says). The runner owns it and closes it.
    """

    def __init__(self, descriptor: DeviceDescriptor, transport=None) -> None:
        super().__init__(descriptor)
        device_dir = check_device_dir(descriptor.device_dir, descriptor.source)  # before anything touches the device
        binary = descriptor.benchmark_binary
        tool = _TOOLS[descriptor.runtime]
        if binary is None or not binary.is_file():
            raise ConfigError(
                f"{descriptor.source}: benchmark_binary {str(binary) if binary else '(missing)'} is not a file; "
                f"download {tool} for the phone's ABI (devices/pixel1.toml says from where) and set its path")
        if transport is None:
            from mobilekit.profile.transports import connect_adb

            transport = connect_adb(address=descriptor.address, serial=descriptor.serial,
                                    key_path=descriptor.key_path, use_server=descriptor.use_server)
        self.transport = transport
        self.label = getattr(transport, "label", None) or descriptor.address or descriptor.serial or descriptor.name
        self._binary_digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:12]
        self._remote_binary: str | None = None
        self._closed = False
        self._folder = DeviceWorkFolder(transport, device_dir, self.label)
        try:
            self._properties = self._getprop()
            self._install_binary(binary, tool)
            if descriptor.thermal_zone is not None:
                self._read_temperature()
        except BaseException:
            self.close()
            raise

    # -- setup
    def _shell(self, argv: Sequence[str], timeout_s: float | None = None):
        return self.transport.shell(list(argv), timeout_s=timeout_s or self.descriptor.timeout_s)

    def _getprop(self) -> dict[str, str]:
        result = self._shell(["getprop"], timeout_s=60)
        properties = {}
        for line in result.output.splitlines():
            key, sep, value = line.strip().partition("]: [")
            if sep and key.startswith("[") and value.endswith("]"):
                properties[key[1:]] = value[:-1]
        return properties

    def _install_binary(self, binary: Path, tool: str) -> None:
        # mobilekit's own folder: a previous, interrupted run's files are deleted by its manifest, nothing else
        self._folder.open()
        (remote,) = self._folder.push([binary])
        self._remote_binary = remote
        self._shell(["chmod", "755", remote], timeout_s=60)
        probe = self._shell([remote, "--help"] if tool == "benchmark_model" else [remote, "-h"], timeout_s=120)
        text = probe.output.strip()
        last = text.splitlines()[-1] if text else "(no output)"
        if probe.exit_code in (126, 127) or "not found" in text.lower() and len(text) < 300 \
                or "exec format error" in text.lower() or "cannot execute" in text.lower():
            abi = self._properties.get("ro.product.cpu.abi", "unknown")
            raise DeviceError(f"{self.label}: {binary.name} does not run on the device (exit {probe.exit_code}: "
                              f"{last[:160]}); download {tool} built for its ABI ({abi}) and set benchmark_binary in "
                              f"{self.descriptor.source}")
        markers = ("STARTING!", "benchmark", "--graph") if tool == "benchmark_model" else ("perf_test", "-m ", "Usage")
        if not any(marker.lower() in text.lower() for marker in markers):
            raise DeviceError(f"{self.label}: {binary.name} ran but does not look like {tool} (it printed "
                              f"{last[:160]!r}); set benchmark_binary in {self.descriptor.source} to {tool}")

    # -- the DeviceRunner API
    def info(self) -> dict[str, Any]:
        props = self._properties
        release, sdk = props.get("ro.build.version.release"), props.get("ro.build.version.sdk")
        binary = self.descriptor.benchmark_binary
        return {
            "name": self.descriptor.name,
            "transport": "adb",
            "model": " ".join(filter(None, (props.get("ro.product.manufacturer"), props.get("ro.product.model"))))
                     or "unknown",
            "abi": props.get("ro.product.cpu.abi", "unknown"),
            "runtime": self.runtime,
            "runtime_version": f"{binary.name if binary else _TOOLS[self.runtime]} (sha256 {self._binary_digest})",
            "threads": self.descriptor.threads,
            "cpu_affinity": list(self.descriptor.cpu_affinity),
            "os": f"Android {release} (SDK {sdk})" if release else "unknown",
            "serial": props.get("ro.serialno", self.descriptor.serial or self.descriptor.address or ""),
        }

    def measure(self, model_paths: Sequence[Path], runs: int = 50, warmup: int = 5,
                on_result: ResultCallback | None = None) -> list[Measurement]:
        paths = self._check_paths(model_paths, runs, warmup)
        if not paths:
            return []
        unique = list(dict.fromkeys(paths))
        started = time.perf_counter()
        remotes = dict(zip(unique, self._folder.push(unique)))
        push_share_s = (time.perf_counter() - started) / len(paths)
        results: list[Measurement] = []
        try:
            for index, path in enumerate(paths):
                self._cooldown(index)
                temperature = self._wait_until_cool()
                begin = time.perf_counter()
                result = self._shell(self._command(remotes[path], runs, warmup))
                measurement = self._parse(path, result, runs, time.perf_counter() - begin + push_share_s, temperature)
                results.append(measurement)
                if on_result is not None:
                    on_result(index, measurement)
        except BaseException:
            try:
                self._folder.remove(list(remotes.values()))
            except Exception:  # the device is gone: the original error says so
                pass
            raise
        self._folder.remove(list(remotes.values()))
        return results

    def _command(self, remote_model: str, runs: int, warmup: int) -> list[str]:
        d = self.descriptor
        prefix = ["taskset", f"{d.affinity_mask:x}"] if d.cpu_affinity else []
        if self.runtime == "onnx":
            # -I: random inputs bound from the model's shapes; -s: print latency percentiles; -m times -r R: R runs.
            return [*prefix, self._remote_binary, "-e", "cpu", "-m", "times", "-r", str(runs), "-x", str(d.threads),
                    "-y", "1", "-I", "-s", *d.benchmark_args, remote_model]
        # --min_secs=0 / --warmup_min_secs=0: exactly `runs` and `warmup` runs (the defaults would add runs until
        # 1 s / 0.5 s have passed).
        return [*prefix, self._remote_binary, f"--graph={remote_model}", f"--num_threads={d.threads}",
                f"--num_runs={runs}", f"--warmup_runs={warmup}", "--min_secs=0", "--warmup_min_secs=0",
                *d.benchmark_args]

    def _parse(self, path: Path, result, runs: int, wall_s: float, temperature: float | None) -> RunnerMeasurement:
        from mobilekit.profile.benchmark_output import (BenchmarkOutputError, parse_benchmark_model,
                                                        parse_onnxruntime_perf_test)

        tool = _TOOLS[self.runtime]
        text = result.output
        if result.exit_code not in (0, None):
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            detail = next((ln for ln in lines if "error" in ln.lower() or "failed" in ln.lower()),
                          lines[-1] if lines else "no output")
            raise DeviceError(f"{self.label}: {tool} failed on {path.name} (exit {result.exit_code}): {detail[:200]}")
        try:
            parsed = parse_onnxruntime_perf_test(text) if self.runtime == "onnx" else parse_benchmark_model(text)
        except BenchmarkOutputError as exc:
            raise DeviceError(f"{self.label}: {tool} on {path.name}: {exc}") from None
        median_us = parsed.percentile_us(50.0)
        statistic = "median" if median_us is not None else "mean"
        center_us = median_us if median_us is not None else parsed.avg_us
        count = parsed.count or runs
        std_us = parsed.std_us if parsed.std_us is not None else 0.0
        min_us = parsed.min_us if parsed.min_us is not None else center_us
        max_us = parsed.max_us if parsed.max_us is not None else center_us
        if not all(math.isfinite(v) for v in (center_us, std_us, min_us, max_us)):
            raise DeviceError(f"{self.label}: {tool} on {path.name} reported a non-finite time ({center_us} us)")
        return RunnerMeasurement(
            median_ms=center_us / 1e3, std_ms=std_us / 1e3, min_ms=min_us / 1e3, max_ms=max_us / 1e3, runs=count,
            wall_s=wall_s, statistic=statistic, inference_s=count * parsed.avg_us / 1e6, temperature_c=temperature)

    def _read_temperature(self) -> float:
        zone = self.descriptor.thermal_zone
        result = self._shell(["cat", zone], timeout_s=60)
        if result.exit_code not in (0, None):
            raise ConfigError(f"{self.descriptor.source}: cannot read thermal zone {zone} on {self.label} "
                              f"({result.output.strip()[:100]}); fix or remove 'thermal_zone'")
        return self._thermal_value(result.output)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._folder.close()  # what this run pushed, then its marker, manifest and folder
        except DeviceError:
            pass
        finally:
            self.transport.close()
