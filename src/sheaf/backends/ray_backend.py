"""RayBackend: long-lived Ray actors, each training many clients — for more than one machine.

``pip install 'sheaf[ray]'``. On a local Ray instance by default, or on a running cluster
given by ``engine.ray_address`` (e.g. ``ray://head:10001`` or ``auto``; every node needs
sheaf and the task's code installed). Each actor holds one
:class:`~sheaf.backends._runner.WorkerRunner` — the task loaded once, the federation's data
mapped from this process's shared memory where Ray runs on this machine alone (no copy:
:mod:`sheaf.data.shared`), else taken once from Ray's object store — and trains chunks of
clients with :func:`~sheaf.task.client.fit_client`, so results are bit-identical to the
inline and pool backends. Params go to the object store once per round; replies are sheaf's
own JSON + raw tensors. For sum-only strategies each actor keeps an exact partial sum.

A Ray cluster is trusted infrastructure of whoever runs the simulation (Ray moves objects
with pickle between its own processes); never let untrusted parties join it.

Which actor runs which clients, and what a crash or a hang costs, is decided by
:mod:`sheaf.backends._scheduler`, the same as for the pool; Ray only carries the work
(:class:`~sheaf.backends._actors.RayTransport`: actors and the object store). A chunk's
replies come back together when the chunk is done, so when an actor dies the client that
killed it is not known yet: the scheduler runs each client of the unfinished chunk again
alone to find it.

Example:
    >>> RayBackend().name
    'ray'
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from sheaf.backends._actors import RayTransport, actor_class
from sheaf.backends._collect import evaluate_central_shards, evaluate_clients, fit_cohort
from sheaf.backends._runner import round_header
from sheaf.backends._shared import SharedData, federation_arrays, share_arrays
from sheaf.backends._wire import pack
from sheaf.backends.base import BackendBase, Cohort, EvalOutcome, FitOutcome, SimulationEnv
from sheaf.core.errors import BackendError
from sheaf.core.params import Params
from sheaf.task.base import EvalResult, prepare_worker
from sheaf.task.device import worker_devices

__all__ = ["RayBackend", "local_ray_system_config", "ray_available", "release_actors"]

logger = logging.getLogger("sheaf.backends")

_START_TIMEOUT = 300.0

#: Actors kept from runs with ``keep_actors=True``, each with what it was started for (the Ray
#: session and job, CPUs and GPUs): a next run of the same kind loads its task into them.
_KEPT: list[tuple[tuple[object, ...], Any]] = []


#: Ray sessions whose actors' niceness has been warned about (once each).
_WARNED_SESSIONS: set[str] = set()


def release_actors() -> None:
    """Kill the actors kept by runs with ``keep_actors=True`` (they hold their CPUs in Ray
    until then; a run that cannot use them kills them too)."""
    _take_kept(None, 0)


def _take_kept(key: tuple[object, ...] | None, count: int) -> list[Any]:
    """Up to ``count`` kept actors started for ``key``; every other kept actor is killed."""
    import ray

    taken = [actor for kind, actor in _KEPT if kind == key][:count]
    for _, actor in _KEPT:
        if not any(actor is other for other in taken):
            try:
                ray.kill(actor)
            except Exception:  # an actor of a Ray session that has ended is gone already
                logger.debug("sheaf ray: a kept actor was gone already", exc_info=True)
    _KEPT.clear()
    alive = []
    for actor in taken:  # one that died while kept (its node lost, say) is replaced by a new one
        try:
            ray.get(actor.ready.remote(), timeout=_START_TIMEOUT)
            alive.append(actor)
        except Exception:
            logger.warning("sheaf ray: a kept actor is gone; starting a new one instead")
            try:
                ray.kill(actor)
            except Exception:
                logger.debug("sheaf ray: the kept actor was gone already", exc_info=True)
    return alive


def local_ray_system_config() -> dict[str, int]:
    """Ray settings for a local Ray instance that sheaf's actors train in, for ``ray.init``'s
    ``_system_config`` (the backend uses them when it starts Ray itself).

    Ray lowers the priority of its worker processes to niceness 15 by default, so that its own
    daemons win. Sheaf's actors do all of a run's training: beside busy processes at the usual
    niceness 0 (other programs, other users' jobs), an actor at 15 gets a sliver of the CPU
    (a CPU-bound neighbour weighs 1024 to its 36 in Linux's scheduler), and each new actor
    took 37–56 s to start beside three busy processes on 2 cores instead of 1.4 s
    (docs/backends.md, "On a loaded machine"). With ``worker_niceness`` 0 the actors run at
    the driver's priority, as the pool's workers do.

    Returns:
        A fresh dict: ``ray.init(_system_config=local_ray_system_config())``.

    Example:
        >>> local_ray_system_config()
        {'worker_niceness': 0}
    """
    return {"worker_niceness": 0}


def ray_available() -> bool:
    """Whether Ray can be imported here."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


class RayBackend(BackendBase):
    """Runs clients on Ray actors (see the module docstring).

    Args:
        workers: number of actors; None takes ``engine.workers`` (0: the cluster's CPUs
            divided by ``threads``).
        address: the Ray cluster; None takes ``engine.ray_address`` (empty: local).
        clock: the time ``engine.client_timeout`` is measured in, in seconds (a
            controllable one in tests).
        keep_actors: where Ray was running before the run (a notebook's or a test session's
            ``ray.init``), keep the actors when the run ends, holding nothing of it, and load
            the next such run's task into them instead of starting new processes (seconds
            each: Python, torch, the task). Each run still gets a fresh runner, its own torch
            threads and device; module-level state of the task's own code survives, as it
            does between runs of the inline backend: for a task module that keeps state in
            globals, use new actors (the default) or :func:`release_actors` between runs.
            Kept actors hold their CPUs in Ray until :func:`release_actors` or a run that
            cannot use them.
    """

    name = "ray"

    def __init__(
        self,
        workers: int | None = None,
        address: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        keep_actors: bool = False,
    ) -> None:
        self._requested = workers
        self._clock = clock
        self._address = address
        self._env: SimulationEnv | None = None
        self._transport: RayTransport | None = None
        self._shared: SharedData | None = None  # what the actors map, kept alive here
        self._owns_ray = False
        self._keep = keep_actors
        self._kind: tuple[object, ...] | None = None  # what this run's actors were started for

    @property
    def running(self) -> int:
        """Actors running now."""
        return len(self._transport.actors) if self._transport is not None else 0

    @property
    def threads(self) -> int:
        """Torch threads per actor."""
        return self._env.threads if self._env is not None else 1

    @property
    def transport(self) -> RayTransport:
        """The started backend's transport.

        Raises:
            BackendError: if the backend has not been started.
        """
        if self._transport is None:
            raise BackendError("backend not started; call start(env) first")
        return self._transport

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
        prepare_worker(env.task, env.threads, worker_devices(env.device, 1)[0])  # central evaluation's fallback
        address = self._address if self._address is not None else env.engine.ray_address
        if not ray.is_initialized():
            # Settings of a Ray started here; a cluster that is joined keeps its own (Ray refuses them).
            starts = address == "local" or (not address and not os.environ.get("RAY_ADDRESS"))
            try:
                ray.init(
                    address=address or None,
                    include_dashboard=False,
                    logging_level=logging.ERROR,
                    _system_config=local_ray_system_config() if starts else None,
                )
            except Exception as exc:
                raise BackendError(f"cannot start or join Ray at {address or 'a local instance'}: {exc}") from None
            self._owns_ray = True
        count = (
            self._requested or env.engine.workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // env.threads)  # type: ignore[no-untyped-call]
        )
        if env.device != "cpu" and not ray.cluster_resources().get("GPU", 0):  # type: ignore[no-untyped-call]
            self.close()
            raise BackendError(f"engine.device={env.device} but the Ray cluster has no GPUs; use engine.device=cpu")
        local = len([node for node in ray.nodes() if node.get("Alive")]) == 1  # type: ignore[no-untyped-call]
        context = ray.get_runtime_context()
        gpus = self._gpus(env, count)
        self._kind = (context.get_session_name(), context.get_job_id(), env.threads, gpus, env.device)
        kept = _take_kept(self._kind, count if self._keep and not self._owns_ray else 0)
        try:
            self._start_actors(env, count, self._local_data(env) if local else self._stored_data(env), kept)
        except BackendError as exc:
            if not local:
                self.close()
                raise
            # The actors could not open this process's shared files: the object store instead.
            logger.warning("sheaf ray: %s; putting the data in Ray's object store instead", exc)
            try:
                self._start_actors(env, count, self._stored_data(env), [])
            except BackendError:
                self.close()
                raise
        logger.info(
            "sheaf ray: %d actors (%d kept from a run before), %d torch thread(s) each", count, len(kept), env.threads
        )
        if local and not self._owns_ray:
            self._warn_if_niced()

    def _warn_if_niced(self) -> None:
        """Warn (once per Ray session) where a Ray started elsewhere runs the actors at a lower
        priority than this process: Ray's default niceness 15 starves them beside busy processes."""
        import ray

        session = ray.get_runtime_context().get_session_name()
        if session in _WARNED_SESSIONS:
            return
        actor = next(iter(self.transport.actors.values()))
        theirs, ours = int(ray.get(actor.niceness.remote(), timeout=_START_TIMEOUT)), os.nice(0)
        if theirs > ours:
            _WARNED_SESSIONS.add(session)
            logger.warning(
                "sheaf ray: Ray runs the actors at niceness %d, this process at %d: beside busy processes "
                "they get a sliver of the CPU; start Ray with "
                "ray.init(_system_config=sheaf.backends.local_ray_system_config())",
                theirs,
                ours,
            )

    def _local_data(self, env: SimulationEnv) -> dict[str, Any]:
        """For actors on this machine: where the data lies in this process's shared files (no copy)."""
        self._shared = share_arrays(federation_arrays(env.federation))
        files = [[file.fd, file.size] for file in self._shared.files]
        return {"pid": os.getpid(), "files": files, "slots": self._shared.slots}

    def _stored_data(self, env: SimulationEnv) -> dict[str, Any]:
        """For actors anywhere in a cluster: the data in Ray's object store (each actor copies it)."""
        import ray

        arrays = federation_arrays(env.federation)
        return {
            "refs": {name: ray.put(array) for name, array in arrays.items()},
            "strides": {name: list(array.strides) for name, array in arrays.items()},
        }

    @staticmethod
    def _gpus(env: SimulationEnv, count: int) -> float:
        """Each actor's share of the GPUs (Ray sets CUDA_VISIBLE_DEVICES to it)."""
        import ray

        if env.device == "cpu":
            return 0.0
        return min(1.0, float(ray.cluster_resources().get("GPU", 0)) / count)  # type: ignore[no-untyped-call]

    def _start_actors(self, env: SimulationEnv, count: int, data: dict[str, Any], kept: list[Any]) -> None:
        device = "cpu" if env.device == "cpu" else "cuda:0"  # of the GPUs Ray lets the actor see
        args = (env.task, data, env.federation.info, env.seed, env.threads, env.client_steps, device)
        remote = actor_class().options(num_cpus=env.threads, num_gpus=self._gpus(env, count))

        def make() -> Any:
            if kept:  # a kept actor loads this run's task, as a new one does when it starts
                actor = kept.pop()
                actor.load.remote(*args)
                return actor
            return remote.remote(*args)

        transport = self._transport = RayTransport(make)
        for _ in range(count):
            transport.start()
        try:
            transport.wait_ready(_START_TIMEOUT)
        except Exception as exc:
            transport.close()
            self._transport = None
            raise BackendError(f"Ray actors could not load the task: {exc}") from None

    def close(self) -> None:
        """Stop the actors (and Ray, if this backend started it); safe to call twice. With
        ``keep_actors``, the actors that are idle are kept for a next run instead."""
        if self._transport is not None:
            if self._keep and not self._owns_ray and self._kind is not None:
                for actor in self._transport.release_idle():
                    actor.unload.remote()
                    _KEPT.append((self._kind, actor))
            self._transport.close()
            self._transport = None
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False
        self._shared = None
        self._env = None

    def _publish(self, params: Params, op: str, message: bytes) -> None:
        import ray

        self.transport.publish(message, ray.put(dict(params)), op)

    def fit(self, cohort: Cohort) -> FitOutcome:
        """Train the cohort on the actors."""
        header, arrays = round_header(cohort.work)
        self._publish(cohort.params, "round", pack(header, arrays))
        timeout = self.env.engine.client_timeout or None
        rows = self.env.federation.train_counts  # the longest clients first: the workers end together
        return fit_cohort(self.transport, cohort, timeout=timeout, rows=rows, clock=self._clock)

    def evaluate(self, client_ids: Sequence[int], params: Params) -> EvalOutcome:
        """Evaluate the clients on the actors."""
        self._publish(params, "params", pack({"op": "params"}))
        timeout = self.env.engine.client_timeout or None
        return evaluate_clients(self.transport, client_ids, timeout=timeout, clock=self._clock)

    def evaluate_central(self, params: Params, shards: Sequence[range]) -> list[EvalResult]:
        """Evaluate the central test set's shards on the actors (the same bits as in this process)."""
        if len(shards) > 1:
            self._publish(params, "params", pack({"op": "params"}))
        here = functools.partial(super().evaluate_central, params)
        timeout = self.env.engine.client_timeout or None
        return evaluate_central_shards(self.transport, shards, here, timeout=timeout, clock=self._clock)
