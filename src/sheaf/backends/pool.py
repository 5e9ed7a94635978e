"""PoolBackend: a few long-lived worker processes, each training many clients with one model.

Each worker is a fresh process — forked from a clean ``forkserver`` that imported torch
and sheaf once (never a fork of the threaded parent; ``spawn`` where there is no
forkserver) — that loads the task once, fixes its torch threads, and then trains whichever
clients it is given
with :func:`~sheaf.task.client.fit_client` — the same function the inline backend runs, so
the results are bit-identical. Nothing is copied per client, nor is the data copied for the
workers: they map the very pages of shared memory the federation was built in
(:mod:`sheaf.data.shared`; arrays built elsewhere are copied there once), and the round's
params sit in a shared block rewritten once per round. Work is handed out in shrinking
chunks (a worker that finishes early takes more), and replies come back as JSON + raw
tensors, never pickle. Central evaluation runs in the workers too, shard by shard
(:mod:`sheaf.evaluation.central`).

When the strategy needs only the weighted sum of the updates (FedAvg, FedProx, ...), each
worker adds its clients' updates into an exact sum (:class:`~sheaf.core.exactsum.ExactSum`)
and sends that once per round; exact sums do not depend on grouping, so the model is still
bit-identical to the inline backend's.

Which worker runs which clients, and what a crash or a hang costs, is decided by
:mod:`sheaf.backends._scheduler`, the same as for Ray; the pool only carries the work
(:class:`~sheaf.backends._process.PoolTransport`: processes, pipes and shared memory).
Each client's reply comes through the pipe as soon as the client is done, so when a worker
dies (a crash, the OOM killer, ``kill -9``) the client it was training is known, and only
that client fails.

Example:
    >>> PoolBackend(workers=2).name
    'pool'
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from sheaf.backends._collect import evaluate_central_shards, evaluate_clients, fit_cohort
from sheaf.backends._process import PoolTransport, WorkerHandle, pool_context, start_forkserver
from sheaf.backends._runner import round_header
from sheaf.backends._shared import SharedArrays, SharedData, federation_arrays, share_arrays
from sheaf.backends._wire import pack
from sheaf.backends.base import BackendBase, Cohort, EvalOutcome, FitOutcome, SimulationEnv
from sheaf.core.config import EngineConfig
from sheaf.core.errors import BackendError
from sheaf.core.params import Params
from sheaf.task.base import EvalResult, prepare_worker
from sheaf.task.device import cuda_count, worker_devices

__all__ = ["WORKERS_PER_GPU", "PoolBackend", "default_workers", "warm_up"]

logger = logging.getLogger("sheaf.backends")

_START_TIMEOUT = 300.0  # seconds a new worker may take to import torch and load the task


#: Pool workers per GPU by default: while one waits for its GPU, another prepares work.
WORKERS_PER_GPU = 2


def default_workers(threads: int = 1, device: str = "cpu") -> int:
    """One worker per available core, divided by the torch threads each one uses; on GPUs
    (``cuda``: all of them, ``cuda:N``: that one) :data:`WORKERS_PER_GPU` per GPU, as
    far as the cores go."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    by_cores = max(1, cores // max(1, threads))
    if device.startswith("cuda"):
        gpus = len(set(worker_devices(device, max(1, cuda_count()))))
        return max(1, min(by_cores, WORKERS_PER_GPU * gpus))
    return by_cores


def warm_up(engine: EngineConfig, threads: int) -> None:
    """Start what a pool will need before its run knows it needs one (its forkserver), where
    a pool could run at all (two workers or more): it then starts alongside data loading
    instead of after it. Costs an idle process where the run ends up not using a pool."""
    if (engine.workers or default_workers(threads)) >= 2:
        start_forkserver()


