"""Ray's side of the pool and Ray backends: the actor that runs clients, and the transport to it.

Each actor holds one :class:`~sheaf.backends._runner.WorkerRunner` and answers one call per
message (a chunk, an evaluation or a flush) with its replies. :class:`RayTransport` is the
scheduler's view of the actors (:class:`~sheaf.backends._scheduler.Transport`): a call's
replies come back together, when the whole chunk is done.

Example:
    >>> RayTransport(make=lambda: None).replies_per_client
    False
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from sheaf.backends._scheduler import Died, Event, Replied
from sheaf.core.errors import BackendError
from sheaf.core.params import Params

if TYPE_CHECKING:
    from sheaf.backends._runner import WorkerRunner

__all__ = ["RayTransport", "actor_class"]

logger = logging.getLogger("sheaf.backends")


def actor_class() -> Any:
    """The Ray actor class (defined on first use, so sheaf imports without Ray)."""
    import ray

    class ClientActor:
        def __init__(self, *args: Any) -> None:
            self.runner: WorkerRunner | None = None
            self.error: Exception | None = None
            if args:  # a fresh actor: a task it cannot load is its start-up's error
                self.load(*args)

        def load(
            self, task: Any, data: dict[str, Any], info: Any, seed: int, threads: int, client_steps: Any, device: str
        ) -> None:
            """Load a run's task and data: a fresh runner, as in a new actor (also a kept actor's next run)."""
            from sheaf.backends._allocator import tune_allocator
            from sheaf.backends._runner import WorkerRunner
            from sheaf.backends._shared import federation_from, writable_copy
            from sheaf.data.shared import map_arrays, open_files_of

            self.unload()
            try:
                tune_allocator()
                if "pid" in data:  # on the parent's machine: its shared files, mapped copy-on-write (no copy)
                    arrays = map_arrays(open_files_of(data["pid"], data["files"]), data["slots"])
                else:
                    # Ray gives read-only arrays with normalised strides; TorchTask would copy them and
                    # train with other kernels than the parent's (see sheaf.backends._shared).
                    arrays = {
                        name: writable_copy(ray.get(ref), data["strides"][name]) for name, ref in data["refs"].items()
                    }
                self.runner = WorkerRunner(task, federation_from(info, arrays), seed, threads, client_steps, device)
            except Exception as exc:
                self.error = exc
                raise

        def unload(self) -> None:
            """Drop the run's runner and data (an actor kept for a next run holds nothing of this one)."""
            import gc

            self.runner, self.error = None, None
            gc.collect()

        def ready(self) -> bool:
            if self.error is not None:  # a kept actor's load failed: the same error as a fresh one's start-up
                raise self.error
            return self.runner is not None

        def niceness(self) -> int:
            """This actor's niceness (Ray's default for its workers is 15; see local_ray_system_config)."""
            import os

            return os.nice(0)

        def loaded(self) -> WorkerRunner:
            if self.runner is None:
                raise BackendError("the actor has no task loaded")
            return self.runner

        def begin(self, message: bytes, params: dict[str, Any], op: str) -> None:
            from sheaf.backends._wire import unpack

            header, arrays = unpack(message)
            if op == "round":
                self.loaded().begin_round(header, arrays, Params(params))
            else:
                self.loaded().set_params(Params(params))

        def run(self, message: bytes) -> list[bytes]:
            from sheaf.backends._wire import fit_states, unpack

            header, arrays = unpack(message)
            if header["op"] == "fit":
                return self.loaded().fit(header["clients"], fit_states(header["states"], arrays))
            if header["op"] == "evaluate":
                return self.loaded().evaluate(header["clients"])
            if header["op"] == "central":
                return self.loaded().evaluate_central(header["shards"])
            return [self.loaded().flush()]

    return ray.remote(ClientActor)


def _why(exc: Exception) -> str:
    from ray.exceptions import ActorDiedError

    if isinstance(exc, ActorDiedError):
        return "the Ray actor running it died"
    return f"the Ray actor running it failed ({type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]})"


