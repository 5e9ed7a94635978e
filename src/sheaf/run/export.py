"""``sheaf export``: a run's per-round and per-client records as CSV, JSON or TensorBoard events.

Rows are flat, one column per figure, named by where the figure lives in the run's
records: ``central_accuracy``, ``monitor_accuracy``, ``fit_train_loss``,
``federated_accuracy_p10``, ``privacy_epsilon``... A metric a task logs itself
(:func:`sheaf.task.log_metrics`) gets its columns the same way. Clients carry their name
(the hospital, for heart) beside their id.

- ``csv``: ``rounds.csv``, ``clients.csv`` and ``dropouts.csv``;
- ``json``: ``run.json``, one object: the config, the run's description, every round's
  record, every client record and every dropout (NaN and infinities as ``null``);
- ``tensorboard``: an event file of scalars per round (tags ``central/accuracy``,
  ``federated/accuracy/p10``, ``privacy/epsilon``...), and the config as text; needs the
  optional extra ``pip install 'sheaf[tensorboard]'`` (tensorboardX).

Example:
    >>> import tempfile, pathlib, csv
    >>> from sheaf.run.simulate import simulate
    >>> run = simulate(overrides=["rounds=2", "clients=3", "partition=iid", "fraction=1",
    ...                           f"runs_dir={tempfile.mkdtemp()}"]).run_path
    >>> paths = export_run(run, pathlib.Path(tempfile.mkdtemp()), "csv")
    >>> [p.name for p in paths]
    ['rounds.csv', 'clients.csv', 'dropouts.csv']
    >>> rows = list(csv.DictReader(paths[0].read_text().splitlines()))
    >>> [row["round"] for row in rows], "central_accuracy" in rows[0]
    (['1', '2'], True)
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sheaf.core.errors import ConfigError, SheafError
from sheaf.core.toml import dumps
from sheaf.evaluation.history import ClientRecord, RoundRecord
from sheaf.run.store import RunStore

__all__ = ["FORMATS", "client_names", "client_rows", "export_run", "failure_rows", "finite", "round_rows"]

#: What ``sheaf export --format`` accepts.
FORMATS = ("csv", "json", "tensorboard")


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (in nested dicts and lists too) made None: valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def client_names(meta: Mapping[str, Any]) -> dict[int, str]:
    """Client id -> its readable name (the hospital), from a run store's meta; ids without one are absent."""
    names = meta.get("client_names") or []
    ids = meta.get("client_ids") or list(range(len(names)))
    return {int(i): str(n) for i, n in zip(ids, names, strict=False)}


def round_rows(records: Iterable[RoundRecord], finished: Mapping[int, float] | None = None) -> list[dict[str, Any]]:
    """One flat dict per round: its counts, then every figure as ``section_metric[_stat]``."""
    rows = []
    for r in records:
        row: dict[str, Any] = {
            "round": r.round,
            "finished": (finished or {}).get(r.round),
            "seconds": r.seconds,
            "sampled": r.sampled,
            "completed": r.completed,
            "failed": r.failed,
            "aggregated": r.aggregated,
            "note": r.note,
        }
        if r.virtual_seconds:  # a run on simulated devices ([devices]): its virtual time
            row["virtual_seconds"] = r.virtual_seconds
        for section in ("central", "monitor", "fit", "privacy", "traffic"):
            row.update({f"{section}_{k}": v for k, v in getattr(r, section).items()})
        for metric, summary in r.federated.items():
            row.update({f"federated_{metric}_{stat}": v for stat, v in summary.items()})
        rows.append(row)
    return rows


def client_rows(records: Iterable[tuple[int, ClientRecord]], names: Mapping[int, str]) -> list[dict[str, Any]]:
    """One flat dict per client record: round, client id and name, phase, examples, then its metrics."""
    return [
        {
            "round": round,
            "client": c.client_id,
            "name": names.get(c.client_id, str(c.client_id)),
            "phase": c.phase,
            "examples": c.num_examples,
            **dict(c.metrics),
        }
        for round, c in records
    ]


def failure_rows(failures: Iterable[tuple[int, int, str, str]], names: Mapping[int, str]) -> list[dict[str, Any]]:
    """One dict per dropout: round, client id and name, phase, and the recorded reason."""
    return [
        {"round": r, "client": c, "name": names.get(c, str(c)), "phase": phase, "reason": reason}
        for r, c, phase, reason in failures
    ]


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], first: Sequence[str]) -> Path:
    columns = list(first)
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _scalars(record: RoundRecord) -> dict[str, float]:
    tags: dict[str, Any] = {"round/seconds": record.seconds, "round/failed": record.failed}
    for section in ("central", "monitor", "fit", "privacy"):
        tags.update({f"{section}/{k}": v for k, v in getattr(record, section).items()})
    for metric, summary in record.federated.items():
        tags.update({f"federated/{metric}/{stat}": v for stat, v in summary.items()})
    return {
        k: float(v)
        for k, v in tags.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def _write_tensorboard(out: Path, records: Sequence[RoundRecord], finished: Mapping[int, float], config: Any) -> Path:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise SheafError(
            "exporting TensorBoard event files needs tensorboardX: pip install 'sheaf[tensorboard]'"
        ) from None
    writer = SummaryWriter(logdir=str(out), flush_secs=3600)
    try:
        writer.add_text("config", "```toml\n" + dumps(config) + "\n```", 0)
        for record in records:
            for tag, value in _scalars(record).items():
                writer.add_scalar(tag, value, record.round, walltime=finished.get(record.round))
    finally:
        writer.close()
    events = sorted(out.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    return events[-1]


def export_run(run: str | Path, out: str | Path, format: str) -> list[Path]:
    """Write a run's records into the folder ``out`` (created if needed).

    Args:
        run: the run's ``.sqlite`` store (read-only; a running run may be exported).
        out: the folder to write into.
        format: ``csv``, ``json`` or ``tensorboard``.

    Returns:
        The files written.

    Raises:
        ConfigError: on an unknown format.
        StoreError: if ``run`` is not a run store.
        SheafError: for ``tensorboard`` without tensorboardX installed.
    """
    if format not in FORMATS:
        raise ConfigError(f"export format must be one of: {', '.join(FORMATS)}; got {format!r}")
    with RunStore.open(run, readonly=True) as store:
        meta = store.meta
        history = list(store.history())
        finished = dict(store.finished_times())
        clients = store.client_records()
        failures = store.failures()
    names = client_names(meta)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    rounds = round_rows(history, finished)
    if format == "csv":
        return [
            _write_csv(folder / "rounds.csv", rounds, ["round"]),
            _write_csv(folder / "clients.csv", client_rows(clients, names), ["round", "client", "name", "phase"]),
            _write_csv(
                folder / "dropouts.csv", failure_rows(failures, names), ["round", "client", "name", "phase", "reason"]
            ),
        ]
    if format == "json":
        described = {k: v for k, v in meta.items() if k not in ("config", "writer", "server")}
        document = {
            "run": str(run),
            "config": meta.get("config", {}),
            "meta": described,
            "rounds": [{**r.to_dict(), "finished": finished.get(r.round)} for r in history],
            "clients": client_rows(clients, names),
            "dropouts": failure_rows(failures, names),
        }
        path = folder / "run.json"
        path.write_text(json.dumps(finite(document), allow_nan=False, indent=1), encoding="utf-8")
        return [path]
    return [_write_tensorboard(folder, history, finished, meta.get("config", {}))]
