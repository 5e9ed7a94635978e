"""The runs in a folder, one summary each: what ``sheaf runs`` prints and the dashboard lists.

Every ``*.sqlite`` run store under the folder — simulations and ``sheaf server`` runs
alike — is opened read-only (WAL mode: a running writer is never blocked) and summarised:
its name, key settings, rounds done of those planned, whether it is finished, running or
interrupted (:mod:`sheaf.run.liveness`), and its headline figures. A file that is not a
run store is listed with the reason, not skipped in silence.

Example:
    >>> import tempfile
    >>> from sheaf.run.simulate import simulate
    >>> folder = tempfile.mkdtemp()
    >>> _ = simulate(overrides=["rounds=1", "clients=3", "partition=iid", "fraction=1", "name=tiny",
    ...                         f"runs_dir={folder}"])
    >>> [(r.name, r.rounds_done, r.rounds_planned, r.state.value) for r in list_runs(folder)]
    [('tiny', 1, 1, 'finished')]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sheaf.core.errors import SheafError
from sheaf.evaluation.history import History
from sheaf.run.liveness import RunState, run_state
from sheaf.run.store import RunStore

__all__ = ["RunSummary", "list_runs", "run_name", "summarize", "summarize_run"]


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


@dataclass(frozen=True)
class RunSummary:
    """One run at a glance.

    Attributes:
        name: the store's path under the folder, without ``.sqlite`` (``myrun``, ``sub/myrun``).
        path: the run store.
        state: finished, running or interrupted.
        dataset: the dataset it trains on.
        strategy: its strategy (with privacy, the private variant's name).
        rounds_done: rounds committed.
        rounds_planned: rounds the config asks for.
        central_accuracy: the global model's accuracy on the full central test set after
            the last round (None before it is known: a monitoring subset never stands in).
        worst10: the mean accuracy of the worst 10% of clients at the last federated
            evaluation (None without one).
        epsilon: the privacy spent so far (None without differential privacy, or infinite).
        wall_seconds: from the store's creation to its last committed round.
        created: when the store was created (epoch seconds).
        updated: when its last round was committed (epoch seconds; ``created`` before any).
        settings: key settings (population, partition, sampling fraction, backend, privacy, seed).
        error: why the file could not be read as a run store (every other field then empty).
    """

    name: str
    path: Path
    state: RunState = RunState.INTERRUPTED
    dataset: str = ""
    strategy: str = ""
    rounds_done: int = 0
    rounds_planned: int = 0
    central_accuracy: float | None = None
    worst10: float | None = None
    epsilon: float | None = None
    wall_seconds: float | None = None
    created: float = 0.0
    updated: float = 0.0
    settings: Mapping[str, Any] = field(default_factory=dict)
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``state`` as its word, ``path`` as text)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "status": self.state.value,
            "dataset": self.dataset,
            "strategy": self.strategy,
            "rounds_done": self.rounds_done,
            "rounds_planned": self.rounds_planned,
            "central_accuracy": self.central_accuracy,
            "worst10": self.worst10,
            "epsilon": self.epsilon,
            "wall_seconds": self.wall_seconds,
            "created": self.created,
            "updated": self.updated,
            "settings": dict(self.settings),
            "error": self.error,
        }


def run_name(path: Path, folder: Path) -> str:
    """The name a run goes by in a folder: its relative path without ``.sqlite``."""
    try:
        relative = path.relative_to(folder)
    except ValueError:
        relative = Path(path.name)
    return relative.with_suffix("").as_posix()


def _settings(config: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    data = config.get("data", {})
    strategy = config.get("strategy", {})
    privacy = config.get("privacy", {})
    return {
        "clients": meta.get("population", data.get("clients")),
        "partition": data.get("partition"),
        "alpha": data.get("alpha") if data.get("partition") == "dirichlet" else None,
        "fraction": strategy.get("fraction"),
        "backend": meta.get("backend"),
        "privacy": privacy.get("mode", "none"),
        "seed": config.get("seed"),
        "lr": config.get("train", {}).get("lr"),
        "epochs": config.get("train", {}).get("epochs"),
    }


def summarize(
    name: str, path: Path, meta: Mapping[str, Any], history: History, times: list[tuple[int, float]]
) -> RunSummary:
    """A run's summary from what its store holds (see :func:`summarize_run`)."""
    config = meta.get("config", {})
    created = float(meta.get("created", 0.0))
    updated = times[-1][1] if times else created
    last = history[-1] if len(history) else None
    central = _number(last.central.get("accuracy")) if last is not None else None
    fairness = history.final_federated.get("accuracy", {})
    return RunSummary(
        name=name,
        path=path,
        state=run_state(meta),
        dataset=str(meta.get("dataset", config.get("data", {}).get("dataset", ""))),
        strategy=str(meta.get("strategy", config.get("strategy", {}).get("name", ""))),
        rounds_done=history.rounds_completed,
        rounds_planned=int(config.get("rounds", 0)),
        central_accuracy=central,
        worst10=_number(fairness.get("p10")),
        epsilon=_number(history.final_privacy.get("epsilon")),
        wall_seconds=(updated - created) if times else None,
        created=created,
        updated=updated,
        settings=_settings(config, meta),
    )


def summarize_run(path: str | Path, folder: str | Path | None = None) -> RunSummary:
    """Summarise one run store, read-only.

    Args:
        path: the run's ``.sqlite`` file.
        folder: the folder its name is relative to (default: the file's own folder).

    Returns:
        The summary; for a file that is not a readable run store, one whose ``error`` says why.
    """
    path = Path(path)
    name = run_name(path, Path(folder) if folder is not None else path.parent)
    try:
        with RunStore.open(path, readonly=True) as store:
            meta, history, times = store.meta, store.history(), store.finished_times()
    except SheafError as exc:
        return RunSummary(name, path, error=str(exc))
    except Exception as exc:  # a store half-written by another version, a locked file system...
        return RunSummary(name, path, error=f"cannot read {str(path)!r}: {type(exc).__name__}: {exc}")
    return summarize(name, path, meta, history, times)


def list_runs(folder: str | Path) -> list[RunSummary]:
    """Every run store under ``folder`` (and its subfolders), newest first.

    Raises:
        SheafError: if ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SheafError(f"runs folder {str(folder)!r} not found; pass the folder your runs are in (default runs/)")
    runs = [summarize_run(path, folder) for path in sorted(folder.rglob("*.sqlite")) if path.is_file()]
    return sorted(runs, key=lambda r: (-r.created, r.name))
