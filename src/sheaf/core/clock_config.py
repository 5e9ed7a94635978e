"""The ``[devices]`` and ``[asynchronous]`` sections of a run config.

``[devices]`` turns on the virtual clock: every client gets a device profile (compute
speed, bandwidth, when it is online) and every round a virtual duration, with an optional
deadline and over-selection (:mod:`sheaf.core.devices`, :mod:`sheaf.run.clock`).
``[asynchronous]`` replaces synchronous rounds by FedBuff's buffered asynchronous
aggregation: in a simulation ordered by the same clock (:mod:`sheaf.run.buffered`), under
``sheaf server`` by the order the clients' results really arrive (:mod:`sheaf.deploy.buffered`).

Example:
    >>> DevicesConfig(enabled=True, deadline=600.0).deadline
    600.0
    >>> AsyncConfig(enabled=True, concurrency=50, buffer=10).staleness
    'sqrt'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sheaf.core.checks import check_positive as _positive
from sheaf.core.checks import check_setting as _check

__all__ = ["AVAILABILITIES", "DEVICE_PROFILES", "STALENESS", "AsyncConfig", "DevicesConfig"]

#: Where device profiles come from (``devices.profiles``).
DEVICE_PROFILES = ("mobile", "uniform", "trace")
#: When a device is online (``devices.availability``).
AVAILABILITIES = ("always", "diurnal")
#: How a stale update is down-weighted (``asynchronous.staleness``).
STALENESS = ("sqrt", "none")

#: The longest deadline or trace value accepted, in seconds: a year of virtual time.
MAX_SECONDS = 365 * 24 * 3600.0


@dataclass(frozen=True)
class DevicesConfig:
    """Simulated devices and the virtual clock (see ``docs/devices.md``).

    Attributes:
        enabled: give every client a device profile and every round a virtual duration
            (``RoundRecord.virtual_seconds``). With ``availability = "always"``, no deadline
            and no over-selection, the clock changes no model: only what it reports.
        profiles: ``mobile`` (built-in heterogeneous distributions: log-normal compute and
            bandwidth, a diurnal window), ``uniform`` (every device the median one) or
            ``trace`` (rows of the CSV file ``trace``).
        trace: a CSV file of device profiles, for ``profiles = "trace"``.
        compute: median seconds of compute per training sample (per epoch).
        compute_spread: sigma of the log-normal compute time (0.7: the 95th percentile
            device is ten times slower than the 5th).
        download_mbps: median download bandwidth, Mbit/s.
        upload_mbps: median upload bandwidth, Mbit/s.
        bandwidth_spread: sigma of the log-normal bandwidths.
        availability: ``always`` or ``diurnal`` (online during one window a day, in the
            device's own time zone).
        online_hours: the mean length of a device's daily online window (``diurnal``).
        deadline: seconds a synchronous round waits for its clients (0: no deadline);
            a client not finished by then is a dropout (``straggler``).
        overselect: sample this share more clients than the cohort (0.3: 30% more) and
            keep the first ``cohort`` to finish (Bonawitz et al., SysML 2019).
    """

    enabled: bool = False
    profiles: str = "mobile"
    trace: str = ""
    compute: float = 0.01
    compute_spread: float = 0.7
    download_mbps: float = 20.0
    upload_mbps: float = 5.0
    bandwidth_spread: float = 0.8
    availability: str = "always"
    online_hours: float = 8.0
    deadline: float = 0.0
    overselect: float = 0.0

    def __post_init__(self) -> None:
        _check(
            self.profiles in DEVICE_PROFILES,
            "devices.profiles",
            f"one of: {', '.join(DEVICE_PROFILES)}",
            self.profiles,
        )
        _check(
            (self.profiles == "trace") == bool(self.trace),
            "devices.trace",
            "a CSV file when devices.profiles = 'trace' (and empty otherwise)",
            self.trace,
        )
        for key in ("compute", "download_mbps", "upload_mbps"):
            _positive(getattr(self, key), f"devices.{key}")
        for key in ("compute_spread", "bandwidth_spread"):
            value = getattr(self, key)
            _check(math.isfinite(value) and 0 <= value <= 3, f"devices.{key}", "in [0, 3]", value)
        _check(
            self.availability in AVAILABILITIES,
            "devices.availability",
            f"one of: {', '.join(AVAILABILITIES)}",
            self.availability,
        )
        _check(0 < self.online_hours <= 24, "devices.online_hours", "in (0, 24]", self.online_hours)
        _check(
            math.isfinite(self.deadline) and 0 <= self.deadline <= MAX_SECONDS,
            "devices.deadline",
            f">= 0 seconds (0: none) and at most {MAX_SECONDS:g}",
            self.deadline,
        )
        _check(0 <= self.overselect <= 10, "devices.overselect", "in [0, 10] (0.3: 30% more clients)", self.overselect)


@dataclass(frozen=True)
class AsyncConfig:
    """Buffered asynchronous aggregation, FedBuff (Nguyen et al., AISTATS 2022).

    Attributes:
        enabled: run FedBuff instead of synchronous rounds. A simulation needs
            ``devices.enabled`` (the virtual clock orders the arrivals); ``sheaf server``
            needs no devices (real arrivals are ordered by when they arrive). ``rounds``
            counts server steps.
        concurrency: C, the clients training at any time.
        buffer: K, the updates the server waits for before each step.
        staleness: ``sqrt`` (an update from a model ``s`` steps old is weighted by
            ``1 / sqrt(1 + s)``) or ``none``.
        server_lr: the server learning rate: each step moves the model by this times the
            strategy's aggregate step.
        max_staleness: the oldest update accepted, in server steps: an update whose model
            is more steps old is refused (a dropout, with the reason), in simulation and
            deployment alike. At the default, 100, it weighs ``1/sqrt(101)``, a tenth.
        task_timeout: (deployment) seconds a client may hold a task: past it, its slot is
            freed and the client recorded as a dropout with the reason.
    """

    enabled: bool = False
    concurrency: int = 100
    buffer: int = 10
    staleness: str = "sqrt"
    server_lr: float = 1.0
    max_staleness: int = 100
    task_timeout: float = 600.0

    def __post_init__(self) -> None:
        _check(1 <= self.concurrency <= 100_000, "asynchronous.concurrency", "in 1..100000", self.concurrency)
        _check(1 <= self.buffer <= 100_000, "asynchronous.buffer", "in 1..100000", self.buffer)
        _check(
            self.staleness in STALENESS,
            "asynchronous.staleness",
            f"one of: {', '.join(STALENESS)}",
            self.staleness,
        )
        _check(
            math.isfinite(self.server_lr) and 0 < self.server_lr <= 100,
            "asynchronous.server_lr",
            "in (0, 100]",
            self.server_lr,
        )
        _check(0 <= self.max_staleness <= 1_000_000, "asynchronous.max_staleness", "in 0..1000000", self.max_staleness)
        _check(
            math.isfinite(self.task_timeout) and 0 < self.task_timeout <= MAX_SECONDS,
            "asynchronous.task_timeout",
            f"> 0 seconds and at most {MAX_SECONDS:g}",
            self.task_timeout,
        )
