"""``sheaf status RUN``: where a run stands, read from its store while it runs.

The store is the server's state: committed rounds, their metrics and dropouts, and — about
once a second while a server runs — the server's live view (its address, the clients it
has heard from recently, the batch in progress) — and whether the run is securely
aggregated (``secure_aggregation``) with distributed DP (``distributed_dp``). The store is opened read-only (SQLite
WAL allows it beside the writing server), so ``sheaf status`` never disturbs a run.

Example:
    >>> import tempfile, pathlib
    >>> from sheaf.run.simulate import simulate
    >>> result = simulate(overrides=["rounds=1", "clients=3", "partition=iid", "fraction=1",
    ...                              f"runs_dir={tempfile.mkdtemp()}"])
    >>> status = run_status(result.run_path)
    >>> status["status"], status["rounds"], status["traffic"]
    ('finished', {'done': 1, 'total': 1}, {'download_bytes': 57720, 'upload_bytes': 57720})
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from sheaf.run.liveness import run_state
from sheaf.run.store import RunStore

__all__ = ["run_status"]

#: A status older than this means the server is not running (it writes about every second).
STALE_AFTER = 15.0


def _finite(values: Any) -> Any:
    if isinstance(values, float):
        return values if math.isfinite(values) else None
    if isinstance(values, dict):
        return {k: _finite(v) for k, v in values.items()}
    return values


def run_status(path: str | Path, *, now: float | None = None) -> dict[str, Any]:
    """The run's progress, clients and last metrics, as a JSON-ready dict.

    Raises:
        StoreError: if ``path`` is not a run store.
    """
    now = time.time() if now is None else now
    with RunStore.open(path, readonly=True) as store:
        meta = store.meta
        history = store.history()
        last = history.rounds_completed
        failures = [f for f in store.failures() if f[0] == last]
    names = meta.get("client_names", [])
    ids = meta.get("client_ids", list(range(len(names))))
    name_of = {int(i): str(n) for i, n in zip(ids, names, strict=False)}
    out: dict[str, Any] = {
        "run": str(path),
        "status": run_state(meta, now=now).value,  # never "running" for a dead writer
        "backend": meta.get("backend"),
        "strategy": meta.get("strategy"),
        "rounds": {"done": last, "total": meta["config"].get("rounds")},
        "clients": {"registered": meta.get("population")},
    }
    settings = meta["config"].get("asynchronous", {})
    if isinstance(settings, dict) and settings.get("enabled"):  # FedBuff: rounds are server steps
        means = [(r.fit.get("staleness_mean", math.nan), r.completed) for r in history]
        steps = [(m, n) for m, n in means if math.isfinite(m) and n > 0]
        out["asynchronous"] = _finite(
            {
                "aggregation": "FedBuff",
                "concurrency": settings.get("concurrency"),
                "buffer": settings.get("buffer"),
                "server_steps": last,
                "staleness_mean": (sum(m * n for m, n in steps) / sum(n for _, n in steps)) if steps else None,
                "staleness_max": max((r.fit.get("staleness_max", math.nan) for r in history), default=None),
                "seconds_per_step": (sum(r.seconds for r in history) / len(history)) if history else None,
            }
        )
    secagg = meta.get("secagg")
    out["secure_aggregation"] = isinstance(secagg, dict)
    out["distributed_dp"] = isinstance(secagg, dict) and secagg.get("dp") == "distributed"
    server = meta.get("server")
    if isinstance(server, dict):
        age = now - float(server.get("updated", 0.0))
        alive = server.get("state") not in ("finished", "stopped") and age < STALE_AFTER
        timeout = float(server.get("heartbeat_timeout", 30.0))
        contacts = {int(c): float(s) + max(age, 0.0) for c, s in server.get("seconds_since_contact", {}).items()}
        connected = sorted(c for c, s in contacts.items() if s <= timeout) if alive else []
        out["server"] = {
            "state": server.get("state") if alive or server.get("state") in ("finished", "stopped") else "not running",
            "address": server.get("address"),
            "pid": server.get("pid"),
            "tls": server.get("tls"),
            "updated_seconds_ago": round(age, 1),
        }
        out["clients"]["connected"] = [{"id": c, "name": name_of.get(c, str(c))} for c in connected]
        work = server.get("work")
        if alive and isinstance(work, dict):
            out["in_progress"] = work
        secagg = server.get("secagg")
        if alive and isinstance(secagg, dict):  # a protocol stage after training
            out["in_progress"] = {"kind": f"secure aggregation ({secagg.get('stage')})", **secagg}
    if history:
        record = history[-1]
        out["last_round"] = {
            "round": record.round,
            "sampled": record.sampled,
            "completed": record.completed,
            "failed": record.failed,
            "aggregated": record.aggregated,
            "seconds": round(record.seconds, 3),
        }
        out["central"] = _finite(dict(history.final_central))
        out["federated"] = _finite({k: dict(v) for k, v in history.final_federated.items()})
        if record.privacy:  # differential privacy: what the run has spent so far
            out["privacy"] = _finite(dict(record.privacy))
        if out["secure_aggregation"]:  # whose inputs the last secure sum held
            out["last_round"]["secagg_survivors"] = record.fit.get("secagg_survivors")
            out["last_round"]["secagg_dropped"] = record.fit.get("secagg_dropped")
        counted = [r.traffic for r in history if r.traffic]
        if counted:  # the training traffic: the last round's, and the run's so far
            out["last_round"].update({k: int(v) for k, v in record.traffic.items()})
            out["traffic"] = {
                key: int(sum(t.get(key, 0.0) for t in counted)) for key in ("download_bytes", "upload_bytes")
            }
            if "compression" in meta:
                out["compression"] = meta["compression"]
        out["dropouts"] = [
            {"client": c, "name": name_of.get(c, str(c)), "phase": phase, "reason": reason}
            for _, c, phase, reason in failures
        ]
    return out
