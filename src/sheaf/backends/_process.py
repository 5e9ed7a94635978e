"""The pool backend's worker processes: how they start, what they run, how they die.

Workers fork from a clean ``forkserver`` process (spawn where there is none), load the task
once and answer the parent's messages (:mod:`sheaf.backends._runner`) until told to stop.
The parent keeps a :class:`WorkerHandle` per worker: its pipe, its process, and a thread
that writes to the pipe, so that sending a large message never waits for a worker that is
itself waiting to send a large reply (both would wait for ever). :class:`PoolTransport` is
the scheduler's view of them (:class:`~sheaf.backends._scheduler.Transport`): start, send,
wait for replies and deaths, kill.

Example:
    >>> describe_exit(-9)
    'was killed by signal 9 (SIGKILL)'
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import signal
import threading
from collections.abc import Sequence
from typing import Any

from sheaf.backends._allocator import tune_allocator
from sheaf.backends._runner import WorkerRunner
from sheaf.backends._scheduler import Died, Event, Replied
from sheaf.backends._shared import attach, federation_from
from sheaf.backends._wire import fit_states, pack, unpack
from sheaf.core.errors import BackendError
from sheaf.core.params import Params
from sheaf.data.dataset import DatasetInfo
from sheaf.data.shared import InheritedFile, SharedSlot, map_arrays

__all__ = ["PoolTransport", "WorkerHandle", "describe_exit", "pool_context", "start_forkserver", "worker_main"]

logger = logging.getLogger("sheaf.backends")


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


def start_forkserver() -> None:
    """Start the pool's forkserver now, if it is not running: it imports torch and sheaf in its
    own process (seconds), so while this process loads its data, and a pool started later
    finds it ready."""
    context = pool_context()
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


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
    files: list[InheritedFile],
    slots: list[SharedSlot],
    info: DatasetInfo,
    seed: int,
    threads: int,
    device: str,
) -> None:
    """A pool worker: load the task once, then answer messages until told to stop.

    The federation's arrays are the parent's own pages (``files``, passed as descriptors),
    mapped copy-on-write: writable with the parent's strides, as the inline backend sees
    them, because TorchTask copies read-only data and the copy's strides would change its
    kernels.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    try:
        tune_allocator()
        task, client_steps = pickle.loads(task_bytes)  # from the parent process, which pickled them
        federation = federation_from(info, map_arrays(files, slots))
        runner = WorkerRunner(task, federation, seed, threads, client_steps, device)
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
        elif op == "central":
            for reply in runner.evaluate_central(header["shards"]):
                conn.send_bytes(reply)
        elif op == "flush":
            conn.send_bytes(runner.flush())


