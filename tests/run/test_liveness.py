"""A run is finished, running or interrupted — never "running" once its writer is dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sheaf.core.errors import StoreError
from sheaf.deploy.status import run_status
from sheaf.run.listing import list_runs
from sheaf.run.liveness import RunState, process_alive, run_state, writer_identity
from sheaf.run.store import RunStore

ROOT = Path(__file__).resolve().parents[2]


def state_of(path: Path) -> RunState:
    with RunStore.open(path, readonly=True) as store:
        return run_state(store.meta)


def test_the_current_process_is_alive_and_a_finished_child_is_not() -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    me = writer_identity()

    assert process_alive(me) is True
    assert process_alive({**me, "pid": int(child.stdout)}) is False
    assert process_alive({**me, "start": "1"}) is False  # same pid, another process (pid reused)
    assert process_alive({**me, "boot": "another-boot"}) is False
    assert process_alive({**me, "host": "another-machine"}) is None


def test_the_store_word_alone_never_makes_a_run_running() -> None:
    dead = {**writer_identity(), "pid": 0}
    now = time.time()

    assert run_state({"status": "running", "writer": dead}) is RunState.INTERRUPTED
    assert run_state({"status": "running"}) is RunState.INTERRUPTED  # nobody claims to write it
    assert run_state({"status": "interrupted", "writer": writer_identity()}) is RunState.INTERRUPTED
    assert run_state({"status": "finished", "writer": dead}) is RunState.FINISHED
    # another machine's server: its heartbeat decides
    remote = {"host": "elsewhere", "pid": 7}
    fresh = {"state": "running", "updated": now - 2}
    stale = {"state": "running", "updated": now - 60}
    assert run_state({"status": "running", "writer": remote, "server": fresh}, now=now) is RunState.RUNNING
    assert run_state({"status": "running", "writer": remote, "server": stale}, now=now) is RunState.INTERRUPTED
    assert run_state({"status": "running", "writer": writer_identity(), "server": {"state": "stopped"}}) is (
        RunState.INTERRUPTED
    )


@pytest.mark.e2e
def test_a_killed_simulation_is_interrupted_not_running(tmp_path: Path) -> None:
    code = (
        "import sheaf; sheaf.simulate(overrides=['rounds=100000', 'clients=4', 'partition=iid', 'fraction=1', "
        f"'backend=inline', 'name=victim', 'runs_dir={tmp_path}'])"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    store = tmp_path / "victim.sqlite"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with RunStore.open(store, readonly=True) as reader:
                    if reader.last_round >= 1:
                        break
            except StoreError:  # not created yet, or still being created
                pass
            time.sleep(0.05)
        assert state_of(store) is RunState.RUNNING
        assert run_status(store)["status"] == "running"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert state_of(store) is RunState.INTERRUPTED
    assert run_status(store)["status"] == "interrupted"  # sheaf status
    (summary,) = list_runs(tmp_path)  # sheaf runs and the dashboard
    assert summary.state is RunState.INTERRUPTED and summary.rounds_done >= 1
