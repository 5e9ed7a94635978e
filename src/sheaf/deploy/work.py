"""What the server asks of its clients, batch by batch: a :class:`Work` of one
:class:`Slot` per client, and the :class:`WorkOutcome` it produced.

Plain records, no threads: the :class:`~sheaf.deploy.coordinator.Coordinator` holds the
batch in progress behind its lock, hands out and settles its slots; the round loop's backend
(:mod:`sheaf.deploy.backend`) builds a round's fixed cohort, the FedBuff driver
(:mod:`sheaf.deploy.buffered`) one *open* batch whose slots ``issue`` creates as clients
pull and whose results ``admit`` accepts or refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sheaf.core.acceptance import UpdateRule
from sheaf.core.errors import ClientFailure
from sheaf.core.params import Params
from sheaf.deploy.wire import ReceivedResult

__all__ = ["Slot", "Work", "WorkOutcome"]


@dataclass
class Slot:
    """One client's share of a batch of work.

    Attributes:
        client_id: the client.
        task_id: the task's id (deterministic: the same after a server restart).
        header: the task's first message, addressed to this client.
        state: ``waiting`` (not yet pulled), ``sent``, or ``done``.
        update_id: the id of the result that settled it.
        result: the result, if one was accepted.
        failure: why this client's share failed, if it did.
        pulls: how many times the client was handed its task (a lost stream is pulled again).
        round: (open work) the round its task is for (0: the work's round).
        chunks: (open work) its task's tensor chunks (None: the work's).
        like: (open work) the model its result must match (None: the work's).
        issued: (open work) when it was handed out, by the coordinator's clock.
    """

    client_id: int
    task_id: str
    header: bytes
    state: str = "waiting"
    update_id: str = ""
    result: ReceivedResult | None = None
    failure: str = ""
    pulls: int = 0
    round: int = 0
    chunks: list[bytes] | None = None
    like: Params | None = None
    issued: float = 0.0


@dataclass
class Work:
    """A batch: one round's fit cohort, or one evaluation.

    Attributes:
        kind: ``fit`` or ``evaluate``.
        round: the round number.
        slots: each client's share, by client id.
        chunks: the task's tensor chunk messages, shared by every client.
        like: the model the results must match (fits).
        rule: what a result must satisfy to be accepted (fits: the round's acceptance
            rule; evaluations: the weight each client may claim); None: structure only. Where
            clients compress their updates, its ``encoding`` is the layout every encoded
            update must declare.
        secure: a securely aggregated fit: each result carries its client's keys and no
            tensors (its update leaves only masked, in the protocol).
        issue: (open work) called, with the lock held, with a pulling client that has no
            open share: its new share, or None (nothing for it now).
        admit: (open work) called, with the lock held, with each result that passed the
            checks: why it is refused (None: accepted). It must make the result durable
            before it returns None: the client is told "accepted" next.
        slot_timeout: (open work) seconds each share may stay open from when it was
            handed out.
        settled: (open work) shares settled and not yet taken by the driver.
    """

    kind: str
    round: int
    slots: dict[int, Slot]
    chunks: list[bytes]
    like: Params | None = None
    rule: UpdateRule | None = None
    posted: float = field(default=0.0)
    secure: bool = False
    issue: Callable[[int], Slot | None] | None = None
    admit: Callable[[Slot, ReceivedResult], str | None] | None = None
    slot_timeout: float = 0.0
    settled: list[Slot] = field(default_factory=list)

    def round_of(self, slot: Slot) -> int:
        """The round a slot's result must name."""
        return slot.round or self.round

    def like_of(self, slot: Slot) -> Params | None:
        """The model a slot's result must match."""
        return slot.like if slot.like is not None else self.like


@dataclass(frozen=True)
class WorkOutcome:
    """What a batch produced: accepted results by client, the clients that failed, and how
    many times each client was handed its task."""

    results: dict[int, ReceivedResult]
    failures: list[ClientFailure]
    pulls: dict[int, int] = field(default_factory=dict)