class WorkerHandle:
    """The parent's view of one worker process: its pipe, its process, its writer thread."""

    def __init__(self, context: Any, index: int, args: tuple[Any, ...], device: str = "cpu") -> None:
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(
            target=worker_main, args=(child, *args, device), name=f"sheaf-pool-{index}", daemon=True
        )
        self.process.start()
        child.close()
        self.index = index
        self.device = device
        self.ready = False
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, name=f"sheaf-pool-{index}-writer", daemon=True)
        self._writer.start()

    def _write(self) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                self.conn.send_bytes(message)
            except (OSError, ValueError, TypeError):
                return  # the worker is gone: its sentinel says so to whoever waits on it

    def send(self, message: bytes) -> None:
        """Queue a message for the worker, in order; returns at once."""
        self._outbox.put(message)

    def kill(self) -> None:
        """Kill the process if it still runs, and wait for it."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)

    def close(self) -> None:
        """Kill the process, stop the writer, close the pipe (in that order: a write in
        progress fails on the dead pipe instead of meeting a reused file descriptor)."""
        self.kill()
        self._outbox.put(None)
        self._writer.join(5)
        self.conn.close()


class PoolTransport:
    """The pool's side of the scheduler (:class:`~sheaf.backends._scheduler.Transport`): worker
    processes and their pipes.

    Args:
        context: the multiprocessing context workers start from.
        args: what each worker is started with (see :func:`worker_main`), but its device.
        workers: the list to keep the worker handles in (ready and starting ones).
        devices: the devices workers compute on; each new worker takes the one fewest
            workers use (a replacement takes its predecessor's).
    """

    replies_per_client = True  # a worker writes each client's reply before the next client

    def __init__(
        self, context: Any, args: tuple[Any, ...], workers: list[WorkerHandle], devices: Sequence[str] = ("cpu",)
    ) -> None:
        self._context = context
        self._args = args
        self._devices = list(devices)
        self.handles = workers
        self.control = b""  # the round (or params) message a new worker must see first
        self.running = False  # all first workers started: later start failures are not fatal
        self._started = 0

    def live(self) -> list[int]:
        """The workers ready for work (not one that died since the last wait, as far as can be seen)."""
        return [w.index for w in self.handles if w.ready and w.process.is_alive()]

    def start(self) -> None:
        """Start a worker process (ready once it has loaded the task)."""
        self._started += 1
        device = min(self._devices, key=lambda d: sum(1 for h in self.handles if h.device == d))
        self.handles.append(WorkerHandle(self._context, self._started, self._args, device))

    def send(self, worker: int, message: bytes) -> None:
        """Queue a message for a worker (nothing if it is gone)."""
        for handle in self.handles:
            if handle.index == worker:
                handle.send(message)

    def publish(self, control: bytes) -> None:
        """Send a ``round``/``params`` message to every ready worker, and to each new one."""
        self.control = control
        for handle in self.handles:
            if handle.ready:
                handle.send(control)

    def kill(self, worker: int) -> None:
        """Kill a worker and forget it (nothing if it is gone)."""
        for handle in [h for h in self.handles if h.index == worker]:
            self.handles.remove(handle)
            handle.close()

    def wait(self, timeout: float | None) -> list[Event]:
        """Replies and deaths within ``timeout`` seconds; new workers become ready here.

        Raises:
            BackendError: if no worker is left, or (before the pool runs, or when none is
                ready) a worker could not start.
        """
        if not self.handles:
            raise BackendError("every pool worker died and none could be started")
        waitables: dict[Any, WorkerHandle] = {}
        for handle in self.handles:
            waitables[handle.conn] = handle
            waitables[handle.process.sentinel] = handle
        ready = multiprocessing.connection.wait(list(waitables), None if timeout is None else max(timeout, 0.0))
        events: list[Event] = []
        for handle in {id(waitables[w]): waitables[w] for w in ready}.values():
            why = ""
            try:
                while handle.conn.poll():
                    message = handle.conn.recv_bytes()
                    if handle.ready:
                        events.append(Replied(handle.index, message))
                    else:
                        why = self._hello(handle, message)
            except (EOFError, OSError):
                pass
            if not why and handle.process.is_alive():
                continue
            self.kill(handle.index)
            if handle.ready:
                events.append(
                    Died(handle.index, f"the worker process running it {describe_exit(handle.process.exitcode)}")
                )
                continue
            # A worker that never became ready: the task cannot be loaded, or the machine is
            # out of something. At start that is one clear error; mid-run the others go on.
            why = why or f"a pool worker {describe_exit(handle.process.exitcode)} while starting"
            if not self.running or not any(h.ready for h in self.handles):
                raise BackendError(why)
            logger.warning("sheaf pool: a new worker failed to start (%s); going on with %d", why, len(self.handles))
        return events

    def _hello(self, handle: WorkerHandle, message: bytes) -> str:
        """A starting worker's first message: ready (then it gets the control message) or why not."""
        try:
            header, _ = unpack(message)
        except BackendError as exc:
            return f"a pool worker sent a malformed first message: {exc}"
        if header.get("op") != "ready":
            return f"a pool worker could not load the task: {header.get('reason')}"
        handle.ready = True
        if self.control:
            handle.send(self.control)
        return ""
