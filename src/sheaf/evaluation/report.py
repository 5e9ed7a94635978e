"""The report of a run: PNG plots and one self-contained HTML page.

``render_report(...)`` writes (``sheaf.run.report_run`` feeds it from a run store)

- ``accuracy.png`` — central accuracy per round, with the clients' federated accuracy
  (mean, worst 10%, min–max band) on the rounds it was measured, and the personalised
  accuracy (mean, worst 10%) when it was;
- ``loss.png`` — central loss and the clients' mean training loss per round;
- ``clients.png`` — the distribution of per-client accuracy at the last federated
  evaluation (sorted bars, named when there are few clients, and a histogram);
- ``privacy.png`` — for a differentially private run: ε by round, and accuracy against ε;
- ``virtual_time.png`` — for a run on simulated devices (``[devices]``): accuracy against
  virtual hours, and virtual hours by round;
- ``report.html`` — the plots embedded (base64), a warning if the run diverged, the final
  figures (the headline central accuracy is always the whole central test set's, never a
  monitoring subset's), a per-round table, a per-client table (each client by name, with
  its data — rows and labels — and its accuracy) and the config as TOML; no external
  files or scripts.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sheaf.core.toml import dumps
from sheaf.evaluation.divergence import divergence
from sheaf.evaluation.history import History
from sheaf.evaluation.traffic import format_bytes, traffic_totals

__all__ = ["render_report"]


def _figures(history: History, clients: Sequence[Mapping[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    central = history.series("central", "accuracy")
    monitor = history.series("monitor", "accuracy")
    if monitor:
        ax.plot(*zip(*monitor, strict=True), label="central: monitoring subset", color="C0", alpha=0.6, ls=":")
    if central:
        ax.plot(*zip(*central, strict=True), "o-" if monitor else "-", label="central test", color="C0")
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
    scored = sorted((float(c["accuracy"]), str(c["name"])) for c in clients if not math.isnan(float(c["accuracy"])))
    values = [v for v, _ in scored]
    left.bar(range(len(values)), values, color="C1")
    if 0 < len(scored) <= 30:  # few clients: say who they are
        left.set_xticks(range(len(scored)), [n for _, n in scored], rotation=45, ha="right", fontsize=8)
    left.set(xlabel="client (sorted)", ylabel="accuracy", title="Per-client accuracy, last evaluation", ylim=(0, 1.02))
    right.hist(values, bins=min(20, max(len(values), 1)), range=(0, 1), color="C1")
    right.set(xlabel="accuracy", ylabel="clients", title="Distribution")
    paths.append(out / "clients.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    spent = history.series("privacy", "epsilon")
    if spent:  # a private run: what it spent, and what that bought
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        left.plot(*zip(*spent, strict=True), color="C4")
        left.set(xlabel="round", ylabel="ε", title="Privacy spent by round")
        accuracy = dict(history.series("central", "accuracy") or history.series("monitor", "accuracy"))
        pairs = sorted((eps, accuracy[r]) for r, eps in spent if r in accuracy)
        if pairs:
            right.plot(*zip(*pairs, strict=True), "o-", color="C0", markersize=3)
        right.set(xlabel="ε", ylabel="central accuracy", title="Accuracy against ε")
        for ax in (left, right):
            ax.grid(alpha=0.3)
        paths.append(out / "privacy.png")
        fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)

    if any(r.virtual_seconds > 0 for r in history):  # simulated devices: what time bought
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        accuracy = dict(history.series("central", "accuracy") or history.series("monitor", "accuracy"))
        hours = {r.round: r.virtual_seconds / 3600 for r in history}
        pairs = [(hours[r], a) for r, a in sorted(accuracy.items())]
        if pairs:
            left.plot(*zip(*pairs, strict=True), "o-", color="C0", markersize=3)
        left.set(
            xlabel="virtual hours", ylabel="central accuracy", title="Accuracy against virtual time", ylim=(0, 1.02)
        )
        right.plot(list(hours), list(hours.values()), color="C2")
        right.set(xlabel="round", ylabel="virtual hours", title="Virtual time by round")
        for ax in (left, right):
            ax.grid(alpha=0.3)
        paths.append(out / "virtual_time.png")
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


def _asynchronous_summary(meta: Mapping[str, Any], history: History) -> list[tuple[str, Any]]:
    """FedBuff's lines of the summary: the aggregation, staleness over all steps, wall
    seconds per server step (none for a synchronous run)."""
    settings = meta.get("config", {}).get("asynchronous", {})
    if not isinstance(settings, Mapping) or not settings.get("enabled"):
        return []
    means = [r.fit["staleness_mean"] for r in history if math.isfinite(r.fit.get("staleness_mean", math.nan))]
    maxima = [r.fit["staleness_max"] for r in history if math.isfinite(r.fit.get("staleness_max", math.nan))]
    counts = [r.completed for r in history if math.isfinite(r.fit.get("staleness_mean", math.nan))]
    weighted = sum(m * n for m, n in zip(means, counts, strict=True)) / sum(counts) if sum(counts) else math.nan
    return [
        (
            "aggregation",
            f"FedBuff, asynchronous (C={settings.get('concurrency')}, K={settings.get('buffer')}): "
            "rounds are server steps",
        ),
        ("server steps", history.rounds_completed),
        ("staleness of the aggregated updates: mean", weighted),
        ("staleness of the aggregated updates: max", max(maxima, default=math.nan)),
        (
            "wall seconds per server step (mean)",
            sum(r.seconds for r in history) / len(history) if history else math.nan,
        ),
    ]


def _html(
    name: str,
    meta: Mapping[str, Any],
    history: History,
    clients: Sequence[Mapping[str, Any]],
    images: Sequence[Path],
    failures: int,
) -> str:
    final = history.final_central
    monitored = any(r.monitor for r in history)
    central_label = "central accuracy" + (" (whole test set)" if monitored else "")
    fed = history.final_federated.get("accuracy", {})
    tuned = history.final_federated.get("personalized_accuracy", {})
    summary = [
        ("rounds", history.rounds_completed),
        (central_label, final.get("accuracy", math.nan)),
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
            if "epsilon" in history.final_privacy
            else []
        ),
        *(
            [
                ("secure aggregation", str(meta["secagg"].get("protocol", "on"))),
                ("distributed DP", "on" if meta["secagg"].get("dp") == "distributed" else "off"),
            ]
            if isinstance(meta.get("secagg"), Mapping)
            else []
        ),
        *(
            [("privacy spent against the server: epsilon", history.final_privacy["epsilon_server"])]
            if "epsilon_server" in history.final_privacy
            else []
        ),
        *[
            (f"{what} (all rounds' training)", format_bytes(count))
            for what, count in (
                ("bytes sent to clients", traffic_totals(history).get("download_bytes")),
                ("bytes sent by clients", traffic_totals(history).get("upload_bytes")),
            )
            if count is not None
        ],
        *(
            [
                (
                    "update encoding",
                    f"{meta['compression']['encoder']} ({meta['compression']['upload_ratio']:.2f}x fewer bytes)",
                )
            ]
            if isinstance(meta.get("compression"), Mapping) and "upload_ratio" in meta["compression"]
            else []
        ),
        *_asynchronous_summary(meta, history),
        ("client failures (all rounds)", failures),
        ("rounds that left the model unchanged", sum(1 for r in history if not r.aggregated)),
    ]
    personal = any("personalized_accuracy" in r.federated for r in history)
    stale = any("staleness_mean" in r.fit for r in history)
    private = any(r.privacy for r in history)
    counted = any(r.traffic for r in history)
    per_round = [
        (
            r.round,
            r.completed,
            r.failed,
            r.central.get("accuracy", math.nan),
            r.central.get("loss", math.nan),
            *((r.monitor.get("accuracy", math.nan),) if monitored else ()),
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
            *((r.fit.get("staleness_mean", math.nan), r.fit.get("staleness_max", math.nan)) if stale else ()),
            *((r.privacy.get("epsilon", math.nan),) if private else ()),
            *(
                (format_bytes(r.traffic.get("download_bytes", 0)), format_bytes(r.traffic.get("upload_bytes", 0)))
                if counted
                else ()
            ),
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
        *(["monitoring subset acc"] if monitored else []),
        "train loss",
        "client acc mean",
        "client acc worst 10%",
        *(["personalised acc mean", "personalised acc worst 10%"] if personal else []),
        *(["staleness mean", "staleness max"] if stale else []),
        *(["epsilon spent"] if private else []),
        *(["sent to clients", "sent by clients"] if counted else []),
        "seconds",
        "note",
    ]
    personal_clients = any("personalised" in c for c in clients)
    client_headers = [
        "client",
        "name",
        "train rows",
        "test rows",
        "labels (class: rows)",
        "evaluated on",
        "loss",
        "accuracy",
    ]
    client_headers += ["personalised accuracy"] if personal_clients else []
    client_rows = [
        (
            c["id"],
            c["name"],
            c.get("train", "-"),
            c.get("test", "-"),
            c.get("labels", "-"),
            c.get("examples", "-"),
            c.get("loss", math.nan),
            c.get("accuracy", math.nan),
            *((c.get("personalised", math.nan),) if personal_clients else ()),
        )
        for c in clients
    ]
    warning = divergence(list(history))
    alert = f'<p class="warning"><b>warning:</b> {html.escape(warning)}</p>' if warning else ""
    pictures = "".join(
        f'<img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">' for p in images
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#f3f3f3}img{max-width:100%;margin:0.5em 0}pre{background:#f7f7f7;padding:1em}"
        ".warning{background:#fff4e5;border:1px solid #f0c58a;padding:0.5em 1em}"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sheaf run {html.escape(name)}</title><style>{style}</style></head>
<body>
<h1>sheaf run <code>{html.escape(name)}</code></h1>
<p>Dataset <b>{html.escape(str(meta.get("dataset")))}</b>, strategy <b>{html.escape(str(meta.get("strategy")))}</b>,
{html.escape(str(meta.get("population")))} clients, backend {html.escape(str(meta.get("backend")))}, status {html.escape(str(meta.get("status")))}.</p>
{alert}
<h2>Final figures</h2>{_table(["figure", "value"], summary)}
<h2>Plots</h2>{pictures}
<h2>Rounds</h2>{_table(round_headers, per_round)}
<h2>Clients: their data, and the last federated evaluation</h2>{_table(client_headers, client_rows)}
<h2>Config (TOML: save it and run it again with <code>sheaf simulate FILE</code>)</h2><pre>{html.escape(dumps(meta.get("config", {})))}</pre>
</body></html>
"""


def render_report(
    name: str,
    meta: Mapping[str, Any],
    history: History,
    clients: Sequence[Mapping[str, Any]],
    failures: int,
    out_dir: str | Path,
) -> list[Path]:
    """Write the plots and the HTML page of a run from its recorded figures.

    Args:
        name: the run's name (page title).
        meta: the run's meta entries (config, dataset, strategy, population, ``status``, ...).
        history: the run's rounds.
        clients: one mapping per client: ``id``, ``name``; its data where known (``train``
            and ``test`` rows, ``labels`` as text); at the last federated evaluation its
            ``examples``, ``loss``, ``accuracy`` and ``personalised`` accuracy.
        failures: how many client failures the run recorded.
        out_dir: the folder to write into (created if missing).

    Returns:
        The written files: three PNGs (and ``privacy.png`` for a private run,
        ``virtual_time.png`` for one on simulated devices), then ``report.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = _figures(history, [c for c in clients if "accuracy" in c], out)
    page = out / "report.html"
    page.write_text(_html(name, meta, history, clients, images, failures), encoding="utf-8")
    return [*images, page]
