"""Every byte of a round's training, per client: what each was sent, and what it sent back.

The round loop counts, for every client of a round's cohort:

- **download** — what the client was sent to train: the model (every parameter's bytes)
  and the round's payload tensors (SCAFFOLD's control variate). With download compression
  (:mod:`sheaf.compress.download`) a client that already holds a recent model is counted
  the encoded round deltas it missed instead, when they take fewer bytes than the model;
- **upload** — what came back: the update as it was sent — its encoding's exact size
  under compression, else the delta's bytes — and its extra tensors.

In a simulation these are the exact tensor bytes (no framing, no metrics). In a
deployment the backend measures what crossed the wire instead — every message of the
task stream the client pulled and of the result stream it pushed, protobuf framing,
ids, metrics and signatures' headers included (:attr:`FitOutcome.traffic`) — and those
figures are recorded. The two differ by exactly the framing: ``docs/compression.md``
states it and a test checks it.

Evaluation tasks (the model out, a few metrics back), joins, heartbeats and idle pulls
are not a round's training traffic and are not counted here (a deployed server's status
shows its whole traffic).

Example:
    >>> import numpy as np
    >>> from sheaf.core.update import Update
    >>> model = Params({"w": np.zeros(10, np.float32)})
    >>> sent = round_traffic([1, 2], [Update(1, model, 5)], None, model, {}, held={}, missed={})
    >>> sent.download, sent.upload, sent.totals()
    ({1: 40, 2: 40}, {1: 40}, {'download_bytes': 80.0, 'upload_bytes': 40.0})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sheaf.backends.base import ClientReport
from sheaf.core.params import Params
from sheaf.core.update import TensorGroups, Update

__all__ = ["RoundTraffic", "missed_rounds", "round_traffic", "update_bytes"]


def update_bytes(update: Update) -> int:
    """The bytes of an update as its client sent it: its encoding (or its delta) and its extras."""
    body = update.encoded.nbytes if update.encoded is not None else update.delta.nbytes
    return body + sum(group.nbytes for group in update.extras.values())


@dataclass(frozen=True)
class RoundTraffic:
    """One round's training traffic (see the module docstring).

    Attributes:
        download: bytes each client of the cohort was sent.
        upload: bytes each client's update took (clients whose update came back).
    """

    download: dict[int, int]
    upload: dict[int, int]

    def totals(self) -> dict[str, float]:
        """The round's totals, as recorded with the round (``RoundRecord.traffic``)."""
        return {"download_bytes": float(sum(self.download.values())), "upload_bytes": float(sum(self.upload.values()))}

    def per_client(self) -> dict[int, tuple[int, int]]:
        """``client -> (download, upload)`` for every client of the cohort."""
        return {c: (self.download.get(c, 0), self.upload.get(c, 0)) for c in sorted({*self.download, *self.upload})}


def missed_rounds(aggregated: Sequence[bool], held: int, round: int) -> int:
    """How many rounds after ``held`` and before ``round`` moved the model.

    Args:
        aggregated: ``aggregated[r - 1]`` is whether round ``r`` moved the model.
        held: the round whose model a client holds (0: the initial model).
        round: the round now starting.

    Example:
        >>> missed_rounds([True, False, True, True], held=1, round=5)
        2
    """
    return sum(1 for r in range(held + 1, round) if aggregated[r - 1])


def round_traffic(
    cohort: Sequence[int],
    updates: Sequence[Update],
    measured: Mapping[int, tuple[int, int]] | None,
    params: Params,
    payload: TensorGroups,
    *,
    reports: Sequence[ClientReport] = (),
    downlink_bytes: int = 0,
    held: Mapping[int, int],
    missed: Mapping[int, int],
) -> RoundTraffic:
    """Count a round's training traffic.

    Args:
        cohort: the clients sent a task.
        updates: the updates that came back whole (as sent: encoded, if they were).
        measured: ``client -> (download, upload)`` wire bytes where the backend measured
            them (deployment; a client not listed was sent nothing), else None.
        params: the model every client trains from.
        payload: the round's payload tensors.
        reports: clients whose updates a backend added up where they arrived (plain deltas).
        downlink_bytes: the bytes of one encoded round delta (download compression; 0: off).
        held: clients holding an earlier model (download compression), by client.
        missed: for those, how many model-moving rounds they missed.
    """
    if measured is not None:
        return RoundTraffic(
            {c: down for c, (down, _) in measured.items() if down},
            {c: up for c, (_, up) in measured.items() if up},
        )
    extra = sum(group.nbytes for group in payload.values())
    download: dict[int, int] = {}
    for client in cohort:
        model = params.nbytes
        if downlink_bytes and client in held and missed[client] * downlink_bytes < model:
            model = missed[client] * downlink_bytes
        download[client] = model + extra
    upload = {u.client_id: update_bytes(u) for u in updates}
    upload.update({r.client_id: params.nbytes for r in reports})
    return RoundTraffic(download, upload)