class RayTransport:
    """Ray's side of the scheduler (:class:`~sheaf.backends._scheduler.Transport`): actors,
    each answering one call per chunk (or flush) with its replies.

    Args:
        make: starts one actor and returns its handle.
    """

    replies_per_client = False  # a call's replies come together, when the whole chunk is done

    def __init__(self, make: Any) -> None:
        self._make = make
        self.actors: dict[int, Any] = {}
        self._calls: dict[int, deque[Any]] = {}  # each actor's calls in flight, in order
        self._starting: dict[int, Any] = {}  # actors not known to be ready: their ready() call
        self._begin: tuple[bytes, Any, str] | None = None  # the round (or params) a new actor must see
        self._made = 0

    def live(self) -> list[int]:
        """The actors known to be ready: a new one shows once it has loaded the task, so that
        its start-up (seconds) never counts against a client's time limit."""
        return [worker for worker in self.actors if worker not in self._starting]

    def start(self) -> None:
        """Start an actor, and tell it the current round (it becomes live when ready)."""
        self._made += 1
        actor = self._make()
        if self._begin is not None:
            actor.begin.remote(*self._begin)
        self.actors[self._made] = actor
        self._calls[self._made] = deque()
        self._starting[self._made] = actor.ready.remote()

    def wait_ready(self, timeout: float) -> None:
        """Wait until every starting actor is ready.

        Raises:
            Exception: what Ray raises when an actor cannot start, or on the timeout.
        """
        import ray

        ray.get(list(self._starting.values()), timeout=timeout)
        self._starting.clear()

    def publish(self, message: bytes, params: Any, op: str) -> None:
        """Tell every actor (and each new one) the round's or evaluation's params."""
        self._begin = (message, params, op)
        for actor in self.actors.values():
            actor.begin.remote(*self._begin)

    def send(self, worker: int, message: bytes) -> None:
        """Call an actor with a message (nothing if it is gone)."""
        if worker in self.actors:
            self._calls[worker].append(self.actors[worker].run.remote(message))

    def kill(self, worker: int) -> None:
        """Kill an actor and forget it (nothing if it is gone)."""
        import ray

        if worker in self.actors:
            ray.kill(self.actors.pop(worker))
            del self._calls[worker]
            self._starting.pop(worker, None)

    def wait(self, timeout: float | None) -> list[Event]:
        """Replies of the calls done within ``timeout`` seconds, actor by actor in call order
        ([] when only time passed or a new actor became ready).

        Raises:
            BackendError: if no actor is left.
        """
        import ray

        if not self.actors:
            raise BackendError("no Ray actors are left to run clients")
        refs = [ref for calls in self._calls.values() for ref in calls] + list(self._starting.values())
        if not refs or not ray.wait(refs, num_returns=1, timeout=timeout)[0]:
            return []
        done = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
        for worker, ref in list(self._starting.items()):
            if ref in done:
                del self._starting[worker]
                try:
                    ray.get(ref)
                except Exception as exc:  # a replacement that cannot start: the others go on
                    self.kill(worker)
                    logger.warning(
                        "sheaf ray: a new actor failed to start (%s); going on with %d", exc, len(self.actors)
                    )
        events: list[Event] = []
        for worker, calls in list(self._calls.items()):
            while calls and calls[0] in done:
                try:
                    replies = ray.get(calls.popleft())
                except Exception as exc:
                    self.kill(worker)
                    events.append(Died(worker, _why(exc)))
                    break
                events += [Replied(worker, reply) for reply in replies]
        return events

    def release_idle(self) -> list[Any]:
        """Take out (without killing) the actors that are ready with no call in flight: those a
        next run may keep (an actor still running something, a hanging client say, is not one)."""
        idle = [w for w in self.actors if w not in self._starting and not self._calls[w]]
        for worker in idle:
            del self._calls[worker]
        return [self.actors.pop(worker) for worker in idle]

    def close(self) -> None:
        """Kill every actor."""
        for worker in list(self.actors):
            self.kill(worker)
