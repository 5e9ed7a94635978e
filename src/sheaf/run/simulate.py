"""``sheaf.simulate``: everything the ``sheaf simulate`` command does, as one function.

Example:
    >>> import tempfile
    >>> result = simulate(overrides=["rounds=2", "clients=5", "partition=iid", "fraction=1",
    ...                              f"runs_dir={tempfile.mkdtemp()}"])
    >>> result.history.rounds_completed, result.summary()["rounds"]
    (2, 2)
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sheaf.backends.auto import describe_backend
from sheaf.backends.base import Backend, SimulationEnv
from sheaf.backends.pool import warm_up
from sheaf.backends.registry import build_backend
from sheaf.core.config import RunConfig, apply_overrides, load_config
from sheaf.core.params import Params
from sheaf.data.catalog import build_federation, dataset_defaults
from sheaf.data.dataset import Federation
from sheaf.data.dtypes import conform_federation
from sheaf.data.summary import client_data
from sheaf.evaluation.history import History
from sheaf.evaluation.traffic import traffic_totals
from sheaf.run.assemble import assemble, open_or_create_store
from sheaf.run.buffered import run_buffered
from sheaf.run.loop import Federated, RoundListener, run_rounds
from sheaf.run.store import RunStore
from sheaf.strategies.base import Strategy
from sheaf.task.base import Task
from sheaf.task.device import resolve_device
from sheaf.task.factory import build_task

__all__ = ["SimulationResult", "load_run_config", "resolve_config", "simulate"]


def _clean(value: Any) -> Any:
    """NaN/inf become None so the result is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class SimulationResult:
    """What a simulation produced.

    Attributes:
        config: the config that ran.
        history: one record per round.
        params: the final global params.
        run_path: the run's SQLite store.
        wall_seconds: wall time of this call (set-up, rounds and evaluation).
        backend: the backend that ran the clients (``auto`` says which it chose).
    """

    config: RunConfig
    history: History
    params: Params
    run_path: Path
    wall_seconds: float
    backend: str = ""

    def summary(self) -> dict[str, Any]:
        """The figures ``sheaf simulate --json`` prints (NaN shown as null)."""
        central = self.history.final_central
        federated = self.history.final_federated
        summary: dict[str, Any] = _clean(
            {
                "rounds": self.history.rounds_completed,
                "central_accuracy": central.get("accuracy", math.nan),
                "central_loss": central.get("loss", math.nan),
                "federated_accuracy": dict(federated.get("accuracy", {})),
                "federated_loss": dict(federated.get("loss", {})),
                "wall_seconds": round(self.wall_seconds, 3),
                "run_path": str(self.run_path),
                "dataset": self.config.data.dataset,
                "strategy": self.config.strategy.name,
                "backend": self.backend or self.config.backend,
                "clients": self.config.data.clients,
                "seed": self.config.seed,
            }
        )
        personal = federated.get("personalized_accuracy")
        if personal:
            summary["personalized_accuracy"] = _clean(dict(personal))
        privacy = self.history.final_privacy
        keys = ("epsilon", "delta", "noise_multiplier", "clip", "epsilon_server")
        summary.update(_clean({key: privacy[key] for key in keys if key in privacy}))
        if self.config.devices.enabled and len(self.history):
            summary["virtual_hours"] = round(self.history[-1].virtual_seconds / 3600, 4)
        if self.config.asynchronous.enabled:
            summary["asynchronous"] = {
                "concurrency": self.config.asynchronous.concurrency,
                "buffer": self.config.asynchronous.buffer,
                "staleness_mean": _clean(self.history[-1].fit.get("staleness_mean")) if len(self.history) else None,
            }
        if self.config.secagg.enabled:
            summary["secure_aggregation"] = True
            summary["distributed_dp"] = self.config.secagg.dp == "distributed"
        summary.update(traffic_totals(self.history))  # download_bytes, upload_bytes: the run's training traffic
        compression = self.config.compression
        if compression.encoder != "none" or compression.download != "none":
            summary["compression"] = {"encoder": compression.encoder, "download": compression.download}
        return summary


def load_run_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """A run's config from a TOML file (or none) and ``key=value`` overrides, on top of the
    chosen dataset's own defaults (``sheaf datasets``; e.g. heart's small model and learning
    rate): what the file or the overrides set wins.

    Example:
        >>> cfg = load_run_config(overrides=["dataset=heart", "rounds=5"])
        >>> cfg.rounds, cfg.train.lr, cfg.data.partition, cfg.model.hidden
        (5, 0.01, 'natural', (16,))

    Raises:
        ConfigError: if the file is missing or not valid TOML, or any setting is invalid.
    """
    return load_config(path, overrides, defaults=dataset_defaults)


