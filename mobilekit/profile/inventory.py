"""What devices are reachable: the device descriptors given (or ``devices/*.toml``) and every device a running
adb server lists, each probed for model, ABI, Android version, CPU governor and temperature.

    for status in list_devices(["devices/pixel1.toml"]):
        print(status.row())

Probing only reads (``getprop``, sysfs files through the shell, every argument quoted by the transport); it
pushes and runs nothing.
"""

from __future__ import annotations

import platform
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mobilekit.errors import MobilekitError
from mobilekit.profile.devices import DeviceDescriptor, load_device
from mobilekit.profile.protocol import LocalSysfs, ShellSysfs, SysfsAccess, list_cpus, read_cores

DEFAULT_ZONE = "/sys/class/thermal/thermal_zone0/temp"


@dataclass(frozen=True)
class DeviceStatus:
    """One device as probed. ``source``: the descriptor file or ``"adb server"``; ``error``: why it is not
    reachable (None when it is). ``governor`` summarises the cores' governors (``"schedutil x8"``)."""

    source: str
    name: str
    target: str
    reachable: bool
    model: str = ""
    abi: str = ""
    android: str = ""
    governor: str = ""
    temperature_c: float | None = None
    error: str | None = None

    def row(self) -> str:
        if not self.reachable:
            return f"{self.name:16} {self.target:22} unreachable: {self.error}"
        temperature = f"{self.temperature_c:.1f} C" if self.temperature_c is not None else "-"
        return (f"{self.name:16} {self.target:22} {self.model:24} {self.abi:12} {self.android:20} "
                f"{self.governor or '-':20} {temperature}")


HEADER = (f"{'name':16} {'address/serial':22} {'model':24} {'abi':12} {'os':20} {'governor':20} temperature")


def _governors(sysfs: SysfsAccess) -> str:
    cpus = list_cpus(sysfs)
    if not cpus:
        return ""
    counts = Counter(s.governor for s in read_cores(sysfs, cpus).values() if s.governor)
    return ", ".join(f"{name} x{count}" for name, count in counts.items())


def _temperature(sysfs: SysfsAccess, zone: str | None) -> float | None:
    text = sysfs.read([zone or DEFAULT_ZONE]).get(zone or DEFAULT_ZONE)
    try:
        value = float((text or "").split()[0])
    except (ValueError, IndexError):
        return None
    return value / 1000.0 if abs(value) >= 1000 else value


def probe_transport(transport, source: str, name: str, target: str, zone: str | None = None) -> DeviceStatus:
    """Read what an open ADB transport's device says about itself."""
    properties: dict[str, str] = {}
    for line in transport.shell(["getprop"], timeout_s=30).output.splitlines():
        key, sep, value = line.strip().partition("]: [")
        if sep and key.startswith("[") and value.endswith("]"):
            properties[key[1:]] = value[:-1]
    sysfs = ShellSysfs(lambda argv: transport.shell(list(argv), timeout_s=30))
    model = " ".join(filter(None, (properties.get("ro.product.manufacturer"), properties.get("ro.product.model"))))
    release, sdk = properties.get("ro.build.version.release"), properties.get("ro.build.version.sdk")
    return DeviceStatus(source, name, target, True, model or "unknown", properties.get("ro.product.cpu.abi", "?"),
                        f"Android {release} (SDK {sdk})" if release else "unknown", _governors(sysfs),
                        _temperature(sysfs, zone))


def probe_descriptor(descriptor: DeviceDescriptor) -> DeviceStatus:
    """Probe the device a descriptor names (this computer for ``transport = "host"``)."""
    source = str(descriptor.path or descriptor.name)
    if descriptor.transport == "host":
        from mobilekit.profile.runners import _host_cpu_model

        sysfs = LocalSysfs()
        return DeviceStatus(source, descriptor.name, "this computer", True, _host_cpu_model(), platform.machine(),
                            f"{platform.system()} {platform.release()}", _governors(sysfs),
                            _temperature(sysfs, descriptor.thermal_zone) if descriptor.thermal_zone else None)
    target = descriptor.address or descriptor.serial or "(the only adb device)"
    try:
        from mobilekit.profile.transports import connect_adb

        with connect_adb(address=descriptor.address, serial=descriptor.serial, key_path=descriptor.key_path,
                         use_server=descriptor.use_server, timeout_s=5.0, auth_timeout_s=10.0) as transport:
            return probe_transport(transport, source, descriptor.name, target, descriptor.thermal_zone)
    except MobilekitError as exc:
        return DeviceStatus(source, descriptor.name, target, False, error=str(exc))


def list_devices(descriptor_paths: Sequence[str | Path] = (), server: bool = True) -> list[DeviceStatus]:
    """Every descriptor of ``descriptor_paths`` probed, then every device the adb server lists that no
    descriptor names (a bad descriptor file is listed as unreachable with its error)."""
    statuses: list[DeviceStatus] = []
    named: set[str] = set()
    for path in descriptor_paths:
        try:
            descriptor = load_device(path)
        except MobilekitError as exc:
            statuses.append(DeviceStatus(str(path), Path(path).stem, "-", False, error=str(exc)))
            continue
        named.update(filter(None, (descriptor.address, descriptor.serial)))
        statuses.append(probe_descriptor(descriptor))
    if server:
        from mobilekit.profile.transports.adb import list_server_devices

        for serial, state in list_server_devices() or []:
            if serial in named:
                continue
            if state != "device":
                statuses.append(DeviceStatus("adb server", serial, serial, False, error=f"adb lists it as {state!r}"))
                continue
            try:
                from mobilekit.profile.transports import connect_adb

                with connect_adb(serial=serial, use_server=True, timeout_s=5.0) as transport:
                    statuses.append(probe_transport(transport, "adb server", serial, serial))
            except MobilekitError as exc:
                statuses.append(DeviceStatus("adb server", serial, serial, False, error=str(exc)))
    return statuses
