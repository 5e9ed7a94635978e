"""A deployed client's own state: it moves on only when the server aggregated its update."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sheaf.core.errors import DataError
from sheaf.core.params import Params
from sheaf.deploy.client_state import ClientStateFile


def counter(n: float) -> dict[str, Params]:
    return {"count": Params({"n": np.array([n], dtype=np.float64)})}


def value(state: object) -> float:
    assert isinstance(state, dict)
    return float(state["count"]["n"][0]) if state else 0.0


def test_pending_state_becomes_the_state_only_if_its_round_was_aggregated(tmp_path: Path) -> None:
    states = ClientStateFile(tmp_path / "s.npz")
    assert states.state_for(1, aggregated_round=0) == {}
    states.set_pending(1, counter(1.0))
    assert value(states.state_for(3, aggregated_round=1)) == 1.0  # round 1's update was used
    states.set_pending(3, counter(2.0))
    assert value(states.state_for(5, aggregated_round=1)) == 1.0  # round 3's was not: dropped
    states.set_pending(5, counter(2.0))
    assert value(ClientStateFile(tmp_path / "s.npz").state_for(6, aggregated_round=5)) == 2.0  # and it persists


def test_the_same_round_again_after_a_server_restart_keeps_the_old_state(tmp_path: Path) -> None:
    states = ClientStateFile(tmp_path / "s.npz")
    states.set_pending(1, counter(1.0))
    assert value(states.state_for(2, aggregated_round=1)) == 1.0
    states.set_pending(2, counter(2.0))
    # the server died before committing round 2 and sends round 2 again
    assert value(states.state_for(2, aggregated_round=1)) == 1.0


def test_an_unreadable_state_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "s.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="unreadable"):
        ClientStateFile(tmp_path / "s.npz")
