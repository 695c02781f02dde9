"""``mobilekit devices``: which devices are reachable (descriptors and the adb server's devices), with model,
ABI, Android version, CPU governor and temperature (a thin layer over
:func:`mobilekit.profile.inventory.list_devices`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "devices", help="list reachable devices: descriptors and the adb server's devices",
        description="Probe every device descriptor given (default: this computer, ./devices/*.toml and the "
                    "descriptors shipped with mobilekit) and every device a running adb server lists; print model, "
                    "ABI, Android version, CPU governor and temperature. Reads only.")
    parser.add_argument("--device", action="append", default=None,
                        help="device descriptor (TOML) to probe; repeat for several (default: the host, ./devices/*.toml "
                             "and the shipped descriptors)")
    parser.add_argument("--no-server", dest="server", action="store_false", help="do not ask an adb server")
    parser.set_defaults(func=run_devices)


#: The descriptors shipped with mobilekit (the repository's devices/ folder).
SHIPPED_DEVICES = Path(__file__).resolve().parents[2] / "devices"


def default_descriptors(local: Path = Path("devices")) -> list[str | Path]:
    """What ``mobilekit devices`` lists without ``--device``, wherever it runs: ``./devices/*.toml``, then the
    shipped descriptors not already among them (same file or same name), and the host (embedded ``"host"``)
    when no ``host.toml`` is among them."""
    paths: list[str | Path] = []
    seen_files: set[Path] = set()
    seen_names: set[str] = set()
    for folder in (local, SHIPPED_DEVICES):
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            if path.resolve() in seen_files or path.name in seen_names:
                continue
            seen_files.add(path.resolve())
            seen_names.add(path.name)
            paths.append(path)
    if "host.toml" not in seen_names:
        paths.insert(0, "host")
    return paths


def run_devices(args: argparse.Namespace) -> int:
    from mobilekit.profile.inventory import HEADER, list_devices

    paths = args.device if args.device is not None else default_descriptors()
    statuses = list_devices(paths, server=args.server)
    print(HEADER)
    for status in statuses:
        print(status.row())
    if not statuses:
        print("no devices: pass --device FILE.toml or start an adb server (`adb start-server`) with a phone attached")
    return 0