class PoolBackend(BackendBase):
    """Runs clients in long-lived worker processes (see the module docstring).

    Args:
        workers: number of worker processes; None takes ``engine.workers`` from the
            environment, whose 0 means one per core divided by ``threads``.
        clock: the time ``engine.client_timeout`` is measured in, in seconds (a
            controllable one in tests).
    """

    name = "pool"

    def __init__(self, workers: int | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._requested = workers
        self._clock = clock
        self._env: SimulationEnv | None = None
        self._context = pool_context()
        self._workers: list[WorkerHandle] = []
        self._transport: PoolTransport | None = None
        self._data: SharedData | None = None
        self._params: SharedArrays | None = None
        self._finalizer: weakref.finalize[Any, PoolBackend] | None = None

    @property
    def workers(self) -> int:
        """How many worker processes run (or will run)."""
        if self._requested is not None:
            return self._requested
        env = self._env
        if env is not None and env.engine.workers:
            return env.engine.workers
        return default_workers(env.threads, env.device) if env is not None else default_workers()

    # Start and stop ----------------------------------------------------------------------
    def start(self, env: SimulationEnv) -> None:
        """Put the data in shared memory and start the workers; wait until they are ready.

        Raises:
            BackendError: if the task cannot be sent to a process, shared memory is short,
                or a worker cannot load the task.
        """
        self._env = env
        devices = worker_devices(env.device, self.workers)
        prepare_worker(env.task, env.threads, devices[0])  # central evaluation's fallback runs here: the same
        try:
            task_bytes = pickle.dumps((env.task, env.client_steps))
        except Exception as exc:
            raise BackendError(
                f"the pool backend sends the task and client steps to worker processes, but they cannot be pickled "
                f"({exc}); build them from module-level functions (no lambdas or local functions), or use backend=inline"
            ) from None
        fed = env.federation
        self._data = share_arrays(federation_arrays(fed))
        args = (task_bytes, self._data.files, self._data.slots, fed.info, env.seed, env.threads)
        transport = self._transport = PoolTransport(self._context, args, self._workers, sorted(set(devices)))
        self._finalizer = weakref.finalize(self, PoolBackend._cleanup, self._workers, [])
        for _ in range(self.workers):
            transport.start()
        deadline = time.monotonic() + _START_TIMEOUT
        try:
            while not all(w.ready for w in self._workers):
                if time.monotonic() > deadline:
                    raise BackendError(f"pool workers did not start within {_START_TIMEOUT:.0f} s")
                transport.wait(deadline - time.monotonic())
        except BackendError:
            self.close()
            raise
        transport.running = True
        logger.info("sheaf pool: %d worker processes, %d torch thread(s) each", len(self._workers), env.threads)

    @staticmethod
    def _cleanup(workers: list[WorkerHandle], blocks: list[SharedArrays | None]) -> None:
        for worker in workers:
            with contextlib.suppress(OSError, ValueError):
                worker.send(pack({"op": "stop"}))
        for worker in workers:
            worker.process.join(2)
            worker.close()
        workers.clear()
        for block in blocks:
            if block is not None:
                block.close()

    def close(self) -> None:
        """Stop the workers and free the shared memory (safe to call twice)."""
        PoolBackend._cleanup(self._workers, [self._params])
        self._data, self._params = None, None
        if self._finalizer is not None:
            self._finalizer.detach()
        self._env = None
        self._transport = None

    @property
    def running(self) -> int:
        """Worker processes running now."""
        return sum(1 for w in self._workers if w.ready)

    @property
    def threads(self) -> int:
        """Torch threads per worker."""
        return self._env.threads if self._env is not None else 1

    @property
    def transport(self) -> PoolTransport:
        """The started pool's transport.

        Raises:
            BackendError: if the backend has not been started.
        """
        if self._transport is None:
            raise BackendError("backend not started; call start(env) first")
        return self._transport

    # Work ------------------------------------------------------------------------------------
    def _publish(self, params: Params, op: str, header: dict[str, Any], arrays: Sequence[Any] = ()) -> None:
        """Write the params to shared memory and tell every worker (``round``/``params``)."""
        if self._params is None or not self._params.fits(params):
            old, self._params = self._params, SharedArrays(params)
            if old is not None:
                old.close()
            if self._finalizer is not None:
                self._finalizer.detach()
            self._finalizer = weakref.finalize(self, PoolBackend._cleanup, self._workers, [self._params])
        else:
            self._params.write(params)
        self.transport.publish(pack({**header, "op": op, "params": self._params.handle}, arrays))

    def fit(self, cohort: Cohort) -> FitOutcome:
        """Train the cohort in the workers; see the module docstring for sums and crashes."""
        header, arrays = round_header(cohort.work)
        self._publish(cohort.params, "round", header, arrays)
        timeout = self.env.engine.client_timeout or None
        rows = self.env.federation.train_counts  # the longest clients first: the workers end together
        return fit_cohort(self.transport, cohort, timeout=timeout, rows=rows, clock=self._clock)

    def evaluate(self, client_ids: Sequence[int], params: Params) -> EvalOutcome:
        """Evaluate the clients in the workers (one model per worker, params shared)."""
        self._publish(params, "params", {})
        timeout = self.env.engine.client_timeout or None
        return evaluate_clients(self.transport, client_ids, timeout=timeout, clock=self._clock)

    def evaluate_central(self, params: Params, shards: Sequence[range]) -> list[EvalResult]:
        """Evaluate the central test set's shards in the workers (the same bits as in this process)."""
        if len(shards) > 1:
            self._publish(params, "params", {})
        here = functools.partial(super().evaluate_central, params)
        timeout = self.env.engine.client_timeout or None
        return evaluate_central_shards(self.transport, shards, here, timeout=timeout, clock=self._clock)
