"""The measurement protocol: how a device is prepared and checked around a profile, recorded in the table.

What the protocol applies and records (``settings.protocol`` of a latency table):

* threads, warm-up runs, timed runs, cool-down between models and the thermal wait (from the descriptor);
* the CPU affinity mask: the descriptor's ``cpu_affinity``, or, on a phone without one, its big cores (the
  cores with the highest ``/sys/devices/system/cpu/cpuN/cpufreq/cpuinfo_max_freq``), as ``taskset`` runs it;
* the CPU frequency governor of the cores used: set to ``performance`` when the device allows it (a rooted
  phone), restored afterwards; when it does not, the record says so;
* the governor and current / maximum frequency of the cores used, read before and after;
* per entry, the coefficient of variation (std / median of a round's runs); a round above ``cv_max`` is
  measured again (at most ``remeasure`` times, the calmest round is kept). The CV of a handful of runs is
  itself noise: rounds of fewer than ``cv_min_runs`` runs are recorded but never re-measured.

The protocol *held* when the governor and the current frequency of every core used stayed the same from
before to after (within ``freq_tolerance``), and every entry's CV is at most ``cv_max`` after re-measuring.

The descriptor may tune it in a ``[protocol]`` table::

    [protocol]
    governor = "performance"   # or "keep": leave the governor alone
    big_cores = true           # pin to the big cores when cpu_affinity is not given
    cv_max = 0.15              # re-measure rounds whose std/median is above this
    remeasure = 2              # at most this many times
    freq_tolerance = 0.05      # relative change of a core's current frequency that breaks the protocol
    cv_min_runs = 20           # rounds with fewer runs are not judged by their CV

Everything sent to a device shell is an argument vector the transport quotes; file names are passed as
positional parameters (``"$0"``, ``"$@"``) of fixed scripts, never pasted into code.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from mobilekit.errors import ConfigError

CPU_ROOT = "/sys/devices/system/cpu"
GOVERNORS = ("performance", "keep")

_READ_SCRIPT = 'for f in "$@"; do v=$(cat "$f" 2>/dev/null | head -n 1); printf "%s\\t%s\\n" "$f" "$v"; done'
_WRITE_SCRIPT = 'printf "%s\\n" "$1" > "$0"'


@dataclass(frozen=True)
class ProtocolSettings:
    """The tunable part of the protocol (see the module docstring for the meaning of each field)."""

    governor: str = "performance"
    big_cores: bool = True
    cv_max: float = 0.15
    remeasure: int = 2
    freq_tolerance: float = 0.05
    cv_min_runs: int = 20


def protocol_settings(descriptor) -> ProtocolSettings:
    """The descriptor's ``[protocol]`` table checked and read (defaults for what it leaves out)."""
    return parse_protocol(getattr(descriptor, "protocol", None) or {}, descriptor.source)


def parse_protocol(data: Mapping[str, Any], source: str) -> ProtocolSettings:
    """A ``[protocol]`` table checked and read.

    Raises:
        ConfigError: an unknown key or a bad value, naming ``source`` (the descriptor file) and the field.
    """
    known = {f.name for f in dataclasses.fields(ProtocolSettings)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{source}: unknown field 'protocol.{key}'; known: {', '.join(sorted(known))}")
    values = dict(data)
    if "governor" in values and values["governor"] not in GOVERNORS:
        raise ConfigError(f"{source}: field 'protocol.governor' must be one of {', '.join(GOVERNORS)}, got "
                          f"{values['governor']!r}")
    if "big_cores" in values and not isinstance(values["big_cores"], bool):
        raise ConfigError(f"{source}: field 'protocol.big_cores' must be true or false, got {values['big_cores']!r}")
    for key, low in (("cv_max", 0.0), ("freq_tolerance", 0.0)):
        value = values.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= low:
            raise ConfigError(f"{source}: field 'protocol.{key}' must be a number > 0, got {values[key]!r}")
        if key in values:
            values[key] = float(value)
    for key in ("remeasure", "cv_min_runs"):
        if key in values and (isinstance(values[key], bool) or not isinstance(values[key], int) or values[key] < 0):
            raise ConfigError(f"{source}: field 'protocol.{key}' must be an integer >= 0, got {values[key]!r}")
    return ProtocolSettings(**values)


# ---- reading and writing sysfs on a device ------------------------------------------------------------------
class SysfsAccess:
    """Reads (and, where allowed, writes) small sysfs files of one device."""

    def read(self, paths: Sequence[str]) -> dict[str, str | None]:
        """First line of each file, or None when it cannot be read."""
        raise NotImplementedError

    def write(self, path: str, value: str) -> bool:
        """Try to write ``value``; True if the file reads back ``value`` afterwards."""
        raise NotImplementedError


class LocalSysfs(SysfsAccess):
    """This computer's sysfs."""

    def read(self, paths: Sequence[str]) -> dict[str, str | None]:
        values: dict[str, str | None] = {}
        for path in paths:
            try:
                lines = Path(path).read_text().splitlines()
                values[path] = lines[0].strip() if lines else ""
            except OSError:
                values[path] = None
        return values

    def write(self, path: str, value: str) -> bool:
        try:
            Path(path).write_text(value + "\n")
        except OSError:
            return False
        return self.read([path])[path] == value


class ShellSysfs(SysfsAccess):
    """A device's sysfs through its shell (``transport.shell(argv)``): one command for many files."""

    def __init__(self, shell) -> None:
        self._shell = shell

    def read(self, paths: Sequence[str]) -> dict[str, str | None]:
        if not paths:
            return {}
        result = self._shell(["sh", "-c", _READ_SCRIPT, "sh", *paths])
        values: dict[str, str | None] = {path: None for path in paths}
        for line in result.output.splitlines():
            path, tab, value = line.partition("\t")
            if tab and path in values:
                values[path] = value.strip() or None
        return values

    def write(self, path: str, value: str) -> bool:
        self._shell(["sh", "-c", _WRITE_SCRIPT, path, value])
        return self.read([path])[path] == value


def sysfs_of(runner) -> SysfsAccess:
    """The sysfs of ``runner``'s device: local for the host, through the shell for a phone."""
    if runner.descriptor.transport == "host":
        return LocalSysfs()
    return ShellSysfs(lambda argv: runner.transport.shell(list(argv), timeout_s=60))


# ---- cores ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoreState:
    """One core's frequency state: governor, current and maximum frequency in kHz (None: not reported)."""

    cpu: int
    governor: str | None
    cur_khz: int | None
    max_khz: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"governor": self.governor, "cur_khz": self.cur_khz, "max_khz": self.max_khz}


