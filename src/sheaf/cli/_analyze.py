"""What ``sheaf analyze`` and ``sheaf check`` print: column summaries across clients."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from sheaf.data.analytics import ColumnProfile, FederationProfile

__all__ = ["client_table", "json_ready", "problems_table", "sparkline", "summary_table"]

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(counts: list[int]) -> str:
    """A histogram as a row of block characters (empty bins are spaces)."""
    top = max(counts, default=0)
    if not top:
        return ""
    return "".join(" " if n == 0 else _BARS[min(int(n / top * (len(_BARS) - 1) + 0.5), len(_BARS) - 1)] for n in counts)


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _clients(n: int) -> str:
    return "-" if not n else f"{n} client" + ("s" if n != 1 else "")


def json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as None, so it is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def summary_table(profile: FederationProfile, title: str) -> Table:
    """One row per column: overall figures and how much clients differ."""
    table = Table(
        title=title,
        caption="heterogeneity: between-client variance share (numeric), mean TV distance (categorical)",
    )
    for col in ("column", "kind", "missing", "overall", "absent at", "heterogeneity", "most different"):
        table.add_column(col, justify="right" if col in ("missing", "absent at", "heterogeneity") else "left")
    for row in profile.summary().to_dict("records"):
        table.add_row(
            str(row["column"]),
            str(row["kind"]),
            f"{row['missing']:.1%}",
            str(row["overall"]),
            _clients(row["clients missing all"]),
            f"{row['heterogeneity']:.3f}",
            str(row["most different client"]),
        )
    return table


def client_table(profile: ColumnProfile, limit: int) -> Table:
    """One row per client (the first ``limit``) for one column."""
    frame = profile.client_table()
    label = "between-client variance share" if profile.kind == "numeric" else "mean distance to the federation"
    table = Table(title=f"{profile.column} ({profile.kind}) · heterogeneity {profile.heterogeneity:.3f} ({label})")
    columns: tuple[str, ...]
    if profile.kind == "numeric":
        columns = ("client", "rows", "missing", "mean", "std", "min", "max", "histogram (global bins)", "|z| of mean")
    else:
        columns = ("client", "rows", "missing", "values", "most common", "TV distance")
    for col in columns:
        table.add_column(
            col, justify="left" if col in ("client", "histogram (global bins)", "most common") else "right"
        )
    for record in frame.head(limit).to_dict("records"):
        common = [str(record["client"]), str(record["rows"]), f"{record['missing']:.0%}"]
        if profile.kind == "numeric":
            rest = [_num(record[k]) for k in ("mean", "std", "min", "max")]
            rest += [sparkline(record["histogram"]), _num(record["distance"], 3)]
        else:
            top = ", ".join(f"{v} {share:.0%}" for v, share in record["top"])
            rest = [str(record["values"]), top, _num(record["distance"], 3)]
        table.add_row(*common, *rest)
    if len(frame) > limit:
        table.caption = f"{len(frame) - limit} more clients (--limit)"
    return table


def problems_table(profile: FederationProfile) -> Table | None:
    """Clients whose rows break the schema, with the problems; None if there are none."""
    rows = [(name, p.message) for name, ps in zip(profile.names, profile.problems) for p in ps]
    if not rows:
        return None
    table = Table(title="Schema problems (these clients would refuse to train)")
    table.add_column("client")
    table.add_column("problem")
    for name, message in rows:
        table.add_row(name, message)
    return table
