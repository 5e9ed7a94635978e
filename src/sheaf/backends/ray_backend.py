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

import logging
from collections.abc import Sequence

from sheaf.backends._actors import RayTransport, actor_class
from sheaf.backends._collect import evaluate_clients, fit_cohort
from sheaf.backends._runner import round_header
from sheaf.backends._wire import pack
from sheaf.backends.base import BackendBase, Cohort, EvalOutcome, FitOutcome, SimulationEnv
from sheaf.core.errors import BackendError
from sheaf.core.params import Params
from sheaf.task.base import prepare_worker

__all__ = ["RayBackend", "ray_available"]

logger = logging.getLogger("sheaf.backends")

_START_TIMEOUT = 300.0


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
    """

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        self._requested = workers
        self._address = address
        self._env: SimulationEnv | None = None
        self._transport: RayTransport | None = None
        self._owns_ray = False

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
        args = (env.task, data, fed.info, env.seed, env.threads, env.client_steps)
        remote = actor_class().options(num_cpus=env.threads)
        transport = self._transport = RayTransport(lambda: remote.remote(*args))
        count = (
            self._requested or env.engine.workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // env.threads)  # type: ignore[no-untyped-call]
        )
        for _ in range(count):
            transport.start()
        try:
            ray.get([actor.ready.remote() for actor in transport.actors.values()], timeout=_START_TIMEOUT)
        except Exception as exc:
            self.close()
            raise BackendError(f"Ray actors could not load the task: {exc}") from None
        logger.info("sheaf ray: %d actors, %d torch thread(s) each", count, env.threads)

    def close(self) -> None:
        """Stop the actors (and Ray, if this backend started it); safe to call twice."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False
        self._env = None

    def _publish(self, params: Params, op: str, message: bytes) -> None:
        import ray

        self.transport.publish(message, ray.put(dict(params)), op)

    def fit(self, cohort: Cohort) -> FitOutcome:
        """Train the cohort on the actors."""
        header, arrays = round_header(cohort.work)
        self._publish(cohort.params, "round", pack(header, arrays))
        return fit_cohort(self.transport, cohort, timeout=self.env.engine.client_timeout or None)

    def evaluate(self, client_ids: Sequence[int], params: Params) -> EvalOutcome:
        """Evaluate the clients on the actors."""
        self._publish(params, "params", pack({"op": "params"}))
        return evaluate_clients(self.transport, client_ids, timeout=self.env.engine.client_timeout or None)
