"""The virtual clock: how long a simulated client's work takes, and what a round waits for.

A client's job starting at virtual second ``t`` downloads the model
(``model_bytes / download``), trains (``train samples x epochs x compute``) and uploads
its update (``model_bytes / upload``). It arrives at ``t + that``, unless its device is
offline at ``t`` or its online window closes first: then it is a dropout, with the reason.
Nothing here trains: the clock only says *when*, from the device profiles
(:mod:`sheaf.core.devices`), so the same seed gives the same times on every backend.

A synchronous round (:meth:`VirtualClock.plan_round`) samples among the devices online
when it starts, may over-select (sample more than the cohort, keep the first ``cohort``
to finish: Bonawitz et al., "Towards Federated Learning at Scale", SysML 2019) and may
have a deadline; only the clients it keeps are trained, the others are recorded as
dropouts (``offline``, ``straggler``, ``over-selected``).

Example:
    >>> import numpy as np
    >>> from sheaf.core.devices import DeviceProfiles
    >>> one = lambda v: np.full(3, float(v))
    >>> profiles = DeviceProfiles(np.array([1.0, 2.0, 9.0]), one(1e6), one(1e6), one(0), one(0), one(24))
    >>> clock = VirtualClock(profiles, train_counts=np.array([10, 10, 10]), epochs=1, model_bytes=1_000_000)
    >>> plan = clock.plan_round([0, 1, 2], start=0.0, target=2, deadline=0.0)
    >>> plan.train, plan.end, [why.split(":")[0] for _, why in plan.dropped]
    ([0, 1], 22.0, ['over-selected'])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sheaf.core.config import RunConfig
from sheaf.core.devices import DeviceProfiles, device_profiles

__all__ = ["Job", "RoundPlan", "VirtualClock"]


@dataclass(frozen=True)
class Job:
    """One client's work as the clock sees it.

    Attributes:
        client_id: the client.
        start: the virtual second it pulled the model.
        end: when its update arrives, or when it dropped out.
        dropped: why it dropped out; empty if its update arrives at ``end``.
    """

    client_id: int
    start: float
    end: float
    dropped: str = ""


@dataclass(frozen=True)
class RoundPlan:
    """What the clock decides about a synchronous round.

    Attributes:
        train: the clients whose updates the round keeps (they are trained).
        dropped: ``(client, reason)`` for every other sampled client.
        end: the virtual second the round ends.
    """

    train: list[int]
    dropped: list[tuple[int, str]]
    end: float


class VirtualClock:
    """Virtual durations of clients' work from their device profiles.

    Args:
        profiles: every client's device.
        train_counts: every client's number of training samples.
        epochs: local epochs per job.
        model_bytes: bytes of the model sent down and of the update sent up.
    """

    def __init__(self, profiles: DeviceProfiles, train_counts: npt.ArrayLike, epochs: int, model_bytes: int) -> None:
        counts = np.asarray(train_counts, dtype=np.float64)
        self.profiles = profiles
        self.download = model_bytes / profiles.download
        self.train = counts * epochs * profiles.compute
        self.upload = model_bytes / profiles.upload
        self.always = bool((profiles.hours >= 24.0).all())

    @classmethod
    def for_run(cls, config: RunConfig, train_counts: npt.ArrayLike, model_bytes: int) -> VirtualClock:
        """The clock of a run: its devices from ``[devices]`` and the run seed."""
        counts = np.asarray(train_counts)
        profiles = device_profiles(config.devices, len(counts), seed=config.seed)
        return cls(profiles, counts, config.train.epochs, model_bytes)

    def duration(self, client_id: int) -> float:
        """Seconds from pulling the model to the update's arrival."""
        return float(self.download[client_id] + self.train[client_id] + self.upload[client_id])

    def online_clients(self, t: float) -> npt.NDArray[np.int64]:
        """Positions of the clients online at ``t``, increasing."""
        if self.always:
            return np.arange(len(self.profiles), dtype=np.int64)
        return np.flatnonzero(self.profiles.online(t)).astype(np.int64)

    def next_online(self, t: float) -> float:
        """The first virtual second at or after ``t`` at which some client is online."""
        return t if self.always else self.profiles.next_online(t)

    def jobs(self, client_ids: Sequence[int], start: float) -> list[Job]:
        """What happens to each client asked to start work at ``start``."""
        ids = np.asarray(client_ids, dtype=np.int64)
        if len(ids) == 0:
            return []
        total = self.download[ids] + self.train[ids] + self.upload[ids]
        online = self.profiles.online(start, ids)
        gone = self.profiles.offline_at(start, ids)
        out: list[Job] = []
        for i, cid in enumerate(ids.tolist()):
            if not online[i]:
                out.append(Job(cid, start, start, "offline: the device was not online when the work started"))
            elif start + total[i] > gone[i]:
                out.append(
                    Job(
                        cid,
                        start,
                        float(gone[i]),
                        f"went offline {gone[i] - start:.0f} s into {total[i]:.0f} s of work",
                    )
                )
            else:
                out.append(Job(cid, start, float(start + total[i])))
        return out

    def plan_round(self, client_ids: Sequence[int], *, start: float, target: int, deadline: float) -> RoundPlan:
        """Which sampled clients a synchronous round keeps, and when it ends.

        The first ``target`` clients to arrive (ties by client id) before the deadline
        (``deadline`` seconds after ``start``; 0: none) are kept. The round ends when the
        ``target``-th arrives, else when the last sampled client arrives or drops out, or
        at the deadline if that is sooner.
        """
        jobs = self.jobs(client_ids, start)
        limit = start + deadline if deadline > 0 else math.inf
        dropped = [(j.client_id, j.dropped) for j in jobs if j.dropped]
        arriving = sorted((j for j in jobs if not j.dropped), key=lambda j: (j.end, j.client_id))
        kept: list[Job] = []
        for job in arriving:
            if job.end > limit:
                dropped.append(
                    (
                        job.client_id,
                        f"straggler: would arrive {job.end - start:.0f} s after the start, past the {deadline:g} s deadline",
                    )
                )
            elif len(kept) >= target:
                dropped.append((job.client_id, f"over-selected: arrived after the first {target} updates"))
            else:
                kept.append(job)
        # The server stops waiting at the target-th arrival, else when every sampled client
        # has arrived or dropped out, but never past the deadline.
        end = kept[-1].end if len(kept) >= target else min(limit, max([start, *(j.end for j in jobs)]))
        return RoundPlan(sorted(j.client_id for j in kept), sorted(dropped), end)