def resolve_config(config: RunConfig | str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """A RunConfig from a config object (taken as it is), a TOML path or the defaults (both
    on top of the dataset's own defaults, :func:`load_run_config`), with overrides applied."""
    if isinstance(config, RunConfig):
        return RunConfig.from_dict(apply_overrides(config.to_dict(), overrides))
    return load_run_config(config, overrides)


def _run_path(config: RunConfig) -> Path:
    folder = Path(config.runs_dir)
    if config.name:
        return folder / f"{config.name}.sqlite"
    stem = f"{config.data.dataset}-{config.strategy.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = folder / f"{stem}.sqlite", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.sqlite"
    return path


def _mark_interrupted(store: RunStore) -> None:
    """Say in the store that the run stopped early (Ctrl-C, an error), if the store still can."""
    try:
        if store.meta.get("status") != "finished":
            store.set_meta("status", "interrupted")
    except Exception:  # the store itself may be what failed; the original error matters more
        pass


def simulate(
    config: RunConfig | str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    task: Task | None = None,
    federation: Federation | None = None,
    strategy: Strategy | None = None,
    backend: Backend | None = None,
    listener: RoundListener | None = None,
) -> SimulationResult:
    """Run a federated simulation and record it in a run store.

    With no arguments this is the quickstart: digits over 20 clients (Dirichlet 0.5), FedAvg.
    A named run (``name=...``) whose store exists with the same config is resumed.

    Args:
        config: a RunConfig, a TOML file, or None for the defaults.
        overrides: ``key=value`` settings applied on top (e.g. ``"rounds=10"``).
        task: use this task instead of the one the config names.
        federation: use this data instead of building it from the config.
        strategy: use this strategy (e.g. your own chain) instead of ``config.strategy.name``;
            sampling still follows ``config.strategy``.
        backend: use this (unstarted) backend instead of the configured one.
        listener: receives progress (the CLI passes its progress bar).

    Returns:
        The history, final params and where the run is stored.

    Raises:
        SheafError: on any invalid setting, dataset, task or store (one clear message).
    """
    started = time.perf_counter()
    cfg = resolve_config(config, overrides)
    runner = backend if backend is not None else build_backend(cfg.backend)
    if runner.name in ("pool", "auto"):
        warm_up(cfg.engine, cfg.threads)  # the pool's forkserver imports torch while the data loads
    fed = federation if federation is not None else build_federation(cfg.data, cfg.seed)
    fed = conform_federation(fed)  # float32 features, int64 labels: cast if safe, else one line now
    user_task = task if task is not None else build_task(cfg, fed.info)
    parts = assemble(
        cfg, population=fed.num_clients, task=user_task, strategy=strategy, num_classes=fed.info.num_classes
    )
    meta = {
        **parts.meta,
        "dataset": fed.info.name,
        "backend": runner.name,
        "client_names": list(fed.client_names),
    }
    if fed.preprocessing:
        meta["preprocessing"] = dict(fed.preprocessing)  # the (fitted) pipeline, JSON
    described = client_data(fed)
    if described is not None:  # each client's rows and labels, for the report and dashboard
        meta["client_data"] = described
    device = resolve_device(cfg.engine.device)  # after the task: "auto" looks for a GPU where torch is loaded
    path = _run_path(cfg)
    store = open_or_create_store(path, cfg, parts.initial, parts.strategy.init(parts.initial), meta)
    store.set_meta("device", device)
    env = SimulationEnv(parts.task, fed, cfg.seed, cfg.threads, cfg.engine, parts.cohort, parts.client_steps, device)
    told = getattr(listener, "on_store", None)  # optional: where the run is stored
    if callable(told):
        told(path)
    try:
        runner.start(env)
        try:
            used, why = describe_backend(runner)
            store.set_meta("backend", used)
            store.set_meta("backend_reason", why)
            announce = getattr(listener, "on_backend", None)  # optional: tell the user what runs
            if callable(announce):
                announce(used, why)
            run = run_buffered if cfg.asynchronous.enabled else run_rounds
            history, params = run(Federated(cfg, parts.task, fed, parts.strategy, runner, store), listener)
        finally:
            runner.close()
        store.set_meta("status", "finished")
    except BaseException:
        _mark_interrupted(store)
        raise
    finally:
        store.close()
    return SimulationResult(cfg, history, params, path, time.perf_counter() - started, used)
