"""Same config and seed, same model — whatever ran before it in the process, in any order.

The configurations of ``test_behaviour_unchanged`` have digests recorded each in a fresh
process. Here Hypothesis draws an order for some of them, on several backends, with runs
of other configurations in between (another thread count, other strategies and models,
another device setting, a pool of another size, sharded evaluation), all in this one
process, as a notebook user would run them; every recorded configuration must still give
its recorded digest.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sheaf.run.simulate import simulate
from sheaf.task.torch_task import TorchTask
from tests.backends.tasks import Stateful, image_cnn, image_digits
from tests.run.behaviour import CONFIGS, digest, overrides

RECORDED: dict[str, dict[str, str]] = json.loads(
    (Path(__file__).parent / "fixtures" / "behaviour_digests.json").read_text()
)

#: The recorded runs drawn from (configuration, backend).
RECORDED_RUNS = [(name, backend) for name in sorted(CONFIGS) for backend in ("inline", "vectorized", "pool")]


def _other(kind: int, folder: str) -> None:
    """A run of another configuration, to leave whatever state it leaves behind."""
    base = ["rounds=2", "clients=6", f"runs_dir={folder}"]
    if kind == 0:
        simulate(overrides=[*base, "threads=2", "strategy=fedprox", "backend=inline"])
    elif kind == 1:
        simulate(overrides=[*base, "backend=vectorized", "strategy=fedadam", "strategy.lr=0.1", "engine.memory_mb=1"])
    elif kind == 2:
        simulate(overrides=[*base, "backend=pool", "engine.workers=1", "seed=3", "partition=iid"])
    elif kind == 3:
        simulate(
            overrides=[*base, "backend=inline", "evaluation.shard_rows=7"],
            task=TorchTask(image_cnn),
            federation=image_digits(),
        )
    elif kind == 4:
        simulate(overrides=[*base, "backend=pool", "engine.workers=2", "threads=1"], task=Stateful())
    else:
        simulate(overrides=[*base, "engine.device=auto", "personalization.finetune_steps=1", "batch_size=3"])


steps = st.lists(
    st.one_of(
        st.sampled_from(RECORDED_RUNS).map(lambda run: ("recorded", run)),
        st.integers(min_value=0, max_value=5).map(lambda kind: ("other", kind)),
    ),
    min_size=4,
    max_size=7,
).filter(lambda drawn: any(kind == "recorded" for kind, _ in drawn))


@pytest.mark.e2e
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(steps)
def test_recorded_configurations_give_their_digests_in_any_order_between_other_runs(
    drawn: list[tuple[str, object]],
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for position, (kind, what) in enumerate(drawn):
            if kind == "other":
                _other(what, f"{folder}/{position}")  # type: ignore[arg-type]
                continue
            name, backend = what  # type: ignore[misc]
            result = simulate(overrides=overrides(name, backend, f"{folder}/{position}"))
            assert digest(result.params) == RECORDED[name][backend], (name, backend, drawn[:position])
