"""The pool backend's worker processes: how they start, what they run, how they die.

Workers fork from a clean ``forkserver`` process (spawn where there is none), load the task
once and answer the parent's messages (:mod:`sheaf.backends._runner`) until told to stop.
The parent keeps a :class:`WorkerHandle` per worker: its pipe, its process, and the clients
it has been sent but not yet answered for.

Example:
    >>> describe_exit(-9)
    'was killed by signal 9 (SIGKILL)'
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import time
from collections import deque
from typing import Any

from sheaf.backends._allocator import tune_allocator
from sheaf.backends._runner import WorkerRunner
from sheaf.backends._shared import attach
from sheaf.backends._wire import fit_states, pack, unpack
from sheaf.core.params import Params
from sheaf.data.dataset import DatasetInfo, Federation, Split

__all__ = ["WorkerHandle", "describe_exit", "pool_context", "worker_main"]


def pool_context() -> Any:
    """A forkserver context with torch and sheaf preloaded (spawn where there is none).

    The forkserver is one clean, single-threaded process per parent: workers fork from it in
    milliseconds instead of importing torch for seconds, and forking it is safe where forking
    the parent (which may run torch threads) is not.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover - Windows
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["sheaf.backends._process", "torch"])
    return context


def describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def worker_main(
    conn: multiprocessing.connection.Connection,
    task_bytes: bytes,
    data: dict[str, Any],
    info: DatasetInfo,
    seed: int,
    threads: int,
) -> None:
    """A pool worker: load the task once, then answer messages until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    try:
        tune_allocator()
        task, client_steps = pickle.loads(task_bytes)  # from the parent process, which pickled them
        _, arrays = attach(data, writable=True)
        x, y = arrays["x"], arrays["y"]
        federation = Federation(info, x, y, arrays["offsets"], arrays["train_counts"], Split(x[:0], y[:0]))
        runner = WorkerRunner(task, federation, seed, threads, client_steps)
    except BaseException as exc:
        conn.send_bytes(pack({"op": "error", "reason": f"{type(exc).__name__}: {exc}"}))
        return
    conn.send_bytes(pack({"op": "ready", "pid": os.getpid()}))
    blocks: dict[str, dict[str, Any]] = {}
    while True:
        try:
            header, arrays_in = unpack(conn.recv_bytes())
        except EOFError:
            return
        op = header["op"]
        if op == "stop":
            return
        if op in ("round", "params"):
            handle = header["params"]
            if handle["name"] not in blocks:
                blocks = {handle["name"]: attach(handle)[1]}  # the old block was replaced
            params = Params(blocks[handle["name"]])
            if op == "round":
                runner.begin_round(header, arrays_in, params)
            else:
                runner.set_params(params)
        elif op == "fit":
            states = fit_states(header["states"], arrays_in)
            for client in header["clients"]:
                conn.send_bytes(runner.fit([client], states)[0])
        elif op == "evaluate":
            for reply in runner.evaluate(header["clients"]):
                conn.send_bytes(reply)
        elif op == "flush":
            conn.send_bytes(runner.flush())


class WorkerHandle:
    """The parent's view of one worker process."""

    def __init__(self, context: Any, index: int, args: tuple[Any, ...]) -> None:
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=worker_main, args=(child, *args), name=f"sheaf-pool-{index}", daemon=True)
        self.process.start()
        child.close()
        self.index = index
        self.ready = False
        self.pending: deque[int] = deque()  # clients sent, not yet answered, in order
        self.summed: list[int] = []  # clients whose updates sit in its unsent partial sum
        self.flushing = False
        self.since = time.monotonic()  # when its current client started

    def send(self, message: bytes) -> None:
        self.conn.send_bytes(message)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
