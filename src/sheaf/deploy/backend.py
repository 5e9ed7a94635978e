"""DeploymentBackend: the round loop's cohorts, run by remote clients over gRPC.

The server runs the very round loop simulations run (:func:`sheaf.run.run_rounds`),
with this backend in place of an in-process one. ``fit`` encodes the global params (and
the strategy's payload) *once* for the whole cohort, posts one task per client to the
:class:`~sheaf.deploy.coordinator.Coordinator` and waits until every client answered,
dropped out or timed out; ``evaluate`` does the same for an evaluation. Clients that did
not deliver come back as :class:`~sheaf.core.errors.ClientFailure` values — dropouts the
loop records — never as exceptions. Where the strategy needs only the weighted sum
(``Cohort.reduce``), each update is checked and added to an exact running sum as it
arrives, so the server never holds the whole cohort's updates.

Task ids are deterministic (``r<round>-<kind>-c<client>``), so after a server restart a
client's late delivery for the round being redone is still recognised.

Each fit task also tells its client the last round whose update from it was aggregated
(from the run store), which is how a client's own persistent state moves on exactly as in
simulation (:mod:`sheaf.deploy.client_state`), and carries that client's own training seed
for the round — derived from (run seed, round, client id) as a simulation derives it — so a
client trains the simulation's bits without being sent the run seed or another client's
seed. (A small run seed can be found by search from any seed derived from it: nothing that
must stay secret in a deployment — its cohorts, its noise — depends on the run seed.)

Example:
    >>> task_id(3, "fit", 7)
    'r3-fit-c7'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace

from sheaf.backends.base import ClientReport, Cohort, EvalOutcome, FitOutcome, SimulationEnv
from sheaf.core.acceptance import OperatorLimits
from sheaf.core.errors import ClientFailure, SecAggError, SheafError
from sheaf.core.exactsum import StackedSum
from sheaf.core.params import Params
from sheaf.core.rng import Purpose, seeds_for
from sheaf.core.update import Update
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.chunks import encode_tensors
from sheaf.deploy.coordinator import Coordinator
from sheaf.deploy.logs import log_event
from sheaf.deploy.secure_round import run_secure_round
from sheaf.deploy.wire import ReceivedResult, encode_task_header, task_chunk
from sheaf.deploy.work import Slot, Work, WorkOutcome
from sheaf.run.store import RunStore
from sheaf.secagg.plan import SecAggPlan
from sheaf.secagg.setup import INSTANCE_BYTES, ProtocolSetup, protocol_setup
from sheaf.secagg.step import SECAGG_ENCODE
from sheaf.strategies.base import MaskedSum
from sheaf.task.base import EvalResult
from sheaf.task.client_steps import step_names

__all__ = ["DeploymentBackend", "task_id"]

_log = logging.getLogger("sheaf.server")


def _traffic(slots: dict[int, Slot], chunks: list[bytes], outcome: WorkOutcome) -> dict[int, tuple[int, int]]:
    """``client -> (download, upload)``: the task stream's bytes times the pulls that handed it
    out, and the bytes of the result stream that was accepted (what crossed the wire)."""
    shared = sum(len(chunk) for chunk in chunks)
    return {
        client: (
            outcome.pulls.get(client, 0) * (len(slot.header) + shared),
            outcome.results[client].wire_bytes if client in outcome.results else 0,
        )
        for client, slot in slots.items()
        if outcome.pulls.get(client, 0) or client in outcome.results
    }


def task_id(round: int, kind: str, client_id: int) -> str:
    """The id of a client's task: the same for the same work, across server restarts."""
    return f"r{round}-{kind}-c{client_id}"


def _setup_message(setup: ProtocolSetup) -> pb.SecAggSetup:
    return pb.SecAggSetup(
        instance=setup.instance,
        clients=list(setup.clients),
        degree=setup.degree,
        threshold=setup.threshold,
        min_survivors=setup.min_survivors,
        bits=setup.bits,
        length=setup.length,
        graph_seed=setup.graph_seed,
    )


