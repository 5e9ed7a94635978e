"""``report_run``: the plots and HTML report of a stored run (``sheaf report RUN``).

Example:
    >>> import tempfile
    >>> from sheaf.run.simulate import simulate
    >>> result = simulate(overrides=["rounds=2", "clients=4", "fraction=1", f"runs_dir={tempfile.mkdtemp()}"])
    >>> [p.name for p in report_run(result.run_path)]
    ['accuracy.png', 'loss.png', 'clients.png', 'report.html']
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sheaf.core.errors import StoreError
from sheaf.evaluation.report import render_report
from sheaf.run.export import client_names
from sheaf.run.liveness import run_state
from sheaf.run.personalize import PERSONALIZED
from sheaf.run.store import RunStore

__all__ = ["report_run"]


def report_run(run: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the plots and the HTML report of a run.

    Args:
        run: the run's ``.sqlite`` store.
        out_dir: where to write; default a folder beside the store, named after it.

    Returns:
        The written files: ``accuracy.png``, ``loss.png``, ``clients.png``, ``privacy.png``
        for a differentially private run, and ``report.html``.

    Raises:
        StoreError: if the store is missing or invalid, or holds no finished round.
    """
    path = Path(run)
    with RunStore.open(path, readonly=True) as store:
        meta = store.meta
        history = store.history()
        if not history:
            raise StoreError(f"run {str(path)!r} has no finished round yet; nothing to report")
        last_eval = max((r.round for r in history if r.federated), default=None)
        records = store.client_records(round=last_eval, phase="evaluate") if last_eval else []
        tuned = store.client_records(round=last_eval, phase=PERSONALIZED) if last_eval else []
        failures = len(store.failures())
    personal = {rec.client_id: rec.metrics.get("accuracy", math.nan) for _, rec in tuned}
    names = client_names(meta)
    clients: dict[int, dict[str, Any]] = {}
    data = meta.get("client_data") or {}
    classes = [str(c) for c in data.get("classes", [])]
    for i, counts in enumerate(data.get("labels", [])):
        clients[i] = {
            "id": i,
            "name": names.get(i, str(i)),
            "train": data["train"][i],
            "test": data["test"][i],
            "labels": " · ".join(f"{c}: {n}" for c, n in zip(classes, counts, strict=False) if n),
        }
    for _, rec in records:
        row = clients.setdefault(
            rec.client_id, {"id": rec.client_id, "name": names.get(rec.client_id, str(rec.client_id))}
        )
        row.update(
            examples=rec.num_examples,
            loss=rec.metrics.get("loss", math.nan),
            accuracy=rec.metrics.get("accuracy", math.nan),
        )
        if personal:
            row["personalised"] = personal.get(rec.client_id, math.nan)
    out = Path(out_dir) if out_dir is not None else path.with_suffix("")
    described = {**meta, "status": run_state(meta).value}  # never "running" for a dead run
    return render_report(path.stem, described, history, [clients[c] for c in sorted(clients)], failures, out)
