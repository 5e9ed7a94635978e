"""A run's training traffic as people read it: totals over its rounds, and bytes in units.

Every round records what its cohort was sent and sent back (``RoundRecord.traffic``:
``download_bytes``, ``upload_bytes``; :mod:`sheaf.run.traffic` counts them). The report,
``sheaf simulate``'s summary, ``sheaf status`` and ``--json`` show the totals; the
dashboard plots them by round.

Example:
    >>> from sheaf.evaluation.history import History, RoundRecord
    >>> rounds = [RoundRecord(r, 10, 10, traffic={"download_bytes": 1e6, "upload_bytes": 2.5e5}) for r in (1, 2)]
    >>> traffic_totals(History(rounds))
    {'download_bytes': 2000000, 'upload_bytes': 500000}
    >>> format_bytes(500000), format_bytes(2_000_000), format_bytes(999)
    ('488 KiB', '1.91 MiB', '999 B')
"""

from __future__ import annotations

from collections.abc import Iterable

from sheaf.evaluation.history import RoundRecord

__all__ = ["TRAFFIC_KEYS", "format_bytes", "traffic_totals"]

#: What a round's traffic holds.
TRAFFIC_KEYS = ("download_bytes", "upload_bytes")


def traffic_totals(rounds: Iterable[RoundRecord]) -> dict[str, int]:
    """Bytes sent and received over ``rounds`` (empty if none counted traffic)."""
    counted = [r.traffic for r in rounds if r.traffic]
    if not counted:
        return {}
    return {key: int(sum(t.get(key, 0.0) for t in counted)) for key in TRAFFIC_KEYS}


def format_bytes(count: float) -> str:
    """``count`` bytes in binary units, three significant digits (``1.91 MiB``)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" or abs(value) >= 100 else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
