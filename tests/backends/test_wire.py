"""Worker replies are data: decoded without pickle, validated, refused when malformed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sheaf.backends._collect import EvalCollector, FitCollector
from sheaf.backends._wire import fit_message, fit_states, pack, unpack
from sheaf.core.errors import BackendError
from sheaf.core.params import Params

PARAMS = Params({"w": np.zeros((2, 2), np.float32)})


def test_messages_round_trip_tensors_of_every_allowed_kind() -> None:
    arrays = [np.arange(4, dtype=np.float32).reshape(2, 2), np.array([1, 2], np.int64), np.zeros(0)]
    header, back = unpack(pack({"op": "x", "n": 3}, arrays))
    assert header == {"op": "x", "n": 3}
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(arrays, back, strict=True))


def test_client_states_travel_with_their_clients() -> None:
    states = {7: {"c": Params({"v": np.ones(3)})}}
    header, arrays = unpack(fit_message([5, 7], states))
    assert header["clients"] == [5, 7]
    decoded = fit_states(header["states"], arrays)
    assert list(decoded) == [7] and decoded[7]["c"].array_equal(states[7]["c"])


def forged(header: dict, tail: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return len(head).to_bytes(8, "little") + head + tail


@pytest.mark.parametrize(
    "message",
    [
        b"\x05",
        forged({"op": "fit"}),  # no tensor list
        forged({"op": "fit", "_tensors": [["object", [1]]]}, b"x" * 8),  # a dtype that could run code
        forged({"op": "fit", "_tensors": [["float32", [4]]]}, b"x" * 8),  # too few bytes
        forged({"op": "fit", "_tensors": []}, b"extra"),  # bytes left over
    ],
)
def test_malformed_messages_are_refused(message: bytes) -> None:
    with pytest.raises(BackendError, match="malformed message from a worker"):
        unpack(message)


@pytest.mark.parametrize(
    "header",
    [
        {"op": "fit", "client": -1, "ok": False, "reason": "x"},
        {
            "op": "fit",
            "client": 1,
            "ok": True,
            "metrics": {"loss": "high"},
            "num_examples": 3,
            "state": None,
            "summed": True,
        },
        {"op": "fit", "client": 1, "ok": True, "metrics": {}, "num_examples": 2.5, "state": None, "summed": True},
        {
            "op": "fit",
            "client": 1,
            "ok": True,
            "metrics": {},
            "num_examples": 2,
            "state": None,
            "summed": False,
            "delta": ["w", "v"],
            "extras": [],
        },
    ],
)
def test_replies_that_do_not_make_sense_are_refused(header: dict) -> None:
    with pytest.raises(BackendError, match="malformed"):
        FitCollector(PARAMS, reduce=True).add_reply(
            pack(header, [np.zeros((2, 2), np.float32)] if "delta" in header else []), header["client"]
        )


def test_evaluation_replies_are_validated() -> None:
    collector = EvalCollector()
    ok = pack(
        {"op": "evaluate", "client": 2, "ok": True, "loss": 0.5, "num_examples": 4, "metrics": {"accuracy": 0.75}}
    )
    assert collector.add_reply(ok, 2) is False and collector.results[2].metrics == {"accuracy": 0.75}
    with pytest.raises(BackendError, match="malformed evaluation reply"):
        collector.add_reply(pack({"op": "evaluate", "client": 3, "ok": True, "loss": "?"}), 3)
    assert 3 not in collector.results


FAILED = {"op": "fit", "client": 5, "ok": False, "reason": "fit failed: boom"}
SUMMED = {
    "op": "fit",
    "client": 5,
    "ok": True,
    "metrics": {},
    "num_examples": 3,
    "state": None,
    "summed": True,
    "norm": 1.5,
}


@pytest.mark.parametrize(
    ("header", "reduce", "why"),
    [
        (FAILED, True, "a reply for client 5 where 6 was due"),
        (SUMMED, False, "summed=True where reduce=False"),
        ({**SUMMED, "summed": 1}, True, "summed=1"),
    ],
)
def test_a_reply_for_another_client_or_a_sum_nobody_asked_for_is_refused_and_nothing_recorded(
    header: dict, reduce: bool, why: str
) -> None:
    collector = FitCollector(PARAMS, reduce=reduce)
    with pytest.raises(BackendError, match=why):
        collector.add_reply(pack(header), 6 if "reason" in header else 5)
    outcome = collector.outcome()
    assert (outcome.updates, outcome.failures, outcome.reports) == ([], [], [])


def test_a_partial_sum_must_weigh_what_its_clients_reported() -> None:
    from sheaf.core.exactsum import ExactSum

    collector = FitCollector(PARAMS, reduce=True)
    assert collector.add_reply(pack(SUMMED), 5) is True
    total = ExactSum(PARAMS)
    total.add({"w": np.ones((2, 2), np.float32)}, 4)  # the worker claims weight 4; client 5 reported 3
    header, arrays = total.to_arrays()
    with pytest.raises(BackendError, match=r"weight and count \(4, 1\) where its clients give \(3, 1\)"):
        collector.add_sum(pack({"op": "sum", "empty": False, **header}, arrays), [5])
    assert collector.summed is None
    with pytest.raises(BackendError, match="where its clients give"):
        collector.add_sum(pack({"op": "sum", "empty": True}), [5])
