"""Device descriptors: a small TOML file per device (``devices/*.toml``) saying how to reach it and how to run
models there.

Example (``devices/pixel1.toml``)::

    name = "pixel1"
    transport = "adb"                       # "host" (this CPU) or "adb" (a phone)
    address = "192.168.1.20:5555"           # or serial = "FA6AB0301234"; neither: the one device adb lists
    runtime = "tflite"                      # "tflite" (benchmark_model) or "onnx" (onnxruntime_perf_test)
    threads = 1
    cpu_affinity = [3]                      # cores to pin to (list, "0-3,6", or a hex mask "0x8")
    benchmark_binary = "~/android/benchmark_model"
    device_dir = "/data/local/tmp/mobilekit"
    cooldown_s = 1.0                        # pause between two models
    thermal_zone = 0                        # /sys/class/thermal/thermal_zone0/temp, or a path
    thermal_max_c = 45.0                    # wait while the zone is hotter than this

:func:`load_device` reads and checks such a file; every mistake is a :class:`~mobilekit.errors.ConfigError` whose
one-line message names the file, the field and the fix. ``load_device("host")`` without a file of that name
gives the embedded default (:data:`HOST_TOML`, the same as the shipped ``devices/host.toml``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mobilekit.errors import ConfigError
from mobilekit.profile.device_folder import check_device_dir
from mobilekit.validation.device import check_device_numbers

TRANSPORTS = ("host", "adb")
RUNTIMES = ("tflite", "onnx")
DEFAULT_DEVICE_DIR = "/data/local/tmp/mobilekit"

#: The embedded default device: this computer's CPU, LiteRT, one thread. ``devices/host.toml`` is a copy.
HOST_TOML = """\
# This computer's CPU, as a device: models run in-process with the LiteRT interpreter (TFLite files),
# one thread, the way the phone tables are measured. The embedded default of `mobilekit profile`.
name = "host"
transport = "host"
runtime = "tflite"
threads = 1
# cpu_affinity = [0]     # pin the measuring thread to these cores (a list, "0-3,6", or a hex mask "0x1")
cooldown_s = 0.0
runs = 50
warmup = 5
"""


@dataclass(frozen=True)
class DeviceDescriptor:
    """How to reach one device and run models on it (see the module docstring for the TOML form).

    ``cpu_affinity`` is a tuple of core indices (empty: no pinning). ``thermal_zone`` is the path of a
    temperature file in milli-degrees C (or degrees) on the device, or None. Times are seconds.
    """

    name: str
    transport: str = "host"
    runtime: str = "tflite"
    threads: int = 1
    cpu_affinity: tuple[int, ...] = ()
    address: str | None = None
    serial: str | None = None
    use_server: bool | None = None
    key_path: Path | None = None
    benchmark_binary: Path | None = None
    benchmark_args: tuple[str, ...] = ()
    device_dir: str = DEFAULT_DEVICE_DIR
    cooldown_s: float = 0.0
    thermal_zone: str | None = None
    thermal_max_c: float = 45.0
    thermal_timeout_s: float = 300.0
    thermal_poll_s: float = 2.0
    runs: int = 50
    warmup: int = 5
    timeout_s: float = 600.0
    description: str = ""
    protocol: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # mobilekit.profile.protocol
    path: Path | None = field(default=None, compare=False)

    @property
    def model_suffix(self) -> str:
        """File type this device runs: ``.tflite`` or ``.onnx``."""
        return ".onnx" if self.runtime == "onnx" else ".tflite"

    @property
    def affinity_mask(self) -> int:
        """``cpu_affinity`` as a bit mask (0 = no pinning), as ``taskset`` takes it."""
        return sum(1 << core for core in self.cpu_affinity)

    @property
    def source(self) -> str:
        return str(self.path) if self.path else f"device {self.name!r}"


# field -> (kinds accepted, what the message says it must be)
_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "a non-empty string"),
    "transport": ((str,), f"one of {', '.join(TRANSPORTS)}"),
    "runtime": ((str,), f"one of {', '.join(RUNTIMES)}"),
    "threads": ((int,), "an integer >= 1"),
    "cpu_affinity": ((list, str, int), 'a list of core numbers, a range string like "0-3,6", or a hex mask "0xf"'),
    "address": ((str,), 'a string "host:port"'),
    "serial": ((str,), "a string (the serial `adb devices` lists)"),
    "use_server": ((bool,), "true or false"),
    "key_path": ((str,), "a file path string"),
    "benchmark_binary": ((str,), "a file path string"),
    "benchmark_args": ((list,), 'a list of strings, e.g. ["--use_xnnpack=true"]'),
    "device_dir": ((str,), 'a device folder in /data/local/tmp such as "/data/local/tmp/mobilekit"'),
    "cooldown_s": ((int, float), "a number of seconds >= 0"),
    "thermal_zone": ((int, str), 'a zone number (0 = /sys/class/thermal/thermal_zone0/temp) or a file path'),
    "thermal_max_c": ((int, float), "a temperature in degrees C"),
    "thermal_timeout_s": ((int, float), "a number of seconds >= 0"),
    "thermal_poll_s": ((int, float), "a number of seconds > 0"),
    "runs": ((int,), "an integer >= 1"),
    "warmup": ((int,), "an integer >= 0"),
    "timeout_s": ((int, float), "a number of seconds > 0"),
    "description": ((str,), "a string"),
    "protocol": ((dict,), "a table [protocol] (fields: see mobilekit/profile/protocol.py)"),
}
_ADB_ONLY = ("address", "serial", "use_server", "key_path", "benchmark_binary", "benchmark_args")


def load_device(path: str | Path) -> DeviceDescriptor:
    """Read a device descriptor (TOML).

    ``path`` is a ``.toml`` file; the bare name ``"host"`` (with no such file) gives the embedded default.

    Raises:
        ConfigError: the file is missing or not TOML, a field is unknown, has the wrong type or value, or a
            field that the transport needs is missing. The message names the file and the field.
    """
    path = Path(path).expanduser()
    if str(path) == "host" and not path.exists():
        return parse_device(tomllib.loads(HOST_TOML), source="<embedded host device>")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such device file; start from devices/host.toml (this CPU) or "
                          "devices/pixel1.toml (a phone over ADB)") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise ConfigError(f"{path}: cannot read the device file ({exc.__class__.__name__}); pass a .toml file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); see devices/host.toml for the format") from None
    return parse_device(data, source=str(path), path=path)


def default_device() -> DeviceDescriptor:
    """The embedded default: this CPU, LiteRT, one thread (:data:`HOST_TOML`)."""
    return load_device("host")


def parse_device(data: dict[str, Any], source: str = "device descriptor", path: Path | None = None) -> DeviceDescriptor:
    """Check a descriptor given as a dict (the parsed TOML) and build it. See :func:`load_device`."""
    known = {f.name for f in fields(DeviceDescriptor)} - {"path"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{source}: unknown field {key!r}; known fields are {', '.join(sorted(known))}")
    for key, value in data.items():
        kinds, wanted = _KINDS[key]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise ConfigError(f"{source}: field {key!r} must be {wanted}, got {value!r}")

    def fail(key: str, detail: str = "") -> ConfigError:
        return ConfigError(f"{source}: field {key!r} must be {_KINDS[key][1]}, got {data[key]!r}{detail}")

    if "name" not in data:
        raise ConfigError(f'{source}: missing field \'name\'; add e.g. name = "my-phone" (it names the latency table)')
    values: dict[str, Any] = dict(data)
    if not values["name"].strip():
        raise fail("name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", values["name"]):  # it names a file: no '/', '..', spaces
        raise fail("name", "; it names the latency table file: use letters, digits, '.', '_' and '-' "
                           "(at most 64, starting with a letter or digit), e.g. name = \"pixel1\"")
    if values.get("transport", "host") not in TRANSPORTS:
        raise fail("transport")
    if values.get("runtime", "tflite") not in RUNTIMES:
        raise fail("runtime")
    for key, low, strict in (("threads", 1, False), ("runs", 1, False), ("warmup", 0, False), ("cooldown_s", 0, False),
                             ("thermal_timeout_s", 0, False), ("thermal_poll_s", 0, True), ("timeout_s", 0, True)):
        if key in values and (values[key] < low or (strict and values[key] <= low)):
            raise fail(key)
    check_device_numbers(values, source)  # and finite, in range (mobilekit/validation/device.py)
    for key in ("cooldown_s", "thermal_max_c", "thermal_timeout_s", "thermal_poll_s", "timeout_s"):
        if key in values:
            values[key] = float(values[key])
    if "cpu_affinity" in values:
        values["cpu_affinity"] = _parse_affinity(values["cpu_affinity"], lambda: fail("cpu_affinity"))
    if "thermal_zone" in values:
        zone = values["thermal_zone"]
        if isinstance(zone, int):
            if zone < 0:
                raise fail("thermal_zone")
            zone = f"/sys/class/thermal/thermal_zone{zone}/temp"
        elif not zone.startswith("/"):
            raise fail("thermal_zone", " (a path must be absolute)")
        values["thermal_zone"] = zone
    if "benchmark_args" in values:
        if not all(isinstance(a, str) for a in values["benchmark_args"]):
            raise fail("benchmark_args")
        values["benchmark_args"] = tuple(values["benchmark_args"])
    if "device_dir" in values:  # normalised, and only inside /data/local/tmp (see profile/device_folder.py)
        values["device_dir"] = check_device_dir(values["device_dir"], source)
    for key in ("benchmark_binary", "key_path"):
        if key in values:
            values[key] = Path(values[key]).expanduser()
    if "protocol" in values:
        from mobilekit.profile.protocol import parse_protocol

        parse_protocol(values["protocol"], source)
    transport = values.get("transport", "host")
    if transport == "host":
        extra = [key for key in _ADB_ONLY if key in values]
        if extra:
            raise ConfigError(f"{source}: field {extra[0]!r} only applies to transport = \"adb\"; remove it or set "
                              "transport = \"adb\"")
    elif "benchmark_binary" not in values:
        tool = "onnxruntime_perf_test" if values.get("runtime") == "onnx" else "benchmark_model"
        raise ConfigError(f"{source}: missing field 'benchmark_binary': an adb device needs the path of {tool} "
                          f"for its ABI on this computer, e.g. benchmark_binary = \"~/android/{tool}\" (see "
                          "devices/pixel1.toml for where to download it)")
    return DeviceDescriptor(**values, path=path)


def _parse_affinity(value: Any, fail) -> tuple[int, ...]:
    """Cores from ``[0, 2]``, ``"0-3,6"``, ``"0x5"`` or an int mask."""
    if isinstance(value, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 1024 for c in value):
            raise fail()
        return tuple(sorted(set(value)))
    if isinstance(value, int):
        mask = value
    else:
        text = value.strip().lower()
        if text.startswith("0x"):
            try:
                mask = int(text, 16)
            except ValueError:
                raise fail() from None
        else:
            cores: set[int] = set()
            try:
                for part in filter(None, (p.strip() for p in text.split(","))):
                    low, _, high = part.partition("-")
                    cores.update(range(int(low), int(high or low) + 1))
            except ValueError:
                raise fail() from None
            if not cores or min(cores) < 0:
                raise fail()
            return tuple(sorted(cores))
    if mask <= 0:
        raise fail()
    return tuple(bit for bit in range(mask.bit_length()) if mask >> bit & 1)
