"""A throwaway PostgreSQL cluster for tests: ``initdb`` + ``pg_ctl`` in a temporary folder, listening only on a
unix socket in that folder (no TCP port), trust authentication, stopped and removed afterwards.

PostgreSQL refuses to run as root: under root the cluster runs as the ``postgres`` user (Debian's package creates
it; else ``nobody``). The binaries come from ``PATH`` or Debian's ``/usr/lib/postgresql/VERSION/bin``
(``make postgresql`` installs them)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (the newest Debian version first), or None."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                    key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parts[-3].split(".")], reverse=True)
    for initdb in [*debian, *(Path(p) for p in [shutil.which("initdb")] if p)]:
        if (initdb.parent / "pg_ctl").exists():
            return initdb.parent
    return None


def _run_as() -> dict:
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


@contextmanager
def postgres_server(database_user: str = "mobilekit") -> Iterator[str]:
    """Start a cluster; yields its SQLAlchemy URL (``postgresql://USER@/postgres?host=SOCKET_FOLDER``)."""
    binaries = server_binaries()
    if binaries is None:
        raise FileNotFoundError("initdb / pg_ctl not found")
    folder = Path(tempfile.mkdtemp(prefix="mkpg-"))            # short: a socket path holds at most 107 bytes
    as_user = _run_as()
    if as_user:
        os.chown(folder, as_user["user"], as_user["group"])
    data, log = folder / "data", folder / "server.log"
    common = dict(cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **as_user)
    try:
        done = subprocess.run([str(binaries / "initdb"), "-D", str(data), "-U", database_user, "--auth=trust",
                               "-E", "UTF8", "--no-sync"], **common)
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stdout[-2000:]}")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = ''\nunix_socket_directories = '{folder}'\nport = 5432\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\n")
        done = subprocess.run([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"],
                              **common)
        if done.returncode:
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stdout[-1000:]} {text[-1000:]}")
        yield f"postgresql://{database_user}@/postgres?host={folder}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], **common)
        shutil.rmtree(folder, ignore_errors=True)
