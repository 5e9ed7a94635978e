"""PoolBackend: a few long-lived worker processes, each training many clients with one model.

Each worker is a fresh process — forked from a clean ``forkserver`` that imported torch
and sheaf once (never a fork of the threaded parent; ``spawn`` where there is no
forkserver) — that loads the task once, fixes its torch threads, and then trains whichever
clients it is given
with :func:`~sheaf.task.client.fit_client` — the same function the inline backend runs, so
the results are bit-identical. Nothing is copied per client: the federation's data sits in
one shared-memory block mapped by every worker, and the round's params in another,
rewritten once per round. Work is handed out in shrinking chunks (a worker that finishes
early takes more), and replies come back as JSON + raw tensors, never pickle.

When the strategy needs only the weighted sum of the updates (FedAvg, FedProx, ...), each
worker adds its clients' updates into an exact sum (:class:`~sheaf.core.exactsum.ExactSum`)
and sends that once per round; exact sums do not depend on grouping, so the model is still
bit-identical to the inline backend's.

A client that raises is a dropout. A worker that dies mid-round (a crash, the OOM killer,
``kill -9``) costs only the client it was training: that client is reported as failed,
the clients it had not started and those in its lost partial sum are trained again
elsewhere (training is deterministic, so the result is the same), and a new worker
replaces it. With ``engine.client_timeout``, a client that trains too long has its worker
killed the same way.

Example:
    >>> PoolBackend(workers=2).name
    'pool'
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from sheaf.backends._collect import decode_evaluation, gather_fit
from sheaf.backends._process import WorkerHandle, describe_exit, pool_context
from sheaf.backends._runner import round_header
from sheaf.backends._shared import SharedArrays
from sheaf.backends._wire import pack, unpack
from sheaf.backends.base import BackendBase, Cohort, EvalOutcome, FitOutcome, SimulationEnv
from sheaf.core.errors import BackendError, ClientFailure
from sheaf.core.params import Params
from sheaf.task.base import EvalResult, prepare_worker

__all__ = ["PoolBackend", "default_workers"]

logger = logging.getLogger("sheaf.backends")

_START_TIMEOUT = 300.0  # seconds a new worker may take to import torch and load the task


def default_workers(threads: int = 1) -> int:
    """One worker per available core, divided by the torch threads each one uses."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, threads))


