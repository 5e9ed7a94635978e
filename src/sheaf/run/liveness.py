"""Whether a run is still going: finished, running, or interrupted — never "running" for a dead run.

A run store says ``status = "running"`` from the moment it is created until its writer
marks it finished. A writer killed with ``kill -9`` (or a machine that lost power) never
gets to say otherwise, so the word in the store alone cannot tell a live run from a dead
one. Every process that writes a run store therefore records **who it is**
(:func:`writer_identity`: host, boot, pid and the process's start time) when it opens the
store, and :func:`run_state` asks the operating system whether that very process still
exists. A pid reused by another process after a reboot or a wrap-around does not pass:
its start time (``/proc/<pid>/stat`` on Linux) or the boot differs. A zombie (dead, not
yet reaped by its parent) counts as dead.

A store written on another machine cannot be asked about this way; there the server's
status heartbeat (written about once a second by ``sheaf server``) decides, and a store
with neither is interrupted: nothing shows that anyone is still writing it. (SQLite's WAL
mode needs the writer and its readers on one machine anyway.)

Example:
    >>> import os
    >>> me = writer_identity()
    >>> me["pid"] == os.getpid(), process_alive(me)
    (True, True)
    >>> run_state({"status": "running", "writer": me}).value
    'running'
    >>> run_state({"status": "running", "writer": {**me, "pid": 0}}).value
    'interrupted'
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

__all__ = ["STALE_AFTER", "RunState", "process_alive", "run_state", "writer_identity"]

#: A server heartbeat older than this many seconds means the server is not running
#: (``sheaf server`` refreshes it about every second).
STALE_AFTER = 15.0


class RunState(Enum):
    """Where a run stands, as ``sheaf runs``, ``sheaf status`` and the dashboard say it."""

    #: the writer marked it finished after its last round (or found nothing left to run)
    FINISHED = "finished"
    #: the process that writes it is alive (same machine), or its heartbeat is fresh
    RUNNING = "running"
    #: it stopped before its last round (Ctrl-C, a crash, ``kill -9``); the same command resumes it
    INTERRUPTED = "interrupted"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _boot_id() -> str:
    return (_read("/proc/sys/kernel/random/boot_id") or "").strip()


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """``(state, start time in clock ticks since boot)`` from ``/proc/<pid>/stat``, or None."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def writer_identity() -> dict[str, Any]:
    """Who the current process is, in the form :func:`process_alive` checks later.

    Returns:
        ``host``, ``boot`` (Linux's boot id, else empty), ``pid``, ``start`` (the process's
        start in clock ticks since boot on Linux, else empty) and ``since`` (now, epoch seconds).
    """
    pid = os.getpid()
    stat = _proc_stat(pid)
    return {
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "pid": pid,
        "start": stat[1] if stat else "",
        "since": time.time(),
    }


def process_alive(identity: Mapping[str, Any]) -> bool | None:
    """Whether the process ``identity`` describes is still running.

    Returns:
        True or False where this machine can tell; None for a process of another machine
        (or a description without a pid).
    """
    pid = identity.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return None
    if identity.get("host") != socket.gethostname():
        return None
    boot = str(identity.get("boot") or "")
    if boot and _boot_id() and boot != _boot_id():
        return False  # the machine restarted since: every process of that boot is gone
    if pid <= 0:
        return False
    stat = _proc_stat(pid)
    if stat is not None:
        state, start = stat
        recorded = str(identity.get("start") or "")
        return state not in ("Z", "X") and (not recorded or recorded == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    except OSError:
        return None
    return not Path("/proc").is_dir()  # with /proc present, a missing entry means no such process


def _heartbeat_fresh(meta: Mapping[str, Any], now: float) -> bool:
    server = meta.get("server")
    if not isinstance(server, Mapping) or server.get("state") in ("finished", "stopped"):
        return False
    updated = server.get("updated")
    return isinstance(updated, int | float) and now - float(updated) < STALE_AFTER


def run_state(meta: Mapping[str, Any], *, now: float | None = None) -> RunState:
    """Whether the run whose store meta is ``meta`` is finished, running or interrupted.

    Args:
        meta: the run store's meta entries (:attr:`~sheaf.run.store.RunStore.meta`).
        now: the current time (epoch seconds), for the heartbeat of another machine's server.
    """
    if meta.get("status") == "finished":
        return RunState.FINISHED
    now = time.time() if now is None else now
    server = meta.get("server")
    if isinstance(server, Mapping) and server.get("state") == "stopped":
        return RunState.INTERRUPTED
    writer = meta.get("writer")
    if not isinstance(writer, Mapping) and isinstance(server, Mapping):
        writer = {"pid": server.get("pid"), "host": socket.gethostname()} if "pid" in server else None
    alive = process_alive(writer) if isinstance(writer, Mapping) else None
    if alive is None:
        alive = _heartbeat_fresh(meta, now)
    if alive and meta.get("status") != "interrupted":
        return RunState.RUNNING
    return RunState.INTERRUPTED
