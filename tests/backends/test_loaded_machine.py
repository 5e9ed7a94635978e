"""Ray's actors on a busy machine: they train at the driver's priority, not Ray's niceness 15.

Ray lowers its workers to niceness 15 by default; beside three busy processes at niceness 0
on 2 cores each new actor then took 37–56 s to start instead of 1.4 s, and trained as slowly
(docs/backends.md, "On a loaded machine"). The backend starts Ray with
``local_ray_system_config()``, and so does the test session's Ray (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sheaf.backends.ray_backend import RayBackend
from sheaf.run.simulate import SimulationResult, simulate
from sheaf.run.store import RunStore
from tests.backends.tasks import SMALL, Niceness, digits

ROOT = Path(__file__).resolve().parents[2]


def niceness(result: SimulationResult) -> set[float]:
    with RunStore.open(result.run_path, readonly=True) as store:
        return {record.metrics["niceness"] for _, record in store.client_records(phase="fit")}


def run_script(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh Python with no Ray of ours (nor the caller's Ray settings), the
    runs' folder as its argument."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_worker_niceness")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "runs")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_actors_in_the_test_sessions_ray_train_at_the_drivers_niceness(
    tmp_path: Path, ray_session: None, caplog: pytest.LogCaptureFixture
) -> None:
    backend = RayBackend(workers=2, keep_actors=True)
    result = simulate(
        overrides=[*SMALL, "rounds=1", f"runs_dir={tmp_path}"], task=Niceness(), federation=digits(), backend=backend
    )
    assert niceness(result) == {float(os.nice(0))}
    assert not [r for r in caplog.records if "niceness" in r.getMessage()]


#: A run whose backend starts Ray itself (no Ray running in that process), printing the
#: niceness its clients trained at and the driver's.
OWN_RAY = """
import json, os, sys
from sheaf.backends.ray_backend import RayBackend
from sheaf.run.simulate import simulate
from sheaf.run.store import RunStore
from tests.backends.tasks import SMALL, Niceness, digits

result = simulate(overrides=[*SMALL, "rounds=1", "runs_dir=" + sys.argv[1]], task=Niceness(), federation=digits(),
                  backend=RayBackend(workers=1, keep_actors=True))
with RunStore.open(result.run_path, readonly=True) as store:
    seen = sorted({record.metrics["niceness"] for _, record in store.client_records(phase="fit")})
print(json.dumps({"actors": seen, "driver": os.nice(0)}))
"""


@pytest.mark.e2e
def test_actors_of_a_ray_the_backend_starts_train_at_the_drivers_niceness(tmp_path: Path) -> None:
    done = run_script(OWN_RAY, tmp_path)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["actors"] == [seen["driver"]]


#: A Ray whose workers sit one step below the driver's priority (Ray's own default is 15; 1
#: keeps this quick beside busy processes, where 15 took 215 s), then two runs that join it.
NICED_RAY = """
import logging, sys
import ray
from sheaf.backends.ray_backend import RayBackend
from sheaf.run.simulate import simulate
from tests.backends.tasks import SMALL, digits

logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", _system_config={"worker_niceness": 1})
for _ in range(2):  # warned once, not each run
    simulate(overrides=[*SMALL, "rounds=1", "runs_dir=" + sys.argv[1]], federation=digits(),
             backend=RayBackend(workers=1, keep_actors=True))
ray.shutdown()
"""


@pytest.mark.e2e
def test_a_run_in_a_ray_that_starves_its_actors_says_how_to_start_ray(tmp_path: Path) -> None:
    done = run_script(NICED_RAY, tmp_path)
    warned = [line for line in done.stderr.splitlines() if "sheaf ray: Ray runs the actors at niceness" in line]
    assert len(warned) == 1, done.stderr[-2000:]
    assert "ray.init(_system_config=sheaf.backends.local_ray_system_config())" in warned[0]
