"""Where a study lives: Optuna's storages only (no scheduler of our own).

- default: an SQLite file ``study.db`` in the output folder (Optuna's RDB storage), so a killed ``tune``
  resumes with every finished trial kept;
- ``--storage postgresql://...`` / ``mysql://...`` / ``sqlite:///...``: a shared database (RDB storage;
  PostgreSQL through psycopg 3, a dependency of mobilekit; MySQL needs a driver such as PyMySQL);
- ``--storage journal:PATH`` or a path ending in ``.log`` / ``.journal``: Optuna's journal file storage, for
  machines that share a file system but no database server.

A trial whose worker dies is not left running forever: RDB storages keep a heartbeat and fail a trial whose
heartbeat went stale; on every storage a worker starting on the same host fails the running trials of
processes that no longer exist (:func:`fail_dead_local_trials`). Both hand the failed trial to Optuna's
:class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`, which queues it once more with the same parameters.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from mobilekit.errors import ConfigError
from mobilekit.processes import process_alive

RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
JOURNAL_SUFFIXES = (".log", ".journal")
WORKER_ATTR = "worker"
MAX_RETRY = 1


def default_storage_url(out: str | Path) -> str:
    """The SQLite study file in the output folder (``sqlite:///OUT/study.db``)."""
    return f"sqlite:///{Path(out).resolve() / 'study.db'}"


SQLITE_HEADER = b"SQLite format 3\x00"
OPTUNA_TABLES = {"studies", "version_info", "trials"}


def _sqlite_tables(path: Path) -> set[str] | None:
    """Table names of the SQLite file ``path`` (opened read-only, never created), or None if it is not one."""
    import sqlite3

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                return None
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            connection.close()
    except (OSError, sqlite3.Error):
        return None


def is_optuna_sqlite(path: str | Path) -> bool:
    """True when ``path`` is an SQLite file holding Optuna's tables."""
    tables = _sqlite_tables(Path(path))
    return tables is not None and OPTUNA_TABLES <= tables


def is_mobilekit_study_db(path: str | Path) -> bool:
    """True when ``path`` is an Optuna SQLite storage whose studies mobilekit made (each carries the
    ``sampler`` user attribute ``tune`` sets): the format check that lets ``tune`` reuse a ``study.db`` from
    before run manifests."""
    import sqlite3

    if not is_optuna_sqlite(path):
        return False
    try:
        connection = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        try:
            studies = {row[0] for row in connection.execute("SELECT study_id FROM studies")}
            marked = {row[0] for row in connection.execute(
                "SELECT study_id FROM study_user_attributes WHERE key = 'sampler'")}
        finally:
            connection.close()
    except sqlite3.Error:
        return False
    return bool(studies) and studies <= marked


def check_sqlite_file(url: str) -> None:
    """For ``sqlite:///FILE``: refuse a FILE that is a symlink, not a regular file, or an existing non-empty
    file that is not an Optuna storage (Optuna would add its tables to someone else's database).

    Raises:
        ConfigError: one line naming the file and the fix.
    """
    from mobilekit import safewrite

    if not url.startswith("sqlite:///"):
        return
    path = Path(url.removeprefix("sqlite:///"))
    try:
        safewrite.check_target(path)
    except safewrite.OutputError as exc:
        raise ConfigError(f"--storage {url}: {exc}") from None
    if path.is_file() and path.stat().st_size > 0 and not is_optuna_sqlite(path):
        raise ConfigError(f"--storage {url}: {path} exists and is not an Optuna storage; mobilekit never adds "
                          "tables to another database: move it away or name another file")


def retry_callback() -> RetryHeartbeatStaleTrialCallback:
    """Queue a failed (killed) trial once more with its parameters; its run folder is resumed when it is here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def retried_trial_number(trial: optuna.trial.FrozenTrial) -> int | None:
    """The number of the killed trial that ``trial`` retries (None for a first attempt)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def storage_kind(url: str) -> str:
    """``rdb`` or ``journal`` for a --storage value.

    Raises:
        ConfigError: neither a database URL nor a journal file.
    """
    if url.startswith("journal:") or url.endswith(JOURNAL_SUFFIXES):
        return "journal"
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme in RDB_SCHEMES:
        return "rdb"
    raise ConfigError(f"--storage {url}: not a storage Optuna can open; use a database URL "
                      "(sqlite:///study.db, postgresql://user@host/db, mysql://user@host/db) or a journal file "
                      "(journal:PATH, or a path ending in .log)")


SCHEMA_RACE_TRIES = 5


def schema_race(exc: BaseException) -> bool:
    """Whether opening an RDB storage failed because another worker was creating Optuna's tables in the same
    empty database at the same moment (PostgreSQL: "duplicate key value violates unique constraint
    pg_type_typname_nsp_index", or "already exists"): opening it again a moment later finds the tables."""
    text = str(exc)
    return "duplicate key value" in text or "already exists" in text


def driver_url(url: str) -> str:
    """``url`` with the PostgreSQL driver mobilekit installs (psycopg 3): a bare ``postgresql://`` means psycopg2
    to SQLAlchemy 2.0 and psycopg to 2.1, so it is made explicit (``postgresql+psycopg://``). A URL naming its
    driver (``postgresql+psycopg2://``) is left as it is."""
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def open_storage(url: str, heartbeat_s: int = 30) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url`` (see the module docstring). RDB storages get a heartbeat every
    ``heartbeat_s`` seconds; a trial silent for 2·``heartbeat_s`` is failed and retried.

    Raises:
        ConfigError: the URL is not a storage, its driver is not installed, or it cannot be opened.
    """
    kind = storage_kind(url)
    try:
        if kind == "journal":
            path = Path(url.removeprefix("journal:"))
            if not path.parent.is_dir():
                raise ConfigError(f"--storage {url}: folder {path.parent} does not exist; create it or pick another path")
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
        if url.startswith("sqlite:///"):
            folder = Path(url.removeprefix("sqlite:///")).parent
            if not folder.is_dir():
                raise ConfigError(f"--storage {url}: folder {folder} does not exist; create it or pick another path")
            check_sqlite_file(url)
        for attempt in range(SCHEMA_RACE_TRIES):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExperimentalWarning)
                    return optuna.storages.RDBStorage(driver_url(url), engine_kwargs=engine_kwargs,
                                                      heartbeat_interval=heartbeat_s,
                                                      grace_period=2 * heartbeat_s,
                                                      heartbeat_stale_trial_callback=retry_callback())
            except Exception as exc:  # noqa: BLE001 - see schema_race
                if attempt + 1 == SCHEMA_RACE_TRIES or not schema_race(exc):
                    raise
                time.sleep(0.5 * (attempt + 1))
    except ConfigError:
        raise
    except ImportError as exc:
        raise ConfigError(f"--storage {url}: its database driver is not installed ({exc})") from None
    except Exception as exc:  # SQLAlchemy / driver errors: bad URL, unreachable server, unreadable file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--storage {url}: cannot open it ({first_line})") from None


def worker_identity() -> dict[str, object]:
    """This process as stored on the trials it runs: host name and process id."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def fail_dead_local_trials(study: optuna.Study) -> list[int]:
    """Fail (and queue for retry) the running trials owned by a process of this host that no longer exists,
    e.g. a worker killed mid-trial. Returns their trial numbers. Trials of other hosts are left to the
    storage's heartbeat."""
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(WORKER_ATTR) or {}
        if owner.get("host") != host or not isinstance(owner.get("pid"), int) or process_alive(owner["pid"]):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except RuntimeError:          # another worker failed it first
            continue
        failed.append(trial.number)
        retry_callback()(study, study._storage.get_trial(trial._trial_id))
    return failed
