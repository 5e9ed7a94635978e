"""A deployed client's own durable ledger: which rounds it trained in, and the privacy it spent.

Nothing in it is the server's to decide or to keep. Before an update leaves the client,
the round it answers and — where differential privacy applies — the charge for it are
written here and flushed to disk (``fsync``), so neither a server that never confirms the
round nor a crash of either side can make the client forget a release:

- **rounds**: per run, the last round the client trained in. A task for that round or an
  earlier one is refused (:mod:`sheaf.deploy.client_work` answers a byte-identical repeat
  with the result it already sent, so a server that restarts mid-round loses nothing);
- **privacy**: the mechanisms the client has been charged for, over *every* run it takes
  part in with this state folder and key — a server that starts a new run (a new run id)
  cannot reset a data owner's budget — and, per run, the last round charged (a central-DP
  round charges every round since: :class:`~sheaf.privacy.ledger.PrivacyLedger`).

The file is ``<state dir>/ledger-<key id>.json``: plain JSON, written to a temporary file,
flushed and renamed over the old one (then the folder is flushed), so a crash leaves the
old or the new ledger, never half of one. An unreadable ledger stops the client with one
line rather than start a fresh (empty) budget.

Example:
    >>> import tempfile, pathlib
    >>> from sheaf.privacy.accountant import RoundMechanism
    >>> ledger = ClientLedger(pathlib.Path(tempfile.mkdtemp()) / "ledger-k.json")
    >>> after = ledger.charged("run1", RoundMechanism("local", 4.0), round=1)
    >>> ledger.record("run1", 1, after)
    >>> again = ClientLedger(ledger.path)
    >>> again.last_trained("run1"), round(again.epsilon(1e-5), 3), again.last_trained("other")
    (1, 2.166, 0)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sheaf.core.errors import ConfigError, DataError
from sheaf.privacy.accountant import MECHANISM_KINDS, RoundMechanism, epsilon_of
from sheaf.privacy.ledger import PrivacyLedger

__all__ = ["ClientLedger"]


def _mechanism(row: Any) -> tuple[RoundMechanism, int]:
    kind, z, q, population, cohort, count = row
    if kind not in MECHANISM_KINDS or not isinstance(count, int) or count < 1:
        raise ValueError(f"not a charged mechanism: {row!r}")
    return RoundMechanism(kind, float(z), float(q), int(population), int(cohort)).check(), count


class ClientLedger:
    """The ledger file of one client (one key) in one state folder. See the module docstring.

    Args:
        path: the file (its folder is created when first written).

    Raises:
        DataError: if the file exists but cannot be read as a ledger.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._events: dict[RoundMechanism, int] = {}
        self._runs: dict[str, dict[str, int]] = {}
        if path.exists():
            self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            self._events = dict(_mechanism(row) for row in raw["events"])
            self._runs = {
                str(run): {"trained": int(entry["trained"]), "charged": int(entry["charged"])}
                for run, entry in raw["runs"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
            raise DataError(
                f"privacy ledger {str(self.path)!r} is unreadable ({exc}); restore it from a backup — starting "
                "afresh would forget what this client has spent"
            ) from None

    def last_trained(self, run_id: str) -> int:
        """The last round of ``run_id`` this client trained in (0: none)."""
        return self._runs.get(run_id, {}).get("trained", 0)

    def charged(self, run_id: str, mechanism: RoundMechanism, round: int) -> PrivacyLedger:
        """What the client's privacy ledger would be after taking part in ``round`` (not saved).

        Its events are the client's over every run; its ``last_round`` is ``run_id``'s.
        """
        before = PrivacyLedger(self._runs.get(run_id, {}).get("charged", 0), tuple(self._events.items()))
        return before.charged(mechanism, round)

    def epsilon(self, delta: float, accountant: str = "rdp") -> float:
        """The epsilon spent so far at ``delta``, over every run."""
        return epsilon_of(tuple(self._events.items()), delta, accountant)

    def record(self, run_id: str, round: int, ledger: PrivacyLedger | None = None) -> None:
        """Record, durably, that the client trains in ``round`` of ``run_id`` (and its charge).

        Returns only once the file is on disk: call it before the update leaves.
        """
        entry = self._runs.setdefault(run_id, {"trained": 0, "charged": 0})
        entry["trained"] = max(entry["trained"], round)
        if ledger is not None:
            self._events = dict(ledger.events)
            entry["charged"] = max(entry["charged"], ledger.last_round)
        self._save()

    def _save(self) -> None:
        rows = [
            [m.kind, m.noise_multiplier, m.rate, m.population, m.cohort, count] for m, count in self._events.items()
        ]
        text = json.dumps({"version": 1, "events": rows, "runs": self._runs}, indent=1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself must survive a crash too
        finally:
            os.close(folder)