class DeploymentBackend:
    """A :class:`~sheaf.backends.base.Backend` whose clients are remote processes.

    Args:
        coordinator: the server's live state (shared with the service's handlers).
        store: the run store (read for which clients' updates were aggregated).
        seed: the run seed, from which each client's own training seed is derived (it is
            never sent).
        limits: what the operator bounds; here, the examples a client may claim for an
            evaluation (a fit's claims are bounded by the cohort's rule).
        min_clients: the fewest updates a round needs (``strategy.min_clients``).
        min_clients_wait: how long a round whose cohort has fewer than ``min_clients``
            clients connected waits for them, by the coordinator's clock (0: no wait).
        secagg: the run's secure-aggregation plan: each fit round then runs SecAgg+ with
            its cohort (:mod:`sheaf.deploy.secure_round`) and hands the strategy only the
            survivors' sum; None without secure aggregation.
    """

    name = "grpc"

    def __init__(
        self,
        coordinator: Coordinator,
        store: RunStore,
        limits: OperatorLimits | None = None,
        *,
        seed: int = 0,
        min_clients: int = 0,
        min_clients_wait: float = 0.0,
        secagg: SecAggPlan | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.store = store
        self.seed = seed
        self.limits = limits
        self.min_clients = min_clients
        self.min_clients_wait = min_clients_wait
        self.secagg = secagg
        self._round = store.last_round
        self._aggregated: dict[int, int] = {}
        self._synced = 0

    def start(self, env: SimulationEnv) -> None:
        """Nothing to start: deployed clients hold their own data and task (env is unused)."""

    def close(self) -> None:
        """Nothing to release: the server owns the transport."""

    def _aggregated_rounds(self) -> dict[int, int]:
        """Client id -> the last committed round whose update from it was aggregated."""
        last = self.store.last_round
        if last > self._synced:
            for record in self.store.history():
                if self._synced < record.round <= last and record.aggregated:
                    for round, client in self.store.client_records(round=record.round, phase="fit"):
                        self._aggregated[client.client_id] = round
            self._synced = last
        return self._aggregated

    def fit(self, cohort: Cohort) -> FitOutcome:
        """Send the cohort its tasks and collect the updates that come back.

        If fewer of the cohort than ``min_clients`` are connected, first wait up to
        ``min_clients_wait`` for them (clients that crashed or lost their network rejoin),
        as the server waits for its first clients; then run the round whoever is there.
        """
        self._round = cohort.round
        needed = min(self.min_clients, len(cohort.client_ids))
        if self.min_clients_wait > 0 and needed > 0:
            self.coordinator.wait_for_clients(
                needed, among=cohort.client_ids, limit=self.min_clients_wait, round=cohort.round
            )
        aggregated = self._aggregated_rounds()
        setup: ProtocolSetup | None = None
        if self.secagg is not None and SECAGG_ENCODE.name in step_names(cohort.steps):
            try:
                setup = self._setup(cohort)
            except SecAggError as exc:
                reason = f"secure aggregation cannot start: {exc}"
                log_event(_log, logging.WARNING, "secagg_aborted", round=cohort.round, reason=reason)
                return FitOutcome([], [], secure=MaskedSum(None, (), 0, reason))
        tensors = encode_tensors({"": cohort.params, **{k: v for k, v in cohort.payload.items() if k}})
        chunks = [task_chunk(c) for c in tensors.chunks]
        slots = {}
        seeds = seeds_for(self.seed, Purpose.FIT, round=cohort.round, clients=list(cohort.client_ids))
        for client_id, seed in zip(cohort.client_ids, seeds, strict=True):
            tid = task_id(cohort.round, "fit", client_id)
            header = encode_task_header(
                tid,
                "fit",
                cohort.round,
                client_id,
                tensors,
                train=cohort.train,
                options=cohort.options,
                aggregated_round=aggregated.get(client_id, 0),
                client_steps=step_names(cohort.steps),
                seed=seed,
                secagg=None if setup is None else _setup_message(setup),
            )
            slots[client_id] = Slot(client_id, tid, header)
        log_event(
            _log, logging.INFO, "round_started", round=cohort.round, cohort=list(cohort.client_ids)[:50],
            model_bytes=tensors.total_bytes,
        )  # fmt: skip
        work = Work("fit", cohort.round, slots, chunks, like=cohort.params, rule=cohort.rule, secure=setup is not None)
        if setup is not None:
            return self._fit_secure(cohort, work, setup)
        if cohort.reduce:
            return self._fit_summed(cohort, work)
        outcome = self._run(work)
        updates = [
            Update(
                client_id,
                result.delta if result.delta is not None else Params({}),
                result.num_examples,
                result.metrics,
                result.extras,
                result.encoded,  # decoded by the strategy's server half in the round loop
            )
            for client_id, result in outcome.results.items()
            if result.delta is not None or result.encoded is not None
        ]
        return FitOutcome(updates, outcome.failures, traffic=_traffic(slots, chunks, outcome))

    def _setup(self, cohort: Cohort) -> ProtocolSetup:
        """A fresh protocol instance for the cohort: its graph from a secret of the server's own."""
        plan = self.secagg
        assert plan is not None
        n = len(cohort.client_ids)
        if n > plan.max_inputs:
            raise SecAggError(f"{n} clients exceed the {plan.max_inputs} inputs the quantiser was sized for")
        return protocol_setup(
            cohort.client_ids,
            instance=os.urandom(INSTANCE_BYTES),
            graph_seed=int.from_bytes(os.urandom(8), "little"),
            bits=plan.bits,
            length=plan.quantizer().ring_length,
            threshold_fraction=plan.threshold,
            max_dropout=plan.max_dropout,
            degree=plan.degree if plan.degree < n - 1 else 0,
        )

    def _fit_secure(self, cohort: Cohort, work: Work, setup: ProtocolSetup) -> FitOutcome:
        # Training first: each result carries its client's keys (and nothing of its update);
        # then the protocol, whose survivors' sum is all the strategy sees.
        self.coordinator.secagg.begin(cohort.round, setup)
        try:
            outcome = self._run(work)
        except BaseException:
            self.coordinator.secagg.end("the round stopped")
            raise
        adverts = {c: r.secagg for c, r in outcome.results.items()}
        secure = run_secure_round(self.coordinator, cohort.round, setup, adverts)
        survivors = set(secure.outcome.survivors)
        reports = [ClientReport(c, r.num_examples, r.metrics) for c, r in outcome.results.items() if c in survivors]
        failures = [*outcome.failures, *(ClientFailure(c, why) for c, why in secure.failures.items())]
        failures.sort(key=lambda f: f.client_id)
        return FitOutcome([], failures, reports=reports, secure=secure.outcome)

    def _fit_summed(self, cohort: Cohort, work: Work) -> FitOutcome:
        # The strategy needs only the sum: each update joins an exact running sum as it
        # arrives, and its tensors are dropped, so the server holds a stack of updates
        # rather than the whole cohort's. Checked first, as the round loop checks updates.
        running = StackedSum(cohort.params)
        reports: dict[int, ClientReport] = {}
        rejected: list[ClientFailure] = []

        def fold(client_id: int, result: ReceivedResult) -> ReceivedResult:
            if result.delta is None:
                return result
            update = Update(client_id, result.delta, result.num_examples, result.metrics, result.extras)
            norm = result.norm  # the service judged it under the cohort's rule on receipt
            if norm is None:
                try:
                    norm = cohort.rule.measured(update, cohort.params)
                except SheafError as exc:
                    rejected.append(ClientFailure(client_id, f"update rejected: {exc}"))
            if norm is not None:
                running.add(update)
                reports[client_id] = ClientReport(client_id, result.num_examples, result.metrics, norm)
            return replace(result, delta=None, extras={})

        self.coordinator.post(work)
        outcome = self.coordinator.wait(work, fold)
        failures = sorted([*outcome.failures, *rejected], key=lambda f: f.client_id)
        return FitOutcome(
            [],
            failures,
            summed=running.result(),
            reports=[reports[c] for c in sorted(reports)],
            traffic=_traffic(work.slots, work.chunks, outcome),
        )

    def evaluate(self, client_ids: Sequence[int], params: Params) -> EvalOutcome:
        """Ask the clients to evaluate ``params`` on their local test splits.

        A client without a local test split answers with no examples and is left out.
        """
        tensors = encode_tensors({"": params})
        chunks = [task_chunk(c) for c in tensors.chunks]
        slots = {}
        for client_id in client_ids:
            tid = task_id(self._round, "evaluate", client_id)
            slots[client_id] = Slot(
                client_id, tid, encode_task_header(tid, "evaluate", self._round, client_id, tensors)
            )
        rule = self.limits.weight_rule() if self.limits is not None else None
        outcome = self._run(Work("evaluate", self._round, slots, chunks, rule=rule))
        results = {
            client_id: EvalResult(result.loss, result.num_examples, result.metrics)
            for client_id, result in outcome.results.items()
            if result.num_examples > 0
        }
        return EvalOutcome(results, outcome.failures)

    def _run(self, work: Work) -> WorkOutcome:
        self.coordinator.post(work)
        return self.coordinator.wait(work)
