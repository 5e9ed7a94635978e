"""The secure-aggregation messages of the round in progress, between the handlers and the round.

Two threads share it, as they share the :class:`~sheaf.deploy.coordinator.Coordinator`:
the round (the backend's thread) *publishes* what the server's state machine sends each
client at the close of a stage, and *takes* what clients answered; the service's
``SecAgg`` handler (the event loop) *submits* a client's message and hands each client
the server message it asks for.

Every client message is judged here before the state machine sees it, on the side whose
data is at stake — the server's memory: only a client the open stage expects may send, once;
its bytes are bounded by what that stage's message can hold for this instance (the
neighbour degree, the cohort, the ring) before they are decoded; the message must be of the
stage's type, of this instance, and name the very client whose authenticated channel
carried it (a client cannot speak for another: the consistency check assumes the server
cannot forge a signing key, so no one else may advertise or sign for a client). A refused
message settles that client's part as a failure with the reason; the round goes on.

Example:
    >>> from sheaf.secagg.setup import protocol_setup
    >>> setup = protocol_setup(range(4), instance=bytes(16), graph_seed=0, bits=16, length=8)
    >>> exchange = SecAggExchange()
    >>> exchange.begin(1, setup)
    >>> exchange.publish(1, {0: b"peer keys for 0"}, Stage.SHARES)
    >>> exchange.message_for(0, 1, bytes(16), 1)
    (b'peer keys for 0', False, '')
    >>> exchange.submit(0, 1, bytes(16), b"x" * 10_000)
    'a ShareKeys message of this protocol is at most 684 bytes, got 10,000'
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from sheaf.core.errors import SecAggError
from sheaf.secagg.driver import Stage
from sheaf.secagg.messages import (
    ClientMessage,
    ConsistencySignature,
    MaskedInput,
    ShareKeys,
    UnmaskShares,
    decode_message,
)
from sheaf.secagg.setup import ProtocolSetup

__all__ = ["STAGE_MESSAGES", "SecAggExchange", "max_client_bytes", "max_server_bytes"]

#: The message a client sends at each stage after its keys.
STAGE_MESSAGES: dict[Stage, type[ClientMessage]] = {
    Stage.SHARES: ShareKeys,
    Stage.INPUT: MaskedInput,
    Stage.SIGNATURE: ConsistencySignature,
    Stage.UNMASKING: UnmaskShares,
}
#: Slack over a message's exact size (headers, length fields).
_SLACK = 64


def max_client_bytes(setup: ProtocolSetup, stage: Stage) -> int:
    """The most bytes a client's message of ``stage`` may have in this instance.

    Example:
        >>> from sheaf.secagg.setup import protocol_setup
        >>> setup = protocol_setup(range(100), instance=bytes(16), graph_seed=0, bits=32, length=1000)
        >>> max_client_bytes(setup, Stage.INPUT)
        4108
    """
    k = setup.degree
    if stage is Stage.SHARES:
        return 32 + 196 * k + _SLACK  # a sealed pair of shares is 176 bytes, plus its recipient and lengths
    if stage is Stage.INPUT:
        return 44 + math.ceil(setup.bits / 8) * setup.length + _SLACK
    if stage is Stage.SIGNATURE:
        return 100 + _SLACK
    if stage is Stage.UNMASKING:
        return 40 + 78 * k + _SLACK  # one share (66 bytes) and its owner per neighbour
    return 140 + _SLACK  # AdvertiseKeys


def max_server_bytes(setup: ProtocolSetup, want: int) -> int:
    """The most bytes a server message a client waits for (``want`` 1 to 4) may have.

    Example:
        >>> from sheaf.secagg.setup import protocol_setup
        >>> setup = protocol_setup(range(10), instance=bytes(16), graph_seed=0, bits=32, length=10)
        >>> [max_server_bytes(setup, want) for want in (1, 2, 3, 4)]
        [1312, 1852, 172, 1012]
    """
    k, n = setup.degree, len(setup.clients)
    sizes = {1: 24 + 136 * k, 2: 24 + 196 * k, 3: 28 + 8 * n, 4: 28 + 92 * n}
    if want not in sizes:
        raise SecAggError(f"no server message {want}")
    return sizes[want] + _SLACK


def _size(value: int) -> str:
    return f"{value:,}"


class SecAggExchange:
    """The protocol messages of one round, between two threads (see the module docstring).

    Args:
        wakeup: called (without the lock) whenever something a waiting handler may want
            changed: a published message, the protocol's end.
    """

    def __init__(self, wakeup: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)
        self._wakeup = wakeup
        self._round = 0
        self._setup: ProtocolSetup | None = None
        self._collecting: Stage | None = None
        self._expected: set[int] = set()
        self._inbox: dict[int, ClientMessage] = {}
        self._refused: dict[int, str] = {}
        self._outbox: dict[int, dict[int, bytes]] = {}
        self._over = True
        self._reason = ""

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup()

    # The round's side ---------------------------------------------------------------------
    def begin(self, round: int, setup: ProtocolSetup) -> None:
        """Start a protocol instance (nothing published, nothing collected yet)."""
        with self._lock:
            self._round, self._setup = round, setup
            self._collecting, self._expected = None, set()
            self._inbox, self._refused, self._outbox = {}, {}, {}
            self._over, self._reason = False, ""

    def publish(self, want: int, outbox: dict[int, bytes], collecting: Stage) -> None:
        """Hand out server message ``want`` (bytes per client) and collect ``collecting`` from them."""
        with self._lock:
            self._outbox[want] = dict(outbox)
            self._collecting, self._expected = collecting, set(outbox)
            self._inbox, self._refused = {}, {}
        self._wake()

    def progress(self) -> dict[str, object] | None:
        """The open stage and whom it awaits (for ``sheaf status``), or None."""
        with self._lock:
            if self._over or self._collecting is None:
                return None
            waiting = sorted(self._expected - set(self._inbox) - set(self._refused))
            return {"round": self._round, "stage": self._collecting.name.lower(), "waiting_for": waiting[:50]}

    def waiting_for(self) -> set[int]:
        """The clients the open stage still awaits."""
        with self._lock:
            return self._expected - set(self._inbox) - set(self._refused)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every expected answer; whether all are in."""
        with self._lock:
            if not self._expected - set(self._inbox) - set(self._refused):
                return True
            self._answered.wait(timeout)
            return not self._expected - set(self._inbox) - set(self._refused)

    def take(self) -> tuple[dict[int, ClientMessage], dict[int, str]]:
        """Close the collection: the messages that came (by client) and the refused ones (why)."""
        with self._lock:
            inbox, refused = dict(sorted(self._inbox.items())), dict(self._refused)
            self._collecting, self._expected = None, set()
            self._inbox, self._refused = {}, {}
            return inbox, refused

    def end(self, reason: str = "") -> None:
        """The protocol is over (``reason``: why, if it aborted); waiting clients are told."""
        with self._lock:
            self._over, self._reason = True, reason
            self._collecting, self._expected = None, set()
            self._outbox = {}
        self._wake()

    # The handlers' side -------------------------------------------------------------------
    def _current(self, round: int, instance: bytes) -> str:
        setup = self._setup
        if self._over or setup is None or round != self._round or instance != setup.instance:
            return f"no secure aggregation of round {round} with this instance is in progress"
        return ""

    def submit(self, client_id: int, round: int, instance: bytes, data: bytes) -> str | None:
        """Take a client's message for the open stage; None if accepted, else why not.

        ``client_id`` is the client whose authenticated channel carried it.
        """
        with self._lock:
            problem = self._current(round, instance)
            if problem:
                return problem
            stage, setup = self._collecting, self._setup
            assert setup is not None
            if stage is None or client_id not in self._expected:
                return f"client {client_id} has no secure-aggregation message due now"
            if client_id in self._inbox or client_id in self._refused:
                return f"client {client_id} already sent its {STAGE_MESSAGES[stage].__name__} message"
            kind = STAGE_MESSAGES[stage]
            limit = max_client_bytes(setup, stage)
            problem = ""
            if len(data) > limit:
                problem = f"a {kind.__name__} message of this protocol is at most {_size(limit)} bytes, got {_size(len(data))}"
            else:
                try:
                    message = decode_message(data)
                except SecAggError as exc:
                    problem = f"malformed {kind.__name__} message: {exc}"
                else:
                    if not isinstance(message, kind):
                        problem = f"{type(message).__name__} while the server collects {kind.__name__} messages"
                    elif message.instance != setup.instance:
                        problem = "a message of another protocol instance"
                    elif message.client != client_id:
                        problem = f"client {client_id} sent a message in the name of client {message.client}"
            if problem:
                self._refused[client_id] = problem
            else:
                assert isinstance(message, kind)
                self._inbox[client_id] = message
            self._answered.notify_all()
            return problem or None

    def message_for(self, client_id: int, round: int, instance: bytes, want: int) -> tuple[bytes, bool, str]:
        """``(message, over, detail)``: server message ``want`` for this client, if published.

        Empty and not over: not yet (ask again). Over: the protocol ended, or went on
        without this client.
        """
        with self._lock:
            problem = self._current(round, instance)
            if problem:
                reason = f": {self._reason}" if self._reason and round == self._round else ""
                return b"", True, (f"secure aggregation aborted{reason}" if reason else problem)
            outbox = self._outbox.get(want)
            if outbox is None:
                return b"", False, ""
            if client_id not in outbox:
                return b"", True, "the protocol went on without this client"
            return outbox[client_id], False, ""
