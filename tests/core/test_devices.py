"""Device profiles: seeded, bounded, and every line of a hostile trace refused with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sheaf.core import devices
from sheaf.core.clock_config import AsyncConfig, DevicesConfig
from sheaf.core.config import load_config
from sheaf.core.devices import HOUR, device_profiles, load_trace
from sheaf.core.errors import ConfigError

HEADER = "compute,download_mbps,upload_mbps,tz_offset,online_start,online_hours\n"


def test_profiles_come_from_the_seed_alone() -> None:
    config = DevicesConfig(enabled=True, availability="diurnal")
    a, b = device_profiles(config, 50, seed=3), device_profiles(config, 50, seed=3)
    other = device_profiles(config, 50, seed=4)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("compute", "download", "hours", "offset"))
    assert not np.array_equal(a.compute, other.compute)


def test_mobile_devices_differ_about_tenfold_between_the_5th_and_95th_percentile() -> None:
    compute = device_profiles(DevicesConfig(enabled=True), 20_000, seed=0).compute
    ratio = np.percentile(compute, 95) / np.percentile(compute, 5)
    assert 8 < ratio < 12.5  # exp(2 * 1.645 * 0.7) = 10.0
    assert np.median(compute) == pytest.approx(0.01, rel=0.05)


def test_uniform_devices_are_all_the_median_one_and_always_online() -> None:
    p = device_profiles(DevicesConfig(enabled=True, profiles="uniform"), 5, seed=0)
    assert set(p.compute.tolist()) == {0.01} and p.online(12345.0).all()


@settings(max_examples=40, deadline=None)
@given(t=st.floats(0, 30 * 24 * HOUR), seed=st.integers(0, 100))
def test_availability_windows_are_consistent(t: float, seed: int) -> None:
    p = device_profiles(DevicesConfig(enabled=True, availability="diurnal", online_hours=6), 40, seed=seed)
    online = p.online(t)
    ids = np.flatnonzero(online)
    # an online device stays online until offline_at, which is at most its window away
    gone = p.offline_at(t, ids)
    assert (gone > t).all() and (gone <= t + p.hours[ids] * HOUR + 1e-6).all()
    # the next time someone is online is now if someone is, and someone is online then
    later = p.next_online(t)
    assert (later == t) == bool(online.any())
    assert p.online(later + 1e-6).any()


def test_a_device_is_online_about_its_share_of_the_day() -> None:
    p = device_profiles(DevicesConfig(enabled=True, availability="diurnal", online_hours=8), 400, seed=0)
    share = np.mean([p.online(h * 60.0).mean() for h in range(0, 24 * 60, 5)])
    assert share == pytest.approx(8 / 24, abs=0.03)


def test_a_trace_gives_client_i_row_i_mod_rows(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text(HEADER + "0.02,10,2,0,22,4\n0.005,80,16,-5,20,24\n")
    p = load_trace(f, 3)
    assert p.compute.tolist() == [0.02, 0.005, 0.02]
    assert p.download.tolist() == [10e6 / 8, 80e6 / 8, 10e6 / 8]
    assert p.hours.tolist() == [4, 24, 4]
    assert load_trace(f, 3, availability="always").hours.tolist() == [24, 24, 24]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("compute,upload_mbps\n1,1\n", "lacks the column(s) download_mbps"),
        (HEADER, "has no rows"),
        (HEADER + "abc,1,1,0,0,1\n", "line 2: compute = 'abc' is not a number"),
        (HEADER + "0.1,1,1,0,0,1\n-1,1,1,0,0,1\n", "line 3: compute = -1.0 is outside"),
        (HEADER + "nan,1,1,0,0,1\n", "compute = nan is outside"),
        (HEADER + "0.1,inf,1,0,0,1\n", "download_mbps = inf is outside"),
        (HEADER + "0.1,1,1,99,0,1\n", "tz_offset = 99.0 is outside"),
        (HEADER + "0.1,1,1,0,0,0\n", "online_hours = 0.0 is outside"),
        (HEADER + "0.1,,1,0,0,1\n", "column 'download_mbps' is empty"),
    ],
)
def test_a_bad_trace_is_refused_with_one_line_naming_what(tmp_path: Path, text: str, says: str) -> None:
    f = tmp_path / "t.csv"
    f.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_trace(f, 4)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_trace_is_bounded_before_it_is_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "t.csv"
    f.write_text(HEADER + "0.1,1,1,0,0,1\n" * 5)
    monkeypatch.setattr(devices, "MAX_TRACE_BYTES", 40)
    with pytest.raises(ConfigError, match="more than 40; shorten it"):
        load_trace(f, 2)
    monkeypatch.setattr(devices, "MAX_TRACE_BYTES", 1 << 20)
    monkeypatch.setattr(devices, "MAX_TRACE_ROWS", 3)
    with pytest.raises(ConfigError, match="more than 3 rows"):
        load_trace(f, 2)


def test_a_missing_or_binary_trace_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found; set devices.trace"):
        load_trace(tmp_path / "absent.csv", 2)
    f = tmp_path / "b.csv"
    f.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ConfigError, match="cannot be read as UTF-8"):
        load_trace(f, 2)


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("devices.compute=0", "devices.compute must be a finite number > 0"),
        ("devices.profiles=phones", "devices.profiles must be one of: mobile, uniform, trace"),
        ("devices.profiles=trace", "devices.trace must be a CSV file"),
        ("devices.online_hours=25", "devices.online_hours must be in (0, 24]"),
        ("devices.deadline=-1", "devices.deadline must be >= 0"),
        ("devices.overselect=-0.1", "devices.overselect must be in [0, 10]"),
        ("asynchronous.buffer=0", "asynchronous.buffer must be in 1..100000"),
        ("asynchronous.staleness=linear", "asynchronous.staleness must be one of: sqrt, none"),
        ("asynchronous.server_lr=0", "asynchronous.server_lr must be in (0, 100]"),
    ],
)
def test_bad_settings_name_the_key(override: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=[override])
    assert says in str(caught.value)


def test_the_sections_default_to_off() -> None:
    config = load_config()
    assert config.devices == DevicesConfig() and not config.devices.enabled
    assert config.asynchronous == AsyncConfig() and not config.asynchronous.enabled
