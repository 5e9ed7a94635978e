"""The deployment commands: ``sheaf server``, ``sheaf client``, ``sheaf keys``, ``sheaf status``.

Registered on the shared app (:mod:`sheaf.cli._common`) when :mod:`sheaf.cli.app` imports
this module. Like every command, a :class:`~sheaf.core.errors.SheafError` becomes one
``error: ...`` line and exit status 2.
SIGTERM stops a server or client as Ctrl-C does: the server's committed rounds are safe
in its store, and the same command resumes the run.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sheaf.cli._common import ConfigArg, SetOpt, app, clear_errors, load_cli_config
from sheaf.core.errors import ConfigError
from sheaf.evaluation.traffic import format_bytes

__all__: list[str] = []

LogJson = Annotated[bool, typer.Option("--log-json", help="Log one JSON object per line instead of key=value text.")]
Insecure = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Plaintext instead of TLS: for experiments on one machine only (refused off loopback without "
        "--insecure-non-loopback).",
    ),
]
InsecureNonLoopback = Annotated[
    bool,
    typer.Option(
        "--insecure-non-loopback",
        help="With --insecure: allow plaintext on an address other than loopback (anyone on the path reads "
        "and can alter the model and the updates).",
    ),
]


def _plaintext(insecure: bool, address: str, role: str, allow_non_loopback: bool) -> None:
    """Refuse plaintext off loopback unless asked twice; say loudly that it is plaintext."""
    from sheaf.deploy.plaintext import check_plaintext

    if insecure:
        typer.echo(check_plaintext(address, role=role, allow_non_loopback=allow_non_loopback), err=True)
    elif allow_non_loopback:
        raise ConfigError("--insecure-non-loopback only goes with --insecure")


def _stop_on_sigterm() -> None:
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


@app.command()
def server(
    config: ConfigArg = None,
    overrides: SetOpt = None,
    address: Annotated[str, typer.Option(help="host:port to listen on (port 0: any free port).")] = "0.0.0.0:7443",
    keys: Annotated[
        Path | None, typer.Option(help="Folder from 'sheaf keys init': server.pem, server.key, authorized_clients.")
    ] = None,
    cert: Annotated[Path | None, typer.Option(help="The server's TLS certificate (overrides --keys).")] = None,
    key: Annotated[Path | None, typer.Option(help="The server's TLS private key (overrides --keys).")] = None,
    authorized: Annotated[
        Path | None, typer.Option(help="The authorised clients file (overrides --keys).", show_default=False)
    ] = None,
    insecure: Insecure = False,
    task: Annotated[
        str, typer.Option(help="module:attr of the task (default: the config's, or the built-in model).")
    ] = "",
    test_data: Annotated[
        Path | None, typer.Option(help="A held-out CSV/Parquet/NPZ file for central evaluation on the server.")
    ] = None,
    label: Annotated[str, typer.Option(help="Label column of --test-data, if it is a plain table.")] = "label",
    run: Annotated[
        Path | None,
        typer.Option(
            help="The run store (default runs_dir/<name>.sqlite; name defaults to <dataset>-<strategy>-server)."
        ),
    ] = None,
    log_json: LogJson = False,
    insecure_non_loopback: InsecureNonLoopback = False,
) -> None:
    """Serve a federated run to remote clients over gRPC; resume it if it exists."""
    from sheaf.deploy.logs import configure_logging
    from sheaf.deploy.server import ServerOptions, run_server

    configure_logging(as_json=log_json)
    _stop_on_sigterm()
    with clear_errors():
        _plaintext(insecure, address, "server", insecure_non_loopback)
        cfg = load_cli_config(config, overrides)
        options = ServerOptions(
            address, keys, cert, key, authorized, insecure, task, test_data, label, run, insecure_non_loopback
        )
        try:
            result = run_server(cfg, options)
        except KeyboardInterrupt:
            typer.echo("stopped; committed rounds are in the run store: the same command resumes the run", err=True)
            raise typer.Exit(130) from None
    skipped = result.skipped_rounds
    if skipped:
        shown = ", ".join(str(r) for r in skipped[:20]) + (", ..." if len(skipped) > 20 else "")
        typer.echo(
            f"finished {result.history.rounds_completed} rounds, but {len(skipped)} were not aggregated "
            f"(rounds {shown}): see 'sheaf status {result.run_path}'",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"finished {result.history.rounds_completed} rounds; run store: {result.run_path}")


@app.command()
def client(
    server: Annotated[str, typer.Option("--server", help="The server's host:port.")],
    key: Annotated[Path, typer.Option(help="This client's private key (from 'sheaf keys').")],
    data: Annotated[Path, typer.Option(help="This client's own data: a CSV, Parquet or NPZ file.")],
    ca: Annotated[Path | None, typer.Option(help="The deployment's CA certificate, to verify the server.")] = None,
    insecure: Insecure = False,
    task: Annotated[
        str,
        typer.Option(
            help="module:attr of your own task (default: the built-in model the run describes, within your "
            "policy). A client never imports code the server names."
        ),
    ] = "",
    policy: Annotated[
        Path | None,
        typer.Option(
            help="Your data policy (TOML): test split, smallest training set and batch, strategies, "
            "client steps, rounds, differential privacy, what you share. See docs/security.md."
        ),
    ] = None,
    policy_set: Annotated[
        list[str] | None,
        typer.Option("--set", help="A policy setting, e.g. --set privacy.budget=3 (repeatable; after --policy)."),
    ] = None,
    label: Annotated[str, typer.Option(help="Label column of a CSV/Parquet file outside sheaf's catalog.")] = "label",
    state_dir: Annotated[Path, typer.Option(help="Where this client keeps its state between rounds.")] = Path(
        "sheaf-client-state"
    ),
    max_backoff: Annotated[float, typer.Option(help="Longest wait between reconnection attempts (s).")] = 10.0,
    give_up_after: Annotated[
        float, typer.Option(help="Exit after this many seconds without reaching the server (0: never).")
    ] = 0.0,
    privacy_budget: Annotated[
        float,
        typer.Option(
            help="Your own epsilon limit (0: the policy's): keep a durable privacy ledger and refuse rounds "
            "that would exceed it, and every round of a run without DP (sets privacy.budget)."
        ),
    ] = 0.0,
    log_json: LogJson = False,
    insecure_non_loopback: InsecureNonLoopback = False,
) -> None:
    """Take part in a deployed run: train on your own data, within your own policy."""
    from sheaf.deploy.client import ClientOptions, run_client
    from sheaf.deploy.logs import configure_logging
    from sheaf.deploy.policy import load_policy

    configure_logging(as_json=log_json)
    _stop_on_sigterm()
    with clear_errors():
        _plaintext(insecure, server, "client", insecure_non_loopback)
        if privacy_budget < 0:
            raise ConfigError(f"--privacy-budget must be an epsilon >= 0 (0: no limit), got {privacy_budget:g}")
        own = load_policy(policy, policy_set or [])
        options = ClientOptions(
            server, key, data, ca, insecure, task, label, state_dir, max_backoff, give_up_after,
            privacy_budget=privacy_budget, policy=own, insecure_non_loopback=insecure_non_loopback,
        )  # fmt: skip
        try:
            status = run_client(options)
        except KeyboardInterrupt:
            typer.echo("stopped", err=True)
            raise typer.Exit(130) from None
    raise typer.Exit(status)


MaxExamples = Annotated[
    int | None,
    typer.Option(
        help="The most examples the client may claim for an update or evaluation (its weight); "
        "written on its authorized_clients line (default: the run's server.max_examples).",
        show_default=False,
    ),
]

keys_app = typer.Typer(no_args_is_help=True, help="Create the CA, server certificate and client keys of a deployment.")
app.add_typer(keys_app, name="keys")


@keys_app.command("init")
def keys_init(
    folder: Annotated[Path, typer.Argument(help="Where to write the keys (an empty or new folder).")],
    clients: Annotated[int, typer.Option(help="How many clients (ids 0..N-1).")] = 0,
    names: Annotated[str, typer.Option(help="Comma-separated client names instead of --clients.")] = "",
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="A host name or IP clients dial (repeatable); localhost is always in."),
    ] = None,
    max_examples: MaxExamples = None,
) -> None:
    """A CA, the server's TLS certificate, and one key pair per client."""
    from sheaf.deploy.keys import init_keys

    with clear_errors():
        chosen: int | list[str] = [n.strip() for n in names.split(",") if n.strip()] if names else clients
        made = init_keys(folder, chosen, host or [], max_examples=max_examples)
    typer.echo(f"CA certificate (give to every client): {made.ca_cert}")
    typer.echo(f"server certificate and key:          {made.server_cert}, {made.server_key}")
    typer.echo(f"authorised clients (server):         {made.authorized}")
    for path in made.client_keys:
        typer.echo(f"client key (give to that client only): {path}")