class PoolBackend(BackendBase):
    """Runs clients in long-lived worker processes (see the module docstring).

    Args:
        workers: number of worker processes; None takes ``engine.workers`` from the
            environment, whose 0 means one per core divided by ``threads``.
    """

    name = "pool"

    def __init__(self, workers: int | None = None) -> None:
        self._requested = workers
        self._env: SimulationEnv | None = None
        self._context = pool_context()
        self._workers: list[WorkerHandle] = []
        self._args: tuple[Any, ...] = ()
        self._data: SharedArrays | None = None
        self._params: SharedArrays | None = None
        self._control: bytes = b""  # the round (or params) message a new worker must see first
        self._started = 0
        self._running = False  # all first workers started: later start failures are not fatal
        self._finalizer: weakref.finalize[Any, PoolBackend] | None = None

    @property
    def workers(self) -> int:
        """How many worker processes run (or will run)."""
        if self._requested is not None:
            return self._requested
        env = self._env
        if env is not None and env.engine.workers:
            return env.engine.workers
        return default_workers(env.threads if env is not None else 1)

    # Start and stop ----------------------------------------------------------------------
    def start(self, env: SimulationEnv) -> None:
        """Put the data in shared memory and start the workers; wait until they are ready.

        Raises:
            BackendError: if the task cannot be sent to a process, shared memory is short,
                or a worker cannot load the task.
        """
        self._env = env
        prepare_worker(env.task, env.threads)  # this process evaluates centrally: same threads
        try:
            task_bytes = pickle.dumps((env.task, env.client_steps))
        except Exception as exc:
            raise BackendError(
                f"the pool backend sends the task and client steps to worker processes, but they cannot be pickled "
                f"({exc}); build them from module-level functions (no lambdas or local functions), or use backend=inline"
            ) from None
        fed = env.federation
        self._data = SharedArrays({"x": fed.x, "y": fed.y, "offsets": fed.offsets, "train_counts": fed.train_counts})
        self._args = (task_bytes, self._data.handle, fed.info, env.seed, env.threads)
        self._finalizer = weakref.finalize(self, PoolBackend._cleanup, self._workers, [self._data])
        for _ in range(self.workers):
            self._spawn()
        deadline = time.monotonic() + _START_TIMEOUT
        try:
            while not all(w.ready for w in self._workers):
                if time.monotonic() > deadline:
                    raise BackendError(f"pool workers did not start within {_START_TIMEOUT:.0f} s")
                self._wait([w for w in self._workers if not w.ready], deadline - time.monotonic(), None)
        except BackendError:
            self.close()
            raise
        self._running = True
        logger.info("sheaf pool: %d worker processes, %d torch thread(s) each", len(self._workers), env.threads)

    def _spawn(self) -> WorkerHandle:
        self._started += 1
        worker = WorkerHandle(self._context, self._started, self._args)
        self._workers.append(worker)
        return worker

    @staticmethod
    def _cleanup(workers: list[WorkerHandle], blocks: list[SharedArrays | None]) -> None:
        for worker in workers:
            with contextlib.suppress(OSError, ValueError):
                worker.send(pack({"op": "stop"}))
        for worker in workers:
            worker.process.join(2)
            worker.kill()
            worker.conn.close()
        workers.clear()
        for block in blocks:
            if block is not None:
                block.close()

    def close(self) -> None:
        """Stop the workers and free the shared memory (safe to call twice)."""
        PoolBackend._cleanup(self._workers, [self._data, self._params])
        self._data = self._params = None
        if self._finalizer is not None:
            self._finalizer.detach()
        self._env = None
        self._running = False

    @property
    def running(self) -> int:
        """Worker processes running now."""
        return sum(1 for w in self._workers if w.ready)

    @property
    def threads(self) -> int:
        """Torch threads per worker."""
        return self._env.threads if self._env is not None else 1

    # Messages and worker deaths ------------------------------------------------------------
    def _publish(self, params: Params, op: str, header: dict[str, Any], arrays: Sequence[Any] = ()) -> None:
        """Write the params to shared memory and tell every ready worker (``round``/``params``)."""
        if self._params is None or not self._params.fits(params):
            old, self._params = self._params, SharedArrays(params)
            if old is not None:
                old.close()
            if self._finalizer is not None:
                self._finalizer.detach()
            self._finalizer = weakref.finalize(self, PoolBackend._cleanup, self._workers, [self._data, self._params])
        else:
            self._params.write(params)
        self._control = pack({**header, "op": op, "params": self._params.handle}, arrays)
        for worker in self._workers:
            if worker.ready:
                worker.send(self._control)

    def _wait(
        self,
        workers: list[WorkerHandle],
        timeout: float | None,
        on_message: Callable[[WorkerHandle, bytes], None] | None,
    ) -> list[tuple[WorkerHandle, str]]:
        """Wait for replies (passed to ``on_message``); returns the workers that died, and why."""
        handles: dict[Any, WorkerHandle] = {}
        for worker in workers:
            handles[worker.conn] = worker
            handles[worker.process.sentinel] = worker
        ready = multiprocessing.connection.wait(list(handles), None if timeout is None else max(timeout, 0.0))
        dead: list[tuple[WorkerHandle, str]] = []
        for worker in {id(handles[h]): handles[h] for h in ready}.values():
            why = ""
            try:
                while worker.conn.poll():
                    self._receive(worker, worker.conn.recv_bytes(), on_message)
            except (EOFError, OSError):
                pass
            except BackendError as exc:
                worker.kill()
                why = str(exc) if not worker.ready else f"its worker sent a malformed reply and was replaced ({exc})"
            if not why and worker.process.is_alive():
                continue
            worker.process.join(1)
            if worker.ready:
                dead.append((worker, why or f"the worker process running it {describe_exit(worker.process.exitcode)}"))
                continue
            # A worker that never became ready: the task cannot be loaded, or the machine is
            # out of something. At start that is one clear error; mid-run the others go on.
            why = why or f"a pool worker {describe_exit(worker.process.exitcode)} while starting"
            self._workers.remove(worker)
            worker.conn.close()
            if not self._running or not any(w.ready for w in self._workers):
                raise BackendError(why)
            logger.warning("sheaf pool: a new worker failed to start (%s); going on with %d", why, len(self._workers))
        return dead

    def _receive(
        self, worker: WorkerHandle, message: bytes, on_message: Callable[[WorkerHandle, bytes], None] | None
    ) -> None:
        if not worker.ready:
            header, _ = unpack(message)
            if header.get("op") == "error":
                worker.kill()
                raise BackendError(f"a pool worker could not load the task: {header.get('reason')}")
            worker.ready = True
            if self._control:
                worker.send(self._control)
            return
        if on_message is not None:
            on_message(worker, message)

    def _bury(self, dead: list[tuple[WorkerHandle, str]]) -> None:
        """Forget dead workers and start one new worker for each."""
        for worker, why in dead:
            if worker in self._workers:
                self._workers.remove(worker)
            worker.kill()
            worker.conn.close()
            logger.warning("sheaf pool: worker %d failed (%s); starting a new one", worker.index, why)
            self._spawn()

    # Work ------------------------------------------------------------------------------------
    def _run(
        self,
        clients: Sequence[int],
        message: Callable[[list[int]], bytes],
        reply: Callable[[bytes], tuple[int, bool]],
        add_sum: Callable[[bytes], None] | None,
        forget: Callable[[list[int]], None],
    ) -> dict[int, str]:
        """Hand ``clients`` out in shrinking chunks until every one is answered.

        Args:
            clients: the clients to run.
            message: builds the work message for a chunk of clients.
            reply: records one reply; returns its client and whether it went into a sum.
            add_sum: records a worker's partial sum (None: nothing is summed).
            forget: drops the records of clients that must run again (their sum was lost).

        Returns:
            The clients whose worker died (or timed out) while running them, and why.
        """
        timeout = self.env.engine.client_timeout or None
        queue: deque[int] = deque(clients)
        failed: dict[int, str] = {}

        def on_message(worker: WorkerHandle, data: bytes) -> None:
            if worker.flushing:
                assert add_sum is not None
                add_sum(data)
                worker.flushing, worker.summed = False, []
                return
            client, summed = reply(data)
            if client in worker.pending:
                worker.pending.remove(client)
            worker.since = time.monotonic()
            if summed:
                worker.summed.append(client)

        while True:
            live = [w for w in self._workers if w.ready]
            for worker in live:
                if queue and len(worker.pending) < 2:
                    size = max(1, min(64, -(-len(queue) // (2 * len(live)))))
                    chunk = [queue.popleft() for _ in range(min(size, len(queue)))]
                    if not worker.pending:
                        worker.since = time.monotonic()
                    worker.pending.extend(chunk)
                    worker.send(message(chunk))
                elif add_sum is not None and not queue and not worker.pending and worker.summed and not worker.flushing:
                    worker.flushing = True
                    worker.send(pack({"op": "flush"}))
            busy = [w for w in self._workers if w.pending or w.flushing or not w.ready]
            if not queue and not any(w.pending or w.flushing for w in self._workers):
                return failed
            if not busy:
                raise BackendError("every pool worker died and none could be started")
            wait = None
            if timeout is not None:
                started = [w.since for w in busy if w.pending]
                wait = min(started) + timeout - time.monotonic() if started else timeout
            dead = self._wait(busy, wait, on_message)
            if timeout is not None:
                now = time.monotonic()
                for worker in self._workers:
                    if worker.pending and now - worker.since > timeout and all(worker is not d for d, _ in dead):
                        worker.kill()
                        dead.append(
                            (
                                worker,
                                f"it ran for more than {timeout:g} s (engine.client_timeout), so its worker was killed",
                            )
                        )
            for worker, why in dead:
                if worker.pending:
                    failed[worker.pending.popleft()] = why
                forget(worker.summed)
                queue.extendleft(reversed([*worker.pending, *worker.summed]))
            self._bury(dead)

    def fit(self, cohort: Cohort) -> FitOutcome:
        """Train the cohort in the workers; see the module docstring for sums and crashes."""
        header, arrays = round_header(cohort.work)
        self._publish(cohort.params, "round", header, arrays)
        return gather_fit(cohort, self._run)

    def evaluate(self, client_ids: Sequence[int], params: Params) -> EvalOutcome:
        """Evaluate the clients in the workers (one model per worker, params shared)."""
        results: dict[int, EvalResult] = {}
        failures: dict[int, ClientFailure] = {}
        self._publish(params, "params", {})

        def reply(data: bytes) -> tuple[int, bool]:
            return decode_evaluation(data, results, failures), False

        died = self._run(
            [int(c) for c in client_ids],
            lambda chunk: pack({"op": "evaluate", "clients": chunk}),
            reply,
            None,
            lambda _: None,
        )
        for client, why in died.items():
            failures[client] = ClientFailure(client, f"evaluate failed: {why}")
        return EvalOutcome({c: results[c] for c in sorted(results)}, [failures[c] for c in sorted(failures)])
