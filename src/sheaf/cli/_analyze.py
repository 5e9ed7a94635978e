"""What ``sheaf analyze`` and ``sheaf check`` print: column summaries across clients."""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.table import Table

from sheaf.data.analytics import ColumnProfile, FederationProfile

__all__ = ["client_table", "json_ready", "most_different", "problems_table", "sparkline", "summary_table"]

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


def _narrow(title: str) -> Table:
    return Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))


def summary_table(profile: FederationProfile, title: str) -> Table:
    """One row per column: how much clients differ, which differs most, and the overall figures."""
    table = _narrow(title)
    table.caption = "het.: heterogeneity, the between-client variance share (numeric) or mean TV distance (categorical)"
    rows = profile.summary().to_dict("records")
    absent = any(row["clients missing all"] for row in rows)
    columns = ["column", "kind", "missing", "het.", "most different", *(["absent at"] if absent else []), "overall"]
    for col in columns:
        table.add_column(col, justify="right" if col in ("missing", "het.", "absent at") else "left", overflow="fold")
    for row in rows:
        cells = [
            str(row["column"]),
            "num" if row["kind"] == "numeric" else "cat",
            f"{row['missing']:.1%}",
            f"{row['heterogeneity']:.3f}",
            str(row["most different client"]),
        ]
        if absent:
            cells.append(_clients(row["clients missing all"]))
        table.add_row(*cells, str(row["overall"]))
    return table


def most_different(profile: FederationProfile, count: int) -> list[ColumnProfile]:
    """The ``count`` columns whose clients differ most (highest heterogeneity first)."""
    return sorted(profile.columns, key=lambda p: -p.heterogeneity if math.isfinite(p.heterogeneity) else 0.0)[:count]


def client_table(profile: ColumnProfile, limit: int) -> Table:
    """One row per client (the first ``limit``) for one column, in 80 columns."""
    frame = profile.client_table()
    label = "between-client variance share" if profile.kind == "numeric" else "mean distance to the federation"
    table = _narrow(f"{profile.column} ({profile.kind}) · heterogeneity {profile.heterogeneity:.3f} ({label})")
    columns: tuple[str, ...]
    if profile.kind == "numeric":
        columns = ("client", "rows", "miss", "mean", "std", "min", "max", "histogram", "|z|")
    else:
        columns = ("client", "rows", "miss", "values", "most common", "TV")
    for col in columns:
        left = col in ("client", "histogram", "most common")
        table.add_column(col, justify="left" if left else "right", overflow="fold")
    for record in frame.head(limit).to_dict("records"):
        common = [str(record["client"]), str(record["rows"]), f"{record['missing']:.0%}"]
        if profile.kind == "numeric":
            rest = [_num(record[k]) for k in ("mean", "std", "min", "max")]
            rest += [sparkline(record["histogram"]), _num(record["distance"], 3)]
        else:
            top = ", ".join(f"{v} {share:.0%}" for v, share in record["top"])
            rest = [str(record["values"]), top, _num(record["distance"], 3)]
        table.add_row(*common, *rest)
    notes = ["histogram over the federation's bins; |z|: the client's mean against the others'"]
    if profile.kind != "numeric":
        notes = ["TV: total variation distance of the client's categories from the federation's"]
    if len(frame) > limit:
        notes.append(f"{len(frame) - limit} more clients (--limit)")
    table.caption = "; ".join(notes)
    return table


def problems_table(profile: FederationProfile) -> Table | None:
    """Clients whose rows break the schema, with the problems; None if there are none."""
    rows = [(name, p.message) for name, ps in zip(profile.names, profile.problems) for p in ps]
    if not rows:
        return None
    table = _narrow("Schema problems (these clients would refuse to train)")
    table.add_column("client", overflow="fold")
    table.add_column("problem", overflow="fold")
    for name, message in rows:
        table.add_row(name, message)
    return table