@keys_app.command("client")
def keys_client(
    path: Annotated[Path, typer.Argument(help="Where to write this client's private key.")],
    client_id: Annotated[int, typer.Option("--id", help="The client's id in the run.")],
    name: Annotated[str, typer.Option(help="A readable name, e.g. the organisation.")],
    max_examples: MaxExamples = None,
) -> None:
    """Make a client key pair on the client's own machine; print the line for the server."""
    from sheaf.deploy.keys import new_client_key

    with clear_errors():
        line = new_client_key(path, client_id, name, max_examples=max_examples)
    typer.echo(f"wrote {path}; add this line to the server's authorized_clients file:", err=True)
    typer.echo(line)


class _TextTable(Table):
    """A Rich table whose cells are plain text: ``[/]`` in a cell is shown, not parsed."""

    def add_row(self, *renderables: Any, **options: Any) -> None:
        super().add_row(*(Text(r) if isinstance(r, str) else r for r in renderables), **options)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


@app.command()
def status(
    run: Annotated[Path, typer.Argument(help="The run's .sqlite store.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Where a run stands: rounds, server, connected clients, last metrics, dropouts."""
    from sheaf.deploy.status import run_status

    with clear_errors():
        info = run_status(run)
    if as_json:
        typer.echo(json.dumps(info))
        return
    # Everything shown comes from the store, and much of it from clients (failure reasons,
    # metric names): it is rendered as plain text, never as Rich markup.
    table = _TextTable(title=Text(f"run {info['run']}"), show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("status", f"{info['status']} · round {info['rounds']['done']}/{info['rounds']['total']}")
    if "asynchronous" in info:
        fedbuff = info["asynchronous"]
        table.add_row(
            "aggregation",
            f"FedBuff (C={fedbuff['concurrency']}, K={fedbuff['buffer']}): {fedbuff['server_steps']} server steps; "
            f"staleness mean {_fmt(fedbuff['staleness_mean'])} · max {_fmt(fedbuff['staleness_max'])}; "
            f"{_fmt(fedbuff['seconds_per_step'])} s per step",
        )
    if info.get("secure_aggregation"):
        table.add_row(
            "aggregation", "secure aggregation (SecAgg+)" + (" · distributed DP" if info["distributed_dp"] else "")
        )
    if "server" in info:
        srv = info["server"]
        table.add_row("server", f"{srv['state']} at {srv['address']} (pid {srv['pid']}, tls {srv['tls']})")
        connected = ", ".join(f"{c['id']} {c['name']}" for c in info["clients"]["connected"]) or "none"
        table.add_row(
            "clients connected", f"{len(info['clients']['connected'])}/{info['clients']['registered']}: {connected}"
        )
    if "in_progress" in info:
        work = info["in_progress"]
        waiting = f"waiting for clients {work['waiting_for']}" if work["waiting_for"] else "every client answered"
        if "asynchronous" in info:  # open work: whoever pulls trains; the model is version round - 1
            waiting = f"clients training: {work['waiting_for'] or 'none'}"
            table.add_row("in progress", f"filling server step {work['round']}: {waiting}")
        else:
            table.add_row("in progress", f"{work['kind']} of round {work['round']}: {waiting}")
    if "last_round" in info:
        last = info["last_round"]
        table.add_row(
            "last round",
            f"{last['round']}: {last['completed']}/{last['sampled']} updates, {last['failed']} failed, "
            f"{'aggregated' if last['aggregated'] else 'NOT aggregated'}, {last['seconds']} s",
        )
        for name, value in info["central"].items():
            table.add_row(f"central {name}", _fmt(value))
        for name, summary in info["federated"].items():
            spread = f"min {_fmt(summary.get('min'))} · max {_fmt(summary.get('max'))}"
            table.add_row(f"clients' {name}", f"weighted mean {_fmt(summary.get('weighted_mean'))} · {spread}")
        if "traffic" in info:
            total = info["traffic"]
            table.add_row(
                "training traffic (sent · received)",
                f"last round {format_bytes(last.get('download_bytes', 0))} · {format_bytes(last.get('upload_bytes', 0))}"
                f"; run {format_bytes(total['download_bytes'])} · {format_bytes(total['upload_bytes'])}",
            )
        if "privacy" in info:
            spent = info["privacy"]
            epsilon = "∞" if spent.get("epsilon") is None else f"{spent['epsilon']:.4g}"  # None: not finite (z = 0)
            table.add_row("privacy spent", f"epsilon {epsilon} at delta {spent.get('delta', 0.0):g}")
            if spent.get("epsilon_server") is not None:
                table.add_row("privacy against the server", f"epsilon {spent['epsilon_server']:.4g}")
        if last.get("secagg_survivors") is not None:
            table.add_row("secure sum of", f"{last['secagg_survivors']:g} clients, {last['secagg_dropped']:g} dropped")
        for drop in info["dropouts"]:
            table.add_row("dropout", f"client {drop['client']} ({drop['name']}) {drop['phase']}: {drop['reason']}")
    Console().print(table)