def _cpufreq(cpu: int, name: str) -> str:
    return f"{CPU_ROOT}/cpu{cpu}/cpufreq/{name}"


def parse_cpu_list(text: str | None) -> list[int]:
    """``"0-3,6"`` -> [0, 1, 2, 3, 6] (the kernel's cpu list format); [] for None or garbage."""
    cores: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in (text or "").split(","))):
            low, _, high = part.partition("-")
            cores.update(range(int(low), int(high or low) + 1))
    except ValueError:
        return []
    return sorted(cores)


def list_cpus(sysfs: SysfsAccess) -> list[int]:
    """The device's online cores (``/sys/devices/system/cpu/online``)."""
    return parse_cpu_list(sysfs.read([f"{CPU_ROOT}/online"])[f"{CPU_ROOT}/online"])


def read_cores(sysfs: SysfsAccess, cpus: Sequence[int]) -> dict[int, CoreState]:
    names = ("scaling_governor", "scaling_cur_freq", "cpuinfo_max_freq")
    values = sysfs.read([_cpufreq(cpu, name) for cpu in cpus for name in names])

    def number(text: str | None) -> int | None:
        try:
            return int(text) if text is not None else None
        except ValueError:
            return None

    return {cpu: CoreState(cpu, values[_cpufreq(cpu, names[0])], number(values[_cpufreq(cpu, names[1])]),
                           number(values[_cpufreq(cpu, names[2])])) for cpu in cpus}


def big_cores(states: Mapping[int, CoreState]) -> tuple[int, ...]:
    """The cores with the highest ``cpuinfo_max_freq``; () when not every core reports one or all are equal."""
    frequencies = {cpu: s.max_khz for cpu, s in states.items()}
    if not frequencies or any(f is None for f in frequencies.values()):
        return ()
    top = max(frequencies.values())
    chosen = tuple(sorted(cpu for cpu, f in frequencies.items() if f == top))
    return () if len(chosen) == len(frequencies) else chosen


