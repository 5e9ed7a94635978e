"""Steps are generic in their state: mypy catches a step whose functions disagree about it."""

from __future__ import annotations

from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api", reason="mypy is a test dependency")

HEADER = """
from typing import NamedTuple

from sheaf.core.params import Params
from sheaf.strategies.base import Broadcast, EmptyState, RoundContext, ServerStep, init_empty


class Radius(NamedTuple):
    radius: float


def init(params: Params) -> Radius:
    return Radius(1.0)


def apply(delta: Params, state: Radius, ctx: RoundContext) -> tuple[Params, Radius]:
    return delta, state


def announce(state: Radius, ctx: RoundContext) -> Broadcast:
    return Broadcast({"r": state.radius}, {})


def announce_empty(state: EmptyState, ctx: RoundContext) -> Broadcast:
    return Broadcast({}, {})
"""

#: line of the module -> the error mypy must report there (None: none).
CASES = {
    'ok = ServerStep(init, apply, "ok", configure=announce)': None,
    'mixed_init = ServerStep(init_empty, apply, "mixed", configure=announce)': 'Cannot infer value of type parameter "S"',
    'mixed_configure = ServerStep(init, apply, "mixed", configure=announce_empty)': 'Cannot infer value of type parameter "S"',
    'annotated: ServerStep[Radius] = ServerStep(init_empty, apply, "mixed")': 'Argument 1 to "ServerStep"',
}


def test_mypy_refuses_a_step_whose_functions_expect_different_states(tmp_path: Path) -> None:
    source = tmp_path / "steps.py"
    source.write_text(HEADER + "\n\n" + "\n".join(CASES) + "\n")
    first = HEADER.count("\n") + 3  # the line of the first case
    # The project's own cache: checking sheaf and numpy afresh takes tens of seconds, once.
    cache = Path(__file__).resolve().parents[2] / ".mypy_cache"
    out, err, _ = mypy_api.run(["--strict", "--no-error-summary", "--cache-dir", str(cache), str(source)])
    errors = {int(line.split(":")[1]): line for line in (out + err).splitlines() if ": error:" in line}
    for offset, (line, expected) in enumerate(CASES.items()):
        found = errors.get(first + offset)
        if expected is None:
            assert found is None, (line, found)
        else:
            assert found is not None and expected in found, (line, found, errors)
