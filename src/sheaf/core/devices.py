"""Device profiles: how fast each simulated client computes and transfers, and when it is online.

A profile is five numbers per client: seconds of compute per training sample, download
and upload bandwidth (bytes per second), and a daily online window (its start, in hours
of the device's local day shifted by its time zone, and its length). They come from the
run seed alone (``Purpose.DEVICES``), so the same seed gives the same devices on every
backend, or from a CSV trace the user supplies (:func:`load_trace`).

The built-in ``mobile`` distributions (``docs/devices.md`` gives their sources):

- compute and bandwidth are log-normal around the configured medians; the default compute
  spread puts the 95th-percentile device ten times slower than the 5th. The shape follows
  the heavy-tailed heterogeneity of FedScale's device traces (Lai et al., "FedScale",
  ICML 2022; "Oort", OSDI 2021); the numbers are sheaf's assumptions, not a fit to them;
- availability is diurnal: a device is eligible for training about ``online_hours`` a
  day, in one window starting in its local evening (idle, charging, on Wi-Fi: the
  conditions of Bonawitz et al., SysML 2019 and Yang et al. 2018), in one of 24 time
  zones drawn uniformly.

Example:
    >>> from sheaf.core.clock_config import DevicesConfig
    >>> p = device_profiles(DevicesConfig(enabled=True, availability="diurnal"), 4, seed=0)
    >>> len(p), bool((p.compute > 0).all()), p.online(0.0).dtype
    (4, True, dtype('bool'))
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sheaf.core.clock_config import MAX_SECONDS, DevicesConfig
from sheaf.core.errors import ConfigError
from sheaf.core.rng import Purpose, stream

__all__ = ["MAX_TRACE_BYTES", "MAX_TRACE_ROWS", "TRACE_COLUMNS", "DeviceProfiles", "device_profiles", "load_trace"]

F64 = npt.NDArray[np.float64]
HOUR = 3600.0
DAY = 24 * HOUR

#: A trace file larger than this is refused before it is parsed.
MAX_TRACE_BYTES = 64 * 1024 * 1024
#: A trace with more rows than this is refused.
MAX_TRACE_ROWS = 1_000_000
#: The columns a trace must have (the last three may be left out: always online).
TRACE_COLUMNS = ("compute", "download_mbps", "upload_mbps", "tz_offset", "online_start", "online_hours")
_BOUNDS = {  # (low, high) each trace value must lie in
    "compute": (1e-9, MAX_SECONDS),
    "download_mbps": (1e-6, 1e6),
    "upload_mbps": (1e-6, 1e6),
    "tz_offset": (-24.0, 24.0),
    "online_start": (0.0, 24.0),
    "online_hours": (1e-6, 24.0),
}


@dataclass(frozen=True)
class DeviceProfiles:
    """Every client's device, as arrays indexed by client position.

    Attributes:
        compute: seconds of compute per training sample and epoch.
        download: download bandwidth, bytes per second.
        upload: upload bandwidth, bytes per second.
        offset: hours added to virtual time to get the device's local time.
        start: local hour its daily online window opens.
        hours: length of the window in hours (24: always online).
    """

    compute: F64
    download: F64
    upload: F64
    offset: F64
    start: F64
    hours: F64

    def __len__(self) -> int:
        return len(self.compute)

    def _phase(self, t: float, ids: npt.ArrayLike | None) -> tuple[F64, F64]:
        sel = slice(None) if ids is None else np.asarray(ids, dtype=np.int64)
        local = (t / HOUR + self.offset[sel] - self.start[sel]) % 24.0
        return local, self.hours[sel]

    def online(self, t: float, ids: npt.ArrayLike | None = None) -> npt.NDArray[np.bool_]:
        """Whether each device (all, or ``ids``) is online at virtual second ``t``."""
        phase, hours = self._phase(t, ids)
        return (hours >= 24.0) | (phase < hours)

    def offline_at(self, t: float, ids: npt.ArrayLike) -> F64:
        """When each of ``ids``, online at ``t``, goes offline (``inf``: never)."""
        phase, hours = self._phase(t, ids)
        return np.where(hours >= 24.0, math.inf, t + (hours - phase) * HOUR)

    def next_online(self, t: float) -> float:
        """The earliest virtual second at or after ``t`` at which any device is online."""
        phase, hours = self._phase(t, None)
        wait = np.where((hours >= 24.0) | (phase < hours), 0.0, (24.0 - phase) * HOUR)
        return t + float(wait.min())


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> F64:
    return median * np.exp(sigma * rng.standard_normal(n))


def device_profiles(config: DevicesConfig, num_clients: int, *, seed: int) -> DeviceProfiles:
    """The devices of ``num_clients`` clients, from the run seed (or the trace).

    Raises:
        ConfigError: if the trace cannot be read or holds a bad value (one line: which).
    """
    if config.profiles == "trace":
        return load_trace(Path(config.trace), num_clients, availability=config.availability)
    rng = stream(seed, Purpose.DEVICES)
    n = num_clients
    compute_sigma = config.compute_spread if config.profiles == "mobile" else 0.0
    bandwidth_sigma = config.bandwidth_spread if config.profiles == "mobile" else 0.0
    # Always drawn in this order, so each draw's values do not depend on the others' settings.
    compute = _lognormal(rng, config.compute, compute_sigma, n)
    down = _lognormal(rng, config.download_mbps, bandwidth_sigma, n) * 1e6 / 8
    up = _lognormal(rng, config.upload_mbps, bandwidth_sigma, n) * 1e6 / 8
    offset = rng.integers(-11, 13, n).astype(np.float64)
    start = 22.0 + rng.uniform(-2.0, 2.0, n)  # opens in the local evening, 20:00 to 24:00
    hours = np.clip(config.online_hours * rng.uniform(0.5, 1.5, n), 0.25, 24.0)
    if config.availability == "always":
        hours = np.full(n, 24.0)
    if config.profiles == "uniform":
        offset, start = np.zeros(n), np.full(n, 22.0)
        hours = np.full(n, 24.0 if config.availability == "always" else config.online_hours)
    return DeviceProfiles(compute, down, up, offset, start % 24.0, hours)


def _value(row: dict[str, str], key: str, line: int, default: float | None) -> float:
    text = (row.get(key) or "").strip()
    if not text:
        if default is None:
            raise ConfigError(f"device trace line {line}: column {key!r} is empty; give a number")
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"device trace line {line}: {key} = {text[:40]!r} is not a number") from None
    low, high = _BOUNDS[key]
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"device trace line {line}: {key} = {value!r} is outside [{low:g}, {high:g}]")
    return value


def load_trace(path: Path, num_clients: int, *, availability: str = "diurnal") -> DeviceProfiles:
    """Device profiles from a CSV file with the header :data:`TRACE_COLUMNS`.

    ``compute`` is seconds per sample, bandwidths in Mbit/s, time-zone offset and window
    start in hours; client ``i`` gets row ``i mod rows``. Without the last three columns
    (or with ``availability = "always"``) every device is always online. The file is
    bounded (:data:`MAX_TRACE_BYTES`, :data:`MAX_TRACE_ROWS`) and every value checked.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = f.write_text("compute,download_mbps,upload_mbps\\n0.02,10,2\\n0.005,50,10\\n")
        >>> load_trace(f, 3).compute.tolist()
        [0.02, 0.005, 0.02]

    Raises:
        ConfigError: if the file is missing, too large, not CSV, lacks a column or holds
            a value out of range (the message names the line).
    """
    try:
        size = path.stat().st_size
    except OSError:
        raise ConfigError(f"device trace {str(path)!r} not found; set devices.trace to a CSV file") from None
    if size > MAX_TRACE_BYTES:
        raise ConfigError(f"device trace {str(path)!r} is {size} bytes, more than {MAX_TRACE_BYTES}; shorten it")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"device trace {str(path)!r} cannot be read as UTF-8 text: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in TRACE_COLUMNS[:3] if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(
            f"device trace {str(path)!r} lacks the column(s) {', '.join(missing)}; "
            f"its header must name {', '.join(TRACE_COLUMNS)} (the last three optional)"
        )
    windows = availability != "always" and all(c in (reader.fieldnames or []) for c in TRACE_COLUMNS[3:])
    rows: list[tuple[float, ...]] = []
    try:
        for line, row in enumerate(reader, start=2):
            if len(rows) >= MAX_TRACE_ROWS:
                raise ConfigError(f"device trace {str(path)!r} has more than {MAX_TRACE_ROWS} rows; shorten it")
            rows.append(
                tuple(
                    _value(row, key, line, None if key in TRACE_COLUMNS[:3] else default)
                    for key, default in zip(TRACE_COLUMNS, (None, None, None, 0.0, 0.0, 24.0), strict=True)
                )
            )
    except csv.Error as exc:
        raise ConfigError(f"device trace {str(path)!r} is not valid CSV: {exc}") from None
    if not rows:
        raise ConfigError(f"device trace {str(path)!r} has no rows; give one device per line")
    table = np.asarray(rows, dtype=np.float64)[np.arange(num_clients) % len(rows)]
    hours = table[:, 5] if windows else np.full(num_clients, 24.0)
    return DeviceProfiles(
        table[:, 0], table[:, 1] * 1e6 / 8, table[:, 2] * 1e6 / 8, table[:, 3], table[:, 4] % 24.0, hours
    )
