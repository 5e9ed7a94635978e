"""RayBackend: long-lived Ray actors, each training many clients — for more than one machine.

``pip install 'sheaf[ray]'``. On a local Ray instance by default, or on a running cluster
given by ``engine.ray_address`` (e.g. ``ray://head:10001`` or ``auto``; every node needs
sheaf and the task's code installed). Each actor holds one
:class:`~sheaf.backends._runner.WorkerRunner` — the task loaded once, the federation's data
taken once from Ray's object store (zero-copy on the same node) — and trains chunks of
clients with :func:`~sheaf.task.client.fit_client`, so results are bit-identical to the
inline and pool backends. Params go to the object store once per round; replies are sheaf's
own JSON + raw tensors. For sum-only strategies each actor keeps an exact partial sum.

A Ray cluster is trusted infrastructure of whoever runs the simulation (Ray moves objects
with pickle between its own processes); never let untrusted parties join it.

If an actor dies mid-round, the clients of its unfinished chunk run again one at a time on
a new actor (training is deterministic), so the client that kills its actor is found and
reported as failed while the others finish; clients in its lost partial sum run again.

Example:
    >>> RayBackend().name
    'ray'
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from sheaf.backends._collect import decode_evaluation, gather_fit
from sheaf.backends._runner import round_header
from sheaf.backends._wire import pack
from sheaf.backends.base import BackendBase, Cohort, EvalOutcome, FitOutcome, SimulationEnv
from sheaf.core.errors import BackendError, ClientFailure
from sheaf.core.params import Params
from sheaf.task.base import EvalResult, prepare_worker

__all__ = ["RayBackend", "ray_available"]

logger = logging.getLogger("sheaf.backends")

_START_TIMEOUT = 300.0


def ray_available() -> bool:
    """Whether Ray can be imported here."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _actor_class() -> Any:
    """The Ray actor class (defined on first use, so sheaf imports without Ray)."""
    import ray

    class ClientActor:
        def __init__(
            self, task: Any, data: dict[str, Any], info: Any, seed: int, threads: int, client_steps: Any
        ) -> None:
            from sheaf.backends._allocator import tune_allocator
            from sheaf.backends._runner import WorkerRunner
            from sheaf.backends._shared import writable_copy
            from sheaf.data.dataset import Federation, Split

            tune_allocator()
            # Ray gives read-only arrays with normalised strides; TorchTask would copy them and
            # train with other kernels than the parent's (see sheaf.backends._shared).
            data = {name: writable_copy(ray.get(ref), data["strides"][name]) for name, ref in data["refs"].items()}
            x, y = data["x"], data["y"]
            federation = Federation(info, x, y, data["offsets"], data["train_counts"], Split(x[:0], y[:0]))
            self.runner = WorkerRunner(task, federation, seed, threads, client_steps)

        def ready(self) -> bool:
            return True

        def begin(self, message: bytes, params: dict[str, Any], op: str) -> None:
            from sheaf.backends._wire import unpack

            header, arrays = unpack(message)
            if op == "round":
                self.runner.begin_round(header, arrays, Params(params))
            else:
                self.runner.set_params(Params(params))

        def fit(self, message: bytes) -> list[bytes]:
            from sheaf.backends._wire import fit_states, unpack

            header, arrays = unpack(message)
            states = fit_states(header["states"], arrays)
            return self.runner.fit(header["clients"], states)

        def evaluate(self, clients: list[int]) -> list[bytes]:
            return self.runner.evaluate(clients)

        def flush(self) -> bytes:
            return self.runner.flush()

    return ray.remote(ClientActor)


class _Slot:
    """One actor and what it is doing."""

    def __init__(self, handle: Any, index: int) -> None:
        self.handle = handle
        self.index = index
        self.calls: dict[Any, tuple[list[int], float]] = {}  # pending call -> (its clients, deadline)
        self.summed: list[int] = []
        self.flush: Any = None


