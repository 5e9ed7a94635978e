"""The report of a run: PNG plots and one self-contained HTML page.

``render_report(...)`` writes (``sheaf.run.report_run`` feeds it from a run store)

- ``accuracy.png`` — central accuracy per round, with the clients' federated accuracy
  (mean, worst 10%, min–max band) on the rounds it was measured, and the personalised
  accuracy (mean, worst 10%) when it was;
- ``loss.png`` — central loss and the clients' mean training loss per round;
- ``clients.png`` — the distribution of per-client accuracy at the last federated
  evaluation (sorted bars and a histogram);
- ``report.html`` — the plots embedded (base64), the config, the final figures, a
  per-round table and a per-client table; no external files or scripts.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sheaf.evaluation.history import History

__all__ = ["render_report"]


def _figures(history: History, client_acc: Sequence[float], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    central = history.series("central", "accuracy")
    if central:
        ax.plot(*zip(*central, strict=True), label="central test", color="C0")
    fed = [(r.round, r.federated["accuracy"]) for r in history if "accuracy" in r.federated]
    if fed:
        rounds = [r for r, _ in fed]
        ax.plot(rounds, [s["mean"] for _, s in fed], "o-", color="C1", label="clients: mean")
        ax.plot(rounds, [s["p10"] for _, s in fed], "s--", color="C3", label="clients: worst 10%")
        ax.fill_between(
            rounds,
            [s["min"] for _, s in fed],
            [s["max"] for _, s in fed],
            color="C1",
            alpha=0.15,
            label="clients: min-max",
        )
    tuned = [(r.round, r.federated["personalized_accuracy"]) for r in history if "personalized_accuracy" in r.federated]
    if tuned:
        rounds = [r for r, _ in tuned]
        ax.plot(rounds, [s["mean"] for _, s in tuned], "^-", color="C2", label="personalised: mean")
        ax.plot(rounds, [s["p10"] for _, s in tuned], "v--", color="C4", label="personalised: worst 10%")
    ax.set(xlabel="round", ylabel="accuracy", title="Accuracy of the global model", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a run with nothing measured yet has no lines
        ax.legend(loc="lower right")
    paths.append(out / "accuracy.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for section, metric, label in (
        ("central", "loss", "central test loss"),
        ("fit", "train_loss", "clients' training loss"),
    ):
        series = history.series(section, metric)
        if series:
            ax.plot(*zip(*series, strict=True), label=label)
    ax.set(xlabel="round", ylabel="loss", title="Loss")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    paths.append(out / "loss.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    values = sorted(v for v in client_acc if not math.isnan(v))
    left.bar(range(len(values)), values, color="C1")
    left.set(xlabel="client (sorted)", ylabel="accuracy", title="Per-client accuracy, last evaluation", ylim=(0, 1.02))
    right.hist(values, bins=min(20, max(len(values), 1)), range=(0, 1), color="C1")
    right.set(xlabel="accuracy", ylabel="clients", title="Distribution")
    paths.append(out / "clients.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(
    name: str,
    meta: Mapping[str, Any],
    history: History,
    clients: Sequence[Sequence[Any]],
    images: Sequence[Path],
    failures: int,
) -> str:
    final = history.final_central
    fed = history.final_federated.get("accuracy", {})
    tuned = history.final_federated.get("personalized_accuracy", {})
    summary = [
        ("rounds", history.rounds_completed),
        ("central accuracy", final.get("accuracy", math.nan)),
        ("central loss", final.get("loss", math.nan)),
        *[(f"client accuracy: {k}", float(v)) for k, v in fed.items()],
        *[(f"personalised accuracy: {k}", float(v)) for k, v in tuned.items()],
        *(
            [
                (
                    f"privacy spent: epsilon at delta = {history.final_privacy.get('delta', math.nan):g}",
                    history.final_privacy.get("epsilon", math.nan),
                ),
                ("noise multiplier", history.final_privacy.get("noise_multiplier", math.nan)),
                ("final clip norm", history.final_privacy.get("clip", math.nan)),
            ]
            if history.final_privacy
            else []
        ),
        ("client failures (all rounds)", failures),
        ("rounds that left the model unchanged", sum(1 for r in history if not r.aggregated)),
    ]
    personal = any("personalized_accuracy" in r.federated for r in history)
    private = any(r.privacy for r in history)
    per_round = [
        (
            r.round,
            r.completed,
            r.failed,
            r.central.get("accuracy", math.nan),
            r.central.get("loss", math.nan),
            r.fit.get("train_loss", math.nan),
            r.federated.get("accuracy", {}).get("mean", math.nan),
            r.federated.get("accuracy", {}).get("p10", math.nan),
            *(
                (
                    r.federated.get("personalized_accuracy", {}).get("mean", math.nan),
                    r.federated.get("personalized_accuracy", {}).get("p10", math.nan),
                )
                if personal
                else ()
            ),
            *((r.privacy.get("epsilon", math.nan),) if private else ()),
            r.seconds,
            r.note,
        )
        for r in history
    ]
    round_headers = [
        "round",
        "updates",
        "failed",
        "central acc",
        "central loss",
        "train loss",
        "client acc mean",
        "client acc worst 10%",
        *(["personalised acc mean", "personalised acc worst 10%"] if personal else []),
        *(["epsilon spent"] if private else []),
        "seconds",
        "note",
    ]
    client_headers = ["client", "test examples", "loss", "accuracy"]
    if clients and len(clients[0]) > 4:
        client_headers.append("personalised accuracy")
    pictures = "".join(
        f'<img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">' for p in images
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#f3f3f3}img{max-width:100%;margin:0.5em 0}pre{background:#f7f7f7;padding:1em}"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sheaf run {html.escape(name)}</title><style>{style}</style></head>
<body>
<h1>sheaf run <code>{html.escape(name)}</code></h1>
<p>Dataset <b>{html.escape(str(meta.get("dataset")))}</b>, strategy <b>{html.escape(str(meta.get("strategy")))}</b>,
{html.escape(str(meta.get("population")))} clients, backend {html.escape(str(meta.get("backend")))}, status {html.escape(str(meta.get("status")))}.</p>
<h2>Final figures</h2>{_table(["figure", "value"], summary)}
<h2>Plots</h2>{pictures}
<h2>Rounds</h2>{_table(round_headers, per_round)}
<h2>Clients at the last federated evaluation</h2>{_table(client_headers, clients)}
<h2>Config</h2><pre>{html.escape(json.dumps(meta.get("config", {}), indent=2))}</pre>
</body></html>
"""


def render_report(
    name: str,
    meta: Mapping[str, Any],
    history: History,
    clients: Sequence[tuple[int, int, float, float] | tuple[int, int, float, float, float]],
    failures: int,
    out_dir: str | Path,
) -> list[Path]:
    """Write the plots and the HTML page of a run from its recorded figures.

    Args:
        name: the run's name (page title).
        meta: the run's meta entries (config, dataset, strategy, population, ...).
        history: the run's rounds.
        clients: ``(client id, test examples, loss, accuracy)`` at the last federated
            evaluation, with the personalised accuracy appended when it was measured.
        failures: how many client failures the run recorded.
        out_dir: the folder to write into (created if missing).

    Returns:
        The written files: three PNGs, then ``report.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = _figures(history, [c[3] for c in clients], out)
    page = out / "report.html"
    page.write_text(_html(name, meta, history, clients, images, failures), encoding="utf-8")
    return [*images, page]