# ---- one session ------------------------------------------------------------------------------------------------
@dataclass
class ProtocolSession:
    """The protocol applied to one open runner: :meth:`start` before measuring, :meth:`finish` after."""

    runner: Any
    settings: ProtocolSettings
    sysfs: SysfsAccess | None = None
    affinity: tuple[int, ...] = ()
    affinity_source: str = "none"
    governor_note: str = ""
    before: dict[int, CoreState] = field(default_factory=dict)
    after: dict[int, CoreState] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    _restore: dict[int, str] = field(default_factory=dict)
    started_at: float = 0.0
    finished: bool = False

    @classmethod
    def start(cls, runner, settings: ProtocolSettings | None = None, sysfs: SysfsAccess | None = None
              ) -> "ProtocolSession":
        """Choose the cores, set the governor where allowed and read the cores' state. A phone without
        ``cpu_affinity`` is pinned to its big cores (the runner's descriptor is replaced by one that says so)."""
        descriptor = runner.descriptor
        session = cls(runner, settings or protocol_settings(descriptor), sysfs or sysfs_of(runner))
        session.started_at = time.time()
        cpus = list_cpus(session.sysfs)
        everything = read_cores(session.sysfs, cpus) if cpus else {}
        if descriptor.cpu_affinity:
            session.affinity, session.affinity_source = tuple(descriptor.cpu_affinity), "descriptor"
        elif session.settings.big_cores and descriptor.transport != "host" and big_cores(everything):
            session.affinity, session.affinity_source = big_cores(everything), "big cores (highest cpuinfo_max_freq)"
            runner.descriptor = dataclasses.replace(descriptor, cpu_affinity=session.affinity)
        used = list(session.affinity) or cpus
        if not used or all(everything.get(cpu, CoreState(cpu, None, None, None)).governor is None for cpu in used):
            session.governor_note = "the device reports no cpufreq governor in sysfs: frequencies not controlled"
        elif session.settings.governor == "keep":
            session.governor_note = "left as it was (protocol.governor = \"keep\")"
        else:
            refused = []
            for cpu in used:
                old = everything[cpu].governor
                if old is None or old == "performance":
                    continue
                if session.sysfs.write(_cpufreq(cpu, "scaling_governor"), "performance"):
                    session._restore[cpu] = old
                else:
                    refused.append(cpu)
            session.governor_note = (f"could not set 'performance' on cores {refused} (the device does not allow "
                                     "it: needs root); measured with the governor it had" if refused else
                                     "set to 'performance'" + (" (restored afterwards)" if session._restore else
                                                               " (already)"))
        session.before = read_cores(session.sysfs, used) if used else {}
        return session

    @property
    def used_cores(self) -> list[int]:
        return sorted(self.before)

    def finish(self) -> None:
        """Read the cores again, restore governors that were changed, and note what broke the protocol."""
        if self.finished:
            return
        self.finished = True
        try:
            self.after = read_cores(self.sysfs, self.used_cores) if self.before else {}
        except Exception as exc:  # the device is gone: the profile's own error says so
            self.violations.append(f"cores could not be read after measuring ({type(exc).__name__})")
            return
        for cpu, before in self.before.items():
            after = self.after.get(cpu)
            if after is None:
                continue
            if before.governor != after.governor:
                self.violations.append(f"core {cpu}: governor changed from {before.governor} to {after.governor}")
            if before.cur_khz and after.cur_khz and \
                    abs(after.cur_khz - before.cur_khz) > self.settings.freq_tolerance * before.cur_khz:
                self.violations.append(f"core {cpu}: frequency changed from {before.cur_khz} to {after.cur_khz} kHz")
        for cpu, old in self._restore.items():
            try:
                self.sysfs.write(_cpufreq(cpu, "scaling_governor"), old)
            except Exception:
                pass

    @property
    def held(self) -> bool:
        return self.finished and not self.violations

    def to_dict(self, noisy_entries: Sequence[str] = ()) -> dict[str, Any]:
        """The record kept in ``settings.protocol`` of a table (one per profiling session)."""
        d = self.runner.descriptor
        violations = list(self.violations) + [f"{label}: CV above {self.settings.cv_max:g} after re-measuring"
                                              for label in noisy_entries]
        return {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            "threads": d.threads,
            "cpu_affinity": list(self.affinity),
            "affinity_mask": f"{sum(1 << c for c in self.affinity):x}" if self.affinity else None,
            "affinity_source": self.affinity_source,
            "governor": {"wanted": self.settings.governor, "note": self.governor_note},
            "cores_before": {str(c): s.to_dict() for c, s in self.before.items()},
            "cores_after": {str(c): s.to_dict() for c, s in self.after.items()},
            "cooldown_s": d.cooldown_s,
            "thermal_zone": d.thermal_zone,
            "thermal_max_c": d.thermal_max_c if d.thermal_zone else None,
            "cv_max": self.settings.cv_max,
            "cv_min_runs": self.settings.cv_min_runs,
            "remeasure": self.settings.remeasure,
            "held": self.finished and not violations,
            "violations": violations,
        }

    def summary(self) -> str:
        if not self.finished:
            return "protocol: not finished"
        cores = ",".join(map(str, self.used_cores)) or "unknown"
        state = "held" if self.held else "NOT held: " + "; ".join(self.violations)
        return f"protocol {state} (cores {cores} [{self.affinity_source}], governor {self.governor_note})"


def compare_with_table(session: ProtocolSession, table_settings: Mapping[str, Any]) -> list[str]:
    """How this session's protocol differs from the one a table was measured with (its last
    ``settings.protocol`` record): threads, cores, and whether the table's own protocol held. [] when alike or
    when the table records no protocol."""
    records = table_settings.get("protocol") or []
    if not records:
        return ["the table records no measurement protocol (profiled before mobilekit recorded one)"]
    table = records[-1]
    differences = []
    threads = session.runner.descriptor.threads
    if table.get("threads") not in (None, threads):
        differences.append(f"threads {threads} here, {table.get('threads')} in the table")
    if list(table.get("cpu_affinity") or []) != list(session.affinity):
        differences.append(f"cores {list(session.affinity) or 'unpinned'} here, "
                           f"{table.get('cpu_affinity') or 'unpinned'} in the table")
    broken = [r for r in records if not r.get("held", True)]
    if broken:
        differences.append(f"the table's own protocol did not hold in {len(broken)} of {len(records)} sessions ("
                           + "; ".join(v for r in broken for v in r.get("violations", []))[:300] + ")")
    return differences
