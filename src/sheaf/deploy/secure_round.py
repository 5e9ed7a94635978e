"""The server's side of a deployed round of secure aggregation: its state machine over the network.

The round's fit results are in (:class:`~sheaf.deploy.coordinator.Coordinator`): each
carries its client's first protocol message, AdvertiseKeys, which must name the client
whose authenticated stream carried it. From there :func:`run_secure_round` runs
:mod:`sheaf.secagg.server` stage by stage: it publishes what the state machine sends each
client (:class:`~sheaf.deploy.secagg_exchange.SecAggExchange`, which the ``SecAgg``
handler hands out and fills), waits until every client that got through has answered,
every one still silent has been silent for ``server.heartbeat_timeout``, or the stage's
deadline (``server.round_timeout / 5``) has passed, and closes the stage; a client that
did not answer has dropped out, one whose message was refused has failed with the reason.
What comes out is the survivors' ring sum (:class:`~sheaf.strategies.base.MaskedSum`) —
or, when fewer than T clients got through a stage, an aborted one with the reason: the
server has learnt nothing but masked values, and the round loop skips the round.

Example:
    >>> stage_seconds(60.0)
    12.0
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sheaf.core.errors import SecAggError
from sheaf.deploy.coordinator import Coordinator
from sheaf.deploy.logs import log_event
from sheaf.secagg.driver import Stage
from sheaf.secagg.messages import AdvertiseKeys, ServerMessage, decode_message, encode_message
from sheaf.secagg.server import ServerStage, server_close, server_receive, start_server
from sheaf.secagg.setup import ProtocolSetup
from sheaf.strategies.base import MaskedSum

__all__ = ["SecureRound", "run_secure_round", "stage_seconds"]

_log = logging.getLogger("sheaf.server")

#: The stages after the keys (which travel with the fit results), and the server message
#: each answers (``want``).
_STAGES = ((Stage.SHARES, 1), (Stage.INPUT, 2), (Stage.SIGNATURE, 3), (Stage.UNMASKING, 4))
_WHAT = {
    Stage.SHARES: "its shares",
    Stage.INPUT: "its masked input",
    Stage.SIGNATURE: "its consistency signature",
    Stage.UNMASKING: "its unmasking shares",
}


def stage_seconds(round_timeout: float) -> float:
    """The deadline of each protocol stage after training: ``round_timeout`` split over five."""
    return round_timeout / 5


@dataclass(frozen=True)
class SecureRound:
    """What a deployed protocol gave.

    Attributes:
        outcome: the survivors' ring sum (or the abort and why), for the strategy.
        failures: the clients of the protocol that dropped out or were refused, with why.
    """

    outcome: MaskedSum
    failures: Mapping[int, str]


def _advertised(client_id: int, data: bytes, setup: ProtocolSetup) -> AdvertiseKeys:
    """The client's AdvertiseKeys from its fit result (bound to the channel that carried it)."""
    if not data:
        raise SecAggError("its fit result carried no secure-aggregation keys")
    message = decode_message(data)
    if not isinstance(message, AdvertiseKeys):
        raise SecAggError(f"its fit result carried {type(message).__name__}, not AdvertiseKeys")
    if message.client != client_id:
        raise SecAggError(f"client {client_id} advertised keys in the name of client {message.client}")
    if message.instance != setup.instance:
        raise SecAggError("its keys are for another protocol instance")
    return message


def _encoded(outbox: Mapping[int, ServerMessage]) -> dict[int, bytes]:
    return {client: encode_message(message) for client, message in outbox.items()}


def run_secure_round(
    coordinator: Coordinator, round: int, setup: ProtocolSetup, adverts: Mapping[int, bytes]
) -> SecureRound:
    """Run SecAgg+ with the clients whose fit results carried ``adverts`` (their keys).

    The exchange was begun for ``setup`` before the cohort's tasks went out (clients whose
    results are in ask for their next message while others still train); it ends here.

    Args:
        coordinator: the server's live state (its clock, contacts and exchange).
        round: the round.
        setup: the instance the cohort's tasks carried.
        adverts: each client's AdvertiseKeys bytes, from its accepted fit result.
    """
    exchange = coordinator.secagg
    settings = coordinator.settings
    failures: dict[int, str] = {}
    server = start_server(setup)
    try:
        for client_id, data in sorted(adverts.items()):
            try:
                server = server_receive(server, _advertised(client_id, data, setup))
            except SecAggError as exc:
                failures[client_id] = f"secure aggregation refused its keys: {exc}"
        for stage, want in _STAGES:
            server, outbox = server_close(server)
            if server.stage is ServerStage.ABORTED:
                break
            exchange.publish(want, _encoded(outbox), stage)
            deadline = coordinator.now() + stage_seconds(settings.round_timeout)
            while not exchange.wait(0.2):
                now = coordinator.now()
                waiting = exchange.waiting_for()
                if now >= deadline or all(coordinator.silence(c) > settings.heartbeat_timeout for c in waiting):
                    break
                coordinator.tick()
            inbox, refused = exchange.take()
            for client_id in sorted(set(outbox) - set(inbox) - set(refused)):
                failures.setdefault(client_id, f"dropped out of secure aggregation before sending {_WHAT[stage]}")
            for client_id, reason in refused.items():
                failures.setdefault(client_id, f"secure aggregation refused its message: {reason}")
            for client_id, message in inbox.items():
                try:
                    server = server_receive(server, message)
                except SecAggError as exc:
                    failures.setdefault(client_id, f"secure aggregation refused its message: {exc}")
            log_event(
                _log, logging.INFO, "secagg_stage", round=round, stage=stage.name.lower(), answered=len(inbox),
                expected=len(outbox),
            )  # fmt: skip
        else:
            server, _ = server_close(server)
    finally:
        exchange.end(server.reason)
    arrived = len(adverts)
    if server.stage is not ServerStage.DONE or server.result is None:
        log_event(_log, logging.WARNING, "secagg_aborted", round=round, reason=server.reason)
        return SecureRound(MaskedSum(None, (), arrived, server.reason or "the protocol did not finish"), failures)
    survivors = tuple(sorted(server.survivors))
    for client_id in survivors:  # in the sum whatever happened to it later: not a failure
        failures.pop(client_id, None)
    log_event(_log, logging.INFO, "secagg_done", round=round, survivors=len(survivors), arrived=arrived)
    return SecureRound(MaskedSum(server.result, survivors, arrived), failures)
