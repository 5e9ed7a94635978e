"""What the dashboard's pages ask for, as JSON-ready dicts read from the run stores.

Every store is opened read-only for the length of one request and closed again: SQLite's
WAL mode lets a reader in beside a running writer without blocking it, and a reader that
holds nothing open between requests never keeps the writer from checkpointing.

Everything here is data from the stores — names, metric names, failure reasons — and is
sent as JSON; the page puts it into the document as text only (never as markup).

Example:
    >>> import tempfile
    >>> from sheaf.run.simulate import simulate
    >>> folder = tempfile.mkdtemp()
    >>> _ = simulate(overrides=["rounds=2", "clients=3", "partition=iid", "fraction=1", "name=tiny",
    ...                         f"runs_dir={folder}"])
    >>> runs = RunsView(folder)
    >>> [r["name"] for r in runs.runs()]
    ['tiny']
    >>> detail = runs.run("tiny")
    >>> [r["round"] for r in detail["rounds"]], len(detail["clients"]), detail["clients"][0]["name"]
    ([1, 2], 3, '0')
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sheaf.core.errors import SheafError
from sheaf.core.toml import dumps
from sheaf.evaluation.divergence import divergence
from sheaf.evaluation.history import ClientRecord, RoundRecord
from sheaf.run.export import client_names, finite
from sheaf.run.listing import RunSummary, summarize, summarize_run
from sheaf.run.liveness import RunState
from sheaf.run.store import RunStore

__all__ = ["MAX_DROPOUT_ROWS", "RunsView", "UnknownRun"]

#: The dashboard lists this many of a run's latest dropouts (all of them are counted by reason).
MAX_DROPOUT_ROWS = 200


class UnknownRun(SheafError):
    """The page asked for a run the folder does not hold."""


def _last_evaluation(records: Sequence[RoundRecord]) -> int:
    for record in reversed(records):
        if record.federated:
            return record.round
    return 0


def _client_table(
    meta: Mapping[str, Any], evaluated: Sequence[tuple[int, ClientRecord]], fitted: Mapping[int, int]
) -> list[dict[str, Any]]:
    """One row per client: name, its data (rows, labels), what it trained on, its last evaluation."""
    names = client_names(meta)
    data = meta.get("client_data") or {}
    classes = [str(c) for c in data.get("classes", [])]
    by_id: dict[int, dict[str, Any]] = {}
    for i, name in enumerate(data.get("names", [])):
        labels = data["labels"][i] if i < len(data.get("labels", [])) else []
        by_id[i] = {
            "id": i,
            "name": str(name),
            "train": data["train"][i],
            "test": data["test"][i],
            "labels": dict(zip(classes, labels, strict=False)),
        }
    for client, examples in fitted.items():
        row = by_id.setdefault(client, {"id": client, "name": names.get(client, str(client))})
        row["trained_on"] = examples
    for _, record in evaluated:
        row = by_id.setdefault(
            record.client_id, {"id": record.client_id, "name": names.get(record.client_id, str(record.client_id))}
        )
        row["evaluated_on"] = record.num_examples
        row["metrics"] = dict(record.metrics)
    for client, name in names.items():
        by_id.setdefault(client, {"id": client, "name": name})
    return [finite(by_id[c]) for c in sorted(by_id)]


class RunsView:
    """The runs of one folder, as the dashboard shows them.

    Args:
        folder: the folder whose ``*.sqlite`` run stores are shown (and its subfolders).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._finished: dict[Path, tuple[tuple[float, float], RunSummary]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _stamp(path: Path) -> tuple[float, float]:
        """When the store and its write-ahead log last changed (a live run writes the log first)."""
        times = []
        for file in (path, path.with_name(path.name + "-wal")):
            try:
                times.append(file.stat().st_mtime_ns / 1e9)
            except OSError:
                times.append(0.0)
        return times[0], times[1]

    def summaries(self) -> list[RunSummary]:
        """Every run's summary, newest first; a finished run's is read once and kept until its file changes.

        Raises:
            SheafError: if the folder does not exist.
        """
        if not self.folder.is_dir():
            raise SheafError(f"runs folder {str(self.folder)!r} not found")
        out = []
        for path in sorted(self.folder.rglob("*.sqlite")):
            if not path.is_file():
                continue
            stamp = self._stamp(path)
            with self._lock:
                kept = self._finished.get(path)
            if kept is not None and kept[0] == stamp:
                out.append(kept[1])
                continue
            run = summarize_run(path, self.folder)
            if run.state is RunState.FINISHED and not run.error:
                with self._lock:
                    self._finished[path] = (stamp, run)
            out.append(run)
        return sorted(out, key=lambda r: (-r.created, r.name))

    def runs(self) -> list[dict[str, Any]]:
        """The runs table: one JSON-ready row per run, newest first."""
        return [finite(r.to_dict()) for r in self.summaries()]

    def path_of(self, name: str) -> Path:
        """The store of the run called ``name`` — only ever one the folder listing found.

        Raises:
            UnknownRun: if the folder holds no run of that name.
        """
        for path in self.folder.rglob("*.sqlite"):
            if path.is_file() and path.relative_to(self.folder).with_suffix("").as_posix() == name:
                return path
        raise UnknownRun(f"no run called {name!r} in {str(self.folder)!r}")

    def run(self, name: str, *, since: int = 0, clients_round: int = -1) -> dict[str, Any]:
        """One run's figures for its page.

        Args:
            name: the run's name in the folder.
            since: rounds up to this one are already on the page; only later ones are sent.
            clients_round: the round of the client table already on the page; the table is
                sent again only when a later federated evaluation replaced it.

        Raises:
            UnknownRun: if the folder holds no such run.
            StoreError: if the file is not a readable run store.
        """
        path = self.path_of(name)
        with RunStore.open(path, readonly=True) as store:
            meta = store.meta
            history = store.history()
            times = store.finished_times()
            records = list(history)
            evaluated_round = _last_evaluation(records)
            send_clients = evaluated_round != clients_round or since == 0
            evaluated = (
                store.client_records(round=evaluated_round, phase="evaluate")
                if send_clients and evaluated_round
                else []
            )
            fitted: dict[int, int] = {}
            if send_clients and records:
                for _, record in store.client_records(round=records[-1].round, phase="fit"):
                    # FedBuff: a client may have two updates in one step; it trained on both
                    fitted[record.client_id] = fitted.get(record.client_id, 0) + record.num_examples
            failures = store.failures()
        summary = summarize(name, path, meta, history, times)
        names = client_names(meta)
        finished = dict(times)
        reasons = Counter((phase, reason) for _, _, phase, reason in failures)
        out: dict[str, Any] = {
            "name": name,
            "summary": finite(summary.to_dict()),
            "rounds": [finite({**r.to_dict(), "finished": finished.get(r.round)}) for r in records if r.round > since],
            "clients_round": evaluated_round,
            "dropouts": [
                {"round": r, "client": c, "name": names.get(c, str(c)), "phase": phase, "reason": reason}
                for r, c, phase, reason in failures[-MAX_DROPOUT_ROWS:]
            ],
            "dropout_count": len(failures),
            "dropout_reasons": [
                {"phase": phase, "reason": reason, "count": n} for (phase, reason), n in reasons.most_common(20)
            ],
            "config_toml": dumps(meta.get("config", {})),
            "private": bool(meta.get("config", {}).get("privacy", {}).get("mode", "none") != "none"),
            "warning": divergence(records) or "",
            "classes": [str(c) for c in (meta.get("client_data") or {}).get("classes", [])],
            "monitor_rows": int(meta.get("config", {}).get("evaluation", {}).get("monitor", 0) or 0),
        }
        if send_clients:
            out["clients"] = _client_table(meta, evaluated, fitted)
        return out
