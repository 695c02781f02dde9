"""``mobilekit devices``: which devices are reachable (descriptors and the adb server's devices), with model,
ABI, Android version, CPU governor and temperature (a thin layer over
:func:`mobilekit.profile.inventory.list_devices`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "devices", help="list reachable devices: descriptors and the adb server's devices",
        description="Probe every device descriptor given (default: devices/*.toml) and every device a running adb "
                    "server lists; print model, ABI, Android version, CPU governor and temperature. Reads only.")
    parser.add_argument("--device", action="append", default=None,
                        help="device descriptor (TOML) to probe; repeat for several (default devices/*.toml)")
    parser.add_argument("--no-server", dest="server", action="store_false", help="do not ask an adb server")
    parser.set_defaults(func=run_devices)


def run_devices(args: argparse.Namespace) -> int:
    from mobilekit.profile.inventory import HEADER, list_devices

    paths = args.device if args.device is not None else sorted(Path("devices").glob("*.toml"))
    statuses = list_devices(paths, server=args.server)
    print(HEADER)
    for status in statuses:
        print(status.row())
    if not statuses:
        print("no devices: pass --device FILE.toml or start an adb server (`adb start-server`) with a phone attached")
    return 0
