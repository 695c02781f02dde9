"""Facts about local processes shared by the stages that coordinate several workers (compare, tune)."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True while process ``pid`` exists on this machine (signal 0 probes it without touching it); a process of
    another user, which we may not signal, counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
