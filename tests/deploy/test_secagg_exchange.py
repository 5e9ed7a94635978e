"""The server's judge of clients' secure-aggregation messages: each refusal, and what passes.

Every branch is a defence: a message is taken only for the open stage, once, from a client
that stage expects, within the stage's size, decodable, of the stage's type and instance,
and in the name of the client whose channel carried it.
"""

from __future__ import annotations

import numpy as np
import pytest

from sheaf.deploy.secagg_exchange import SecAggExchange, max_client_bytes
from sheaf.secagg.driver import Stage
from sheaf.secagg.messages import ConsistencySignature, MaskedInput, encode_message
from sheaf.secagg.setup import protocol_setup

INSTANCE = bytes(range(16))
SETUP = protocol_setup(range(5), instance=INSTANCE, graph_seed=1, bits=32, length=6)


def _collecting_inputs() -> SecAggExchange:
    exchange = SecAggExchange()
    exchange.begin(3, SETUP)
    exchange.publish(2, dict.fromkeys((0, 1, 2), b"forwarded shares"), Stage.INPUT)
    return exchange


def _input(client: int, instance: bytes = INSTANCE, length: int = 6) -> bytes:
    return encode_message(MaskedInput(instance, client, 32, np.zeros(length, np.uint32)))


@pytest.mark.parametrize(
    ("client", "round", "data", "reason"),
    [
        (0, 2, _input(0), "no secure aggregation of round 2 with this instance is in progress"),
        (3, 3, _input(3), "client 3 has no secure-aggregation message due now"),
        (0, 3, _input(0, length=10_000), "a MaskedInput message of this protocol is at most 132 bytes, got 40,044"),
        (0, 3, b"SA\x02\x05" + bytes(20), "malformed MaskedInput message"),
        (0, 3, encode_message(ConsistencySignature(INSTANCE, 0, bytes(64))), "ConsistencySignature while the server collects MaskedInput messages"),
        (0, 3, _input(0, instance=bytes(16)), "a message of another protocol instance"),
        (0, 3, _input(1), "client 0 sent a message in the name of client 1"),
    ],
)  # fmt: skip
def test_a_clients_message_is_refused_with_the_reason(client: int, round: int, data: bytes, reason: str) -> None:
    exchange = _collecting_inputs()

    problem = exchange.submit(client, round, INSTANCE, data)

    assert problem is not None and problem.startswith(reason)
    assert 0 not in exchange.take()[0]


def test_a_good_message_is_taken_once_and_a_second_is_refused() -> None:
    exchange = _collecting_inputs()

    assert exchange.submit(0, 3, INSTANCE, _input(0)) is None
    assert exchange.submit(0, 3, INSTANCE, _input(0)) == "client 0 already sent its MaskedInput message"
    assert exchange.waiting_for() == {1, 2}
    taken, refused = exchange.take()
    assert list(taken) == [0] and refused == {}


def test_a_client_hears_its_own_message_and_that_the_protocol_went_on_without_it() -> None:
    exchange = _collecting_inputs()

    assert exchange.message_for(1, 3, INSTANCE, 2) == (b"forwarded shares", False, "")
    assert exchange.message_for(4, 3, INSTANCE, 2) == (b"", True, "the protocol went on without this client")
    assert exchange.message_for(1, 3, INSTANCE, 3) == (b"", False, "")  # not yet
    exchange.end("only 2 masked inputs arrived, fewer than the minimum of 3")
    assert exchange.message_for(1, 3, INSTANCE, 3) == (
        b"",
        True,
        "secure aggregation aborted: only 2 masked inputs arrived, fewer than the minimum of 3",
    )


def test_each_stages_bound_holds_the_largest_honest_message() -> None:
    # 100 clients, 30 neighbours, 10^5 ring elements: the bounds are the measured sizes plus 64 bytes.
    setup = protocol_setup(range(100), instance=INSTANCE, graph_seed=0, bits=32, length=100_000)
    assert max_client_bytes(setup, Stage.SHARES) == 32 + 196 * setup.degree + 64
    assert max_client_bytes(setup, Stage.INPUT) == 44 + 4 * 100_000 + 64
    assert max_client_bytes(setup, Stage.SIGNATURE) == 164
