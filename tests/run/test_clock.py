"""Synchronous rounds under the virtual clock: deadlines, over-selection, dropouts with reasons."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sheaf.core.devices import HOUR, DeviceProfiles
from sheaf.core.errors import ConfigError
from sheaf.run.clock import VirtualClock
from sheaf.run.export import export_run, round_rows
from sheaf.run.report import report_run
from sheaf.run.simulate import simulate
from sheaf.run.store import RunStore

SMALL = ["rounds=3", "clients=20", "backend=inline", "epochs=1", "evaluation.interval=3"]


def profiles(compute: list[float], hours: list[float] | None = None) -> DeviceProfiles:
    n = len(compute)
    one = np.full(n, 8e6)  # 8 MB/s: 1 s per 8 MB
    return DeviceProfiles(
        np.asarray(compute), one, one, np.zeros(n), np.zeros(n), np.asarray(hours or [24.0] * n, dtype=np.float64)
    )


def test_a_round_keeps_the_first_k_and_names_every_other_client() -> None:
    # durations: 1 s down + 10 * compute + 1 s up; client 3 is offline from 3 s after midnight
    clock = VirtualClock(profiles([1.0, 0.5, 3.0, 0.2, 2.0], [24, 24, 24, 3 / 3600, 24]), np.full(5, 10), 1, 8_000_000)
    plan = clock.plan_round([0, 1, 2, 3, 4], start=0.0, target=2, deadline=23.0)
    assert plan.train == [0, 1]  # arrive at 12 s and 7 s
    assert plan.end == 12.0  # the 2nd arrival
    reasons = dict(plan.dropped)
    assert reasons[3].startswith("went offline 3 s into 4 s of work")
    assert reasons[4].startswith("over-selected")  # arrives at 22 s, before the deadline
    assert reasons[2].startswith("straggler: would arrive 32 s after the start, past the 23 s deadline")


def test_without_enough_arrivals_the_round_ends_at_the_last_report_or_the_deadline() -> None:
    clock = VirtualClock(profiles([1.0, 3.0]), np.full(2, 10), 1, 8_000_000)
    assert clock.plan_round([0, 1], start=5.0, target=3, deadline=0.0).end == 5.0 + 32.0
    assert clock.plan_round([0, 1], start=5.0, target=3, deadline=20.0).end == 25.0


@settings(max_examples=60, deadline=None)
@given(
    compute=st.lists(st.floats(0.001, 10.0), min_size=1, max_size=12),
    target=st.integers(1, 12),
    deadline=st.sampled_from([0.0, 5.0, 30.0, 200.0]),
    start=st.floats(0, 48 * HOUR),
    hours=st.floats(0.01, 24.0),
)
def test_every_sampled_client_is_kept_or_dropped_once(
    compute: list[float], target: int, deadline: float, start: float, hours: float
) -> None:
    n = len(compute)
    clock = VirtualClock(profiles(compute, [hours] * n), np.arange(n) + 1, 2, 1_000_000)
    plan = clock.plan_round(list(range(n)), start=start, target=target, deadline=deadline)
    assert sorted(plan.train + [c for c, _ in plan.dropped]) == list(range(n))
    assert len(plan.train) <= target and plan.end >= start
    if deadline > 0:
        assert plan.end <= start + deadline + 1e-9
    for cid in plan.train:
        assert start + clock.duration(cid) <= plan.end + 1e-6


def test_the_clock_with_always_online_devices_changes_no_model_only_what_it_reports(tmp_path: Path) -> None:
    plain = simulate(overrides=[*SMALL, f"runs_dir={tmp_path}"])
    clocked = simulate(overrides=[*SMALL, f"runs_dir={tmp_path}", "devices.enabled=true"])
    assert plain.params.array_equal(clocked.params)
    times = [r.virtual_seconds for r in clocked.history]
    assert all(b > a >= 0 for a, b in zip([0.0, *times], times, strict=False))
    assert [r.virtual_seconds for r in plain.history] == [0.0] * 3
    without_time = [{**r.to_dict(), "virtual_seconds": 0.0, "seconds": 0.0} for r in clocked.history]
    assert without_time == [{**r.to_dict(), "seconds": 0.0} for r in plain.history]


def test_over_selection_trains_only_the_first_k_and_records_the_rest(tmp_path: Path) -> None:
    result = simulate(
        overrides=[*SMALL, f"runs_dir={tmp_path}", "devices.enabled=true", "fraction=0.25", "overselect=0.6"]
    )
    for record in result.history:
        assert (record.sampled, record.completed, record.failed) == (8, 5, 3)
    reasons = [r for (r,) in sqlite3.connect(result.run_path).execute("SELECT reason FROM failures")]
    assert len(reasons) == 9 and all(r.startswith("over-selected: arrived after the first 5") for r in reasons)


def test_a_deadline_drops_the_stragglers_and_bounds_the_round(tmp_path: Path) -> None:
    # uniform devices: 1 s per sample, so a client's time is its training rows (plus ~0 transfer)
    overrides = [*SMALL, f"runs_dir={tmp_path}", "devices.enabled=true", "profiles=uniform", "compute=1"]
    free = simulate(overrides=overrides)
    bounded = simulate(overrides=[*overrides, "deadline=60"])
    assert all(r.failed == 0 for r in free.history)
    assert sum(r.failed for r in bounded.history) > 0
    assert all(r.completed + r.failed == r.sampled for r in bounded.history)
    bounded_steps = np.diff([0.0, *(r.virtual_seconds for r in bounded.history)])
    free_steps = np.diff([0.0, *(r.virtual_seconds for r in free.history)])
    assert (bounded_steps > 0).all() and (bounded_steps <= 60 + 1e-9).all() and free_steps.max() > 60
    reasons = [r for (r,) in sqlite3.connect(bounded.run_path).execute("SELECT reason FROM failures")]
    assert reasons and all("past the 60 s deadline" in r for r in reasons)


def test_diurnal_devices_are_sampled_only_while_online(tmp_path: Path) -> None:
    result = simulate(
        overrides=[*SMALL, f"runs_dir={tmp_path}", "devices.enabled=true", "availability=diurnal", "clients=60"]
    )
    assert all(0 < r.sampled < 30 for r in result.history)  # about a third are online at a time
    assert result.history[-1].virtual_seconds > 0 and math.isfinite(result.history[-1].virtual_seconds)


def test_a_resumed_clocked_run_goes_on_from_its_virtual_time(tmp_path: Path) -> None:
    overrides = [*SMALL, f"runs_dir={tmp_path}", "devices.enabled=true", "deadline=30", "name=r"]

    class Stop:
        def on_start(self, *args: object) -> None: ...

        def on_round(self, record: object) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate(overrides=overrides, listener=Stop())
    resumed = simulate(overrides=overrides)
    whole = simulate(overrides=[*overrides[:-1], "name=whole"])
    assert resumed.params.array_equal(whole.params)
    assert [r.virtual_seconds for r in resumed.history] == [r.virtual_seconds for r in whole.history]


def test_poisson_cohorts_cannot_be_over_selected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="devices.overselect needs strategy.sampling = 'fixed'"):
        simulate(
            overrides=[*SMALL, f"runs_dir={tmp_path}", "devices.enabled=true", "overselect=0.2", "sampling=poisson"]
        )


def test_a_run_stored_before_the_clock_existed_still_resumes(tmp_path: Path) -> None:
    overrides = [*SMALL, f"runs_dir={tmp_path}", "name=old", "rounds=2"]
    first = simulate(overrides=overrides)
    with RunStore.open(first.run_path) as store:  # what an older sheaf wrote: no [devices], no [asynchronous]
        older = {k: v for k, v in store.config.items() if k not in ("devices", "asynchronous")}
        store.set_meta("config", older)
    again = simulate(overrides=[*SMALL, f"runs_dir={tmp_path}", "name=old", "rounds=2"])
    assert again.params.array_equal(first.params)


def test_the_report_plots_accuracy_against_virtual_time(tmp_path: Path) -> None:
    clocked = simulate(overrides=[*SMALL, f"runs_dir={tmp_path}", "devices.enabled=true"])
    plain = simulate(overrides=[*SMALL, f"runs_dir={tmp_path}"])
    assert "virtual_time.png" in [p.name for p in report_run(clocked.run_path, tmp_path / "clocked")]
    assert "virtual_time.png" not in [p.name for p in report_run(plain.run_path, tmp_path / "plain")]


def test_exports_carry_the_virtual_time(tmp_path: Path) -> None:
    clocked = simulate(overrides=[*SMALL, f"runs_dir={tmp_path}", "devices.enabled=true"])
    rows = round_rows(clocked.history)
    assert [row["virtual_seconds"] for row in rows] == [r.virtual_seconds for r in clocked.history]
    written = export_run(clocked.run_path, tmp_path / "out", "csv")
    assert any("virtual_seconds" in path.read_text().splitlines()[0] for path in written if path.suffix == ".csv")
