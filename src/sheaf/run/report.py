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

from sheaf.core.errors import StoreError
from sheaf.evaluation.report import render_report
from sheaf.run.personalize import PERSONALIZED
from sheaf.run.store import RunStore

__all__ = ["report_run"]


def report_run(run: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the plots and the HTML report of a run.

    Args:
        run: the run's ``.sqlite`` store.
        out_dir: where to write; default a folder beside the store, named after it.

    Returns:
        The written files: ``accuracy.png``, ``loss.png``, ``clients.png``, ``report.html``.

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
    clients = [
        (
            rec.client_id,
            rec.num_examples,
            rec.metrics.get("loss", math.nan),
            rec.metrics.get("accuracy", math.nan),
            *((personal.get(rec.client_id, math.nan),) if personal else ()),
        )
        for _, rec in records
    ]
    out = Path(out_dir) if out_dir is not None else path.with_suffix("")
    return render_report(path.stem, meta, history, clients, failures, out)