class RayBackend(BackendBase):
    """Runs clients on Ray actors (see the module docstring).

    Args:
        workers: number of actors; None takes ``engine.workers`` (0: the cluster's CPUs
            divided by ``threads``).
        address: the Ray cluster; None takes ``engine.ray_address`` (empty: local).
    """

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        self._requested = workers
        self._address = address
        self._env: SimulationEnv | None = None
        self._slots: list[_Slot] = []
        self._owns_ray = False
        self._args: tuple[Any, ...] = ()
        self._begin: tuple[bytes, Any, str] | None = None
        self._made = 0

    @property
    def running(self) -> int:
        """Actors running now."""
        return len(self._slots)

    @property
    def threads(self) -> int:
        """Torch threads per actor."""
        return self._env.threads if self._env is not None else 1

    def start(self, env: SimulationEnv) -> None:
        """Join (or start) Ray, put the data in its object store and start the actors.

        Raises:
            BackendError: if Ray is not installed, cannot start, or an actor cannot load the task.
        """
        try:
            import ray
        except ImportError:
            raise BackendError("the ray backend needs Ray: pip install 'sheaf[ray]'") from None
        self._env = env
        prepare_worker(env.task, env.threads)  # this process evaluates centrally: same threads
        address = self._address if self._address is not None else env.engine.ray_address
        if not ray.is_initialized():
            try:
                ray.init(address=address or None, include_dashboard=False, logging_level=logging.ERROR)
            except Exception as exc:
                raise BackendError(f"cannot start or join Ray at {address or 'a local instance'}: {exc}") from None
            self._owns_ray = True
        fed = env.federation
        names = ("x", "y", "offsets", "train_counts")
        data = {
            "refs": {name: ray.put(getattr(fed, name)) for name in names},
            "strides": {name: list(getattr(fed, name).strides) for name in names},
        }
        self._args = (env.task, data, fed.info, env.seed, env.threads, env.client_steps)
        count = (
            self._requested or env.engine.workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // env.threads)  # type: ignore[no-untyped-call]
        )
        for _ in range(count):
            self._spawn()
        try:
            ray.get([slot.handle.ready.remote() for slot in self._slots], timeout=_START_TIMEOUT)
        except Exception as exc:
            self.close()
            raise BackendError(f"Ray actors could not load the task: {exc}") from None
        logger.info("sheaf ray: %d actors, %d torch thread(s) each", count, env.threads)

    def _spawn(self) -> _Slot:
        actor = _actor_class().options(num_cpus=self.env.threads)
        self._made += 1
        slot = _Slot(actor.remote(*self._args), self._made)
        if self._begin is not None:
            slot.handle.begin.remote(*self._begin)
        self._slots.append(slot)
        return slot

    def close(self) -> None:
        """Stop the actors (and Ray, if this backend started it); safe to call twice."""
        if not self._slots and not self._owns_ray:
            return
        import ray

        for slot in self._slots:
            ray.kill(slot.handle)
        self._slots = []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
        self._env = None

    def _publish(self, params: Params, op: str, message: bytes) -> None:
        import ray

        self._begin = (message, ray.put(dict(params)), op)
        for slot in self._slots:
            slot.handle.begin.remote(*self._begin)

    def _run(
        self,
        clients: Sequence[int],
        call: Callable[[_Slot, list[int]], Any],
        reply: Callable[[bytes], tuple[int, bool]],
        add_sum: Callable[[bytes], None] | None,
        forget: Callable[[list[int]], None],
    ) -> dict[int, str]:
        """Hand clients out in chunks to the actors until every one is answered.

        Returns:
            The clients whose actor died (or timed out) while running them, and why.
        """
        import ray

        timeout = self.env.engine.client_timeout or None
        queue: deque[int] = deque(clients)
        suspects: deque[int] = deque()  # clients of a chunk whose actor died: one per call
        failed: dict[int, str] = {}

        def settle(slot: _Slot, ref: Any) -> str:
            """Take a finished call's replies; returns why it failed ('' if it did not)."""
            try:
                value = ray.get(ref, timeout=0)
            except Exception as exc:
                from ray.exceptions import ActorDiedError

                if isinstance(exc, ActorDiedError):
                    return "the Ray actor running it died"
                return (
                    f"the Ray actor running it failed ({type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]})"
                )
            if ref is slot.flush:
                assert add_sum is not None
                add_sum(value)
                slot.flush, slot.summed = None, []
                return ""
            slot.calls.pop(ref)
            for data in value:
                client, summed = reply(data)
                if summed:
                    slot.summed.append(client)
            return ""

        while True:
            for slot in self._slots:
                while len(slot.calls) < 2 and (suspects or queue) and slot.flush is None:
                    if suspects and slot.calls:
                        break  # a suspect runs alone, so that a death names it
                    if suspects:
                        chunk = [suspects.popleft()]
                    else:
                        size = max(1, min(64, -(-len(queue) // (2 * len(self._slots)))))
                        chunk = [queue.popleft() for _ in range(min(size, len(queue)))]
                    deadline = time.monotonic() + timeout * len(chunk) if timeout else float("inf")
                    slot.calls[call(slot, chunk)] = (chunk, deadline)
                idle = not queue and not suspects and not slot.calls
                if add_sum is not None and idle and slot.summed and slot.flush is None:
                    slot.flush = slot.handle.flush.remote()
            refs = {ref: slot for slot in self._slots for ref in slot.calls}
            refs |= {slot.flush: slot for slot in self._slots if slot.flush is not None}
            if not refs:
                if queue or suspects:
                    raise BackendError("no Ray actors are left to run clients")
                return failed
            deadlines = [limit for slot in self._slots for _, limit in slot.calls.values()]
            wait = max(0.0, min(deadlines) - time.monotonic()) if timeout and deadlines else None
            done, _ = ray.wait(list(refs), num_returns=1, timeout=wait)
            dead: dict[int, tuple[_Slot, str]] = {}
            for ref in done:
                why = settle(refs[ref], ref)
                if why:
                    dead[id(refs[ref])] = (refs[ref], why)
            now = time.monotonic()
            for slot in self._slots:
                if id(slot) not in dead and any(limit < now for _, limit in slot.calls.values()):
                    dead[id(slot)] = (slot, f"it ran for more than {timeout:g} s (engine.client_timeout)")
            for slot, why in dead.values():
                self._slots.remove(slot)
                running = True  # an actor runs its calls in order: the first unfinished one was running
                for ref in list(slot.calls):
                    if ray.wait([ref], timeout=0)[0] and not settle(slot, ref):
                        continue  # it finished before the death: its replies count
                    chunk, _ = slot.calls.pop(ref)
                    if not running:
                        queue.extendleft(reversed(chunk))  # never started
                    elif len(chunk) == 1:
                        failed[chunk[0]] = why
                    else:
                        suspects.extend(chunk)  # one of them did it: run each alone to find it
                    running = False
                ray.kill(slot.handle)
                forget(slot.summed)
                queue.extendleft(reversed(slot.summed))
                logger.warning("sheaf ray: actor %d failed (%s); starting a new one", slot.index, why)
                self._spawn()

    def fit(self, cohort: Cohort) -> FitOutcome:
        """Train the cohort on the actors."""
        header, arrays = round_header(cohort.work)
        self._publish(cohort.params, "round", pack(header, arrays))

        def run(
            clients: list[int],
            message: Callable[[list[int]], bytes],
            reply: Callable[[bytes], tuple[int, bool]],
            add_sum: Callable[[bytes], None] | None,
            forget: Callable[[list[int]], None],
        ) -> dict[int, str]:
            return self._run(
                clients, lambda slot, chunk: slot.handle.fit.remote(message(chunk)), reply, add_sum, forget
            )

        return gather_fit(cohort, run)

    def evaluate(self, client_ids: Sequence[int], params: Params) -> EvalOutcome:
        """Evaluate the clients on the actors."""
        results: dict[int, EvalResult] = {}
        failures: dict[int, ClientFailure] = {}
        self._publish(params, "params", pack({"op": "params"}))

        def reply(data: bytes) -> tuple[int, bool]:
            return decode_evaluation(data, results, failures), False

        died = self._run(
            [int(c) for c in client_ids],
            lambda slot, chunk: slot.handle.evaluate.remote(chunk),
            reply,
            None,
            lambda _: None,
        )
        for client, why in died.items():
            failures[client] = ClientFailure(client, f"evaluate failed: {why}")
        return EvalOutcome({c: results[c] for c in sorted(results)}, [failures[c] for c in sorted(failures)])
