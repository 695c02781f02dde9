"""Ways to reach a device: the :class:`DeviceTransport` protocol (:mod:`.base`) and its ADB implementation
(:mod:`.adb`, via an adb server or directly with adb-shell)."""

from mobilekit.profile.transports.adb import AdbTransport, connect_adb, default_adb_key_path, ensure_adb_key
from mobilekit.profile.transports.base import (
    DeviceAuthError,
    DeviceConnectionError,
    DeviceDisconnectedError,
    DeviceNotFoundError,
    DeviceTimeoutError,
    DeviceTransport,
    RemoteFileError,
    RemoteStat,
    ShellResult,
)

__all__ = [
    "AdbTransport",
    "DeviceAuthError",
    "DeviceConnectionError",
    "DeviceDisconnectedError",
    "DeviceNotFoundError",
    "DeviceTimeoutError",
    "DeviceTransport",
    "RemoteFileError",
    "RemoteStat",
    "ShellResult",
    "connect_adb",
    "default_adb_key_path",
    "ensure_adb_key",
]
