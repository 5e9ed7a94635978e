"""The deployment commands' own surface: keys, status, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sheaf.cli.app import app
from sheaf.core.params import Params
from sheaf.deploy.auth import load_authorized_clients
from sheaf.run.simulate import simulate
from tests.conftest import SMALL

runner = CliRunner()


def test_keys_init_and_keys_client(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "init", str(tmp_path / "k"), "--names", "a,b", "--host", "10.1.2.3"])
    assert result.exit_code == 0, result.output
    assert "client key (give to that client only)" in result.stdout
    assert len(load_authorized_clients(tmp_path / "k" / "authorized_clients")) == 2
    again = runner.invoke(app, ["keys", "init", str(tmp_path / "k"), "--clients", "2"])
    assert again.exit_code == 2 and again.stderr.startswith("error: ") and "already holds" in again.stderr
    own = runner.invoke(app, ["keys", "client", str(tmp_path / "mine.key"), "--id", "7", "--name", "clinic"])
    assert own.exit_code == 0 and own.stdout.startswith("7 clinic ")


def test_keys_write_the_most_examples_a_client_may_claim(tmp_path: Path) -> None:
    made = runner.invoke(app, ["keys", "init", str(tmp_path / "k"), "--clients", "2", "--max-examples", "300"])
    assert made.exit_code == 0, made.output
    clients = load_authorized_clients(tmp_path / "k" / "authorized_clients").values()
    assert [c.max_examples for c in clients] == [300, 300]
    own = runner.invoke(
        app, ["keys", "client", str(tmp_path / "mine.key"), "--id", "7", "--name", "clinic", "--max-examples", "80"]
    )
    assert own.exit_code == 0 and own.stdout.strip().endswith(" max_examples=80")
    wrong = runner.invoke(app, ["keys", "client", str(tmp_path / "other.key"), "--id", "8", "--name", "x",
                                "--max-examples", "0"])  # fmt: skip
    assert wrong.exit_code == 2 and "max_examples must be a whole number from 1 to" in wrong.stderr
    assert not (tmp_path / "other.key").exists()


def test_status_of_a_finished_run(tmp_path: Path) -> None:
    run = simulate(overrides=[*SMALL, f"runs_dir={tmp_path}"]).run_path
    shown = runner.invoke(app, ["status", str(run)])
    assert shown.exit_code == 0, shown.output
    assert "finished · round 3/3" in shown.stdout and "central accuracy" in shown.stdout
    info = json.loads(runner.invoke(app, ["status", str(run), "--json"]).stdout)
    assert info["rounds"] == {"done": 3, "total": 3} and info["last_round"]["completed"] == 8
    missing = runner.invoke(app, ["status", str(tmp_path / "nope.sqlite")])
    assert missing.exit_code == 2 and "not found" in missing.stderr


def test_bad_server_and_client_input_is_one_line_and_status_2(tmp_path: Path) -> None:
    no_keys = runner.invoke(app, ["server", "--set", f"runs_dir={tmp_path}"])
    assert no_keys.exit_code == 2 and no_keys.stderr.strip().startswith(
        "error: the server needs its authorised clients"
    )
    runner.invoke(app, ["keys", "init", str(tmp_path / "k"), "--clients", "1"])
    too_few = runner.invoke(app, ["server", "--keys", str(tmp_path / "k"), "--set", f"runs_dir={tmp_path}"])
    assert too_few.exit_code == 2 and "min_clients (2) exceeds the number of clients (1)" in too_few.stderr
    bad_key = runner.invoke(
        app, ["client", "--server", "localhost:1", "--key", str(tmp_path / "nope"), "--data", "x.npz", "--insecure"]
    )
    assert bad_key.exit_code == 2 and "client key" in bad_key.stderr and "not found" in bad_key.stderr
    no_ca = runner.invoke(
        app,
        ["client", "--server", "localhost:1", "--key", str(tmp_path / "k" / "clients" / "client-0.key"), "--data", "x"],
    )
    assert no_ca.exit_code == 2 and "needs the deployment's CA certificate" in no_ca.stderr


def test_a_bad_client_policy_is_one_line_and_status_2(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text('[privacy]\nrequire = "always"\n')
    args = ["client", "--server", "localhost:1", "--key", "k", "--data", "x.npz", "--insecure"]
    bad = runner.invoke(app, [*args, "--policy", str(tmp_path / "policy.toml")])
    # (after --insecure's warning) one line says what is wrong
    assert bad.exit_code == 2 and bad.stderr.splitlines()[-1].startswith("error: policy privacy.require must be one of")
    unknown = runner.invoke(app, [*args, "--set", "data.min_rows=3"])
    assert unknown.exit_code == 2 and "unknown policy key data.min_rows" in unknown.stderr


def test_a_server_whose_run_ends_with_skipped_rounds_says_so_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sheaf.deploy import server as server_module
    from sheaf.deploy.server import ServerResult
    from sheaf.evaluation.history import History, RoundRecord

    def finished(skipped: list[int]) -> ServerResult:
        records = [RoundRecord(round=r, sampled=4, completed=0 if r in skipped else 4, failed=0,
                               aggregated=r not in skipped) for r in (1, 2, 3)]  # fmt: skip
        return ServerResult(History(records), Params({}), tmp_path / "run.sqlite", 0)

    runner.invoke(app, ["keys", "init", str(tmp_path / "k"), "--clients", "2"])
    args = ["server", "--keys", str(tmp_path / "k"), "--address", "127.0.0.1:0", "--set", f"runs_dir={tmp_path}"]
    monkeypatch.setattr(server_module, "run_server", lambda config, options: finished([2, 3]))
    short = runner.invoke(app, args)
    monkeypatch.setattr(server_module, "run_server", lambda config, options: finished([]))
    whole = runner.invoke(app, args)

    assert short.exit_code == 1
    assert "finished 3 rounds, but 2 were not aggregated (rounds 2, 3)" in short.stderr
    assert whole.exit_code == 0 and whole.stdout.startswith("finished 3 rounds")


def test_strings_from_the_store_are_shown_as_text_never_as_markup(tmp_path: Path) -> None:
    import time

    import numpy as np

    from sheaf.core.config import RunConfig
    from sheaf.core.errors import ClientFailure
    from sheaf.evaluation.history import ClientRecord, RoundRecord
    from sheaf.run.store import RunStore

    hostile = "[/] [bold red]x[/bold red] [link=file:///etc]y"
    path = tmp_path / "run.sqlite"
    meta = {"client_ids": [0], "client_names": [hostile], "population": 1, "backend": "grpc"}
    with RunStore.create(path, RunConfig().to_dict(), Params({"w": np.zeros(2)}), (), meta) as store:
        summary = {"weighted_mean": 0.5, "mean": 0.5, "min": 0.5, "max": 0.5, "p10": 0.5}
        record = RoundRecord(round=1, sampled=1, completed=0, failed=1, aggregated=False,
                             federated={"accuracy": summary, hostile: summary}, note=hostile)  # fmt: skip
        store.commit_round(
            record, Params({"w": np.zeros(2)}), (), [ClientRecord(0, "evaluate", 3, {hostile: 1.0, "accuracy": 0.5})],
            [("fit", ClientFailure(0, f"update rejected: {hostile}"))],
        )  # fmt: skip
        store.set_meta("server", {"state": "running", "address": hostile, "pid": 1, "tls": True,
                                  "updated": time.time(), "seconds_since_contact": {"0": 0.1},
                                  "work": {"kind": "fit", "round": 2, "waiting_for": [0]}})  # fmt: skip

    shown = runner.invoke(app, ["status", str(path)], env={"COLUMNS": "400"})
    reported = runner.invoke(app, ["report", str(path), "--out", str(tmp_path / "report")])

    assert shown.exit_code == 0, shown.output
    assert f"update rejected: {hostile}" in shown.stdout and f"clients' {hostile}" in shown.stdout
    assert reported.exit_code == 0, reported.output
    page = (tmp_path / "report" / "report.html").read_text()
    assert "[/] [bold red]x[/bold red]" in page and "<script" not in page


def test_insecure_is_loud_on_both_sides_and_refused_off_loopback_unless_asked_twice(tmp_path: Path) -> None:
    runner.invoke(app, ["keys", "init", str(tmp_path / "k"), "--clients", "1"])
    keys, runs = str(tmp_path / "k"), f"runs_dir={tmp_path}"
    client_key = str(tmp_path / "k" / "clients" / "client-0.key")

    everywhere = runner.invoke(app, ["server", "--keys", keys, "--insecure", "--set", runs])  # default 0.0.0.0
    anywhere = runner.invoke(app, ["server", "--keys", keys, "--insecure", "--insecure-non-loopback", "--set", runs])
    local = runner.invoke(app, ["server", "--keys", keys, "--insecure", "--address", "127.0.0.1:0", "--set", runs])
    remote_client = runner.invoke(
        app, ["client", "--server", "fl.example.org:7443", "--key", client_key, "--data", "x.npz", "--insecure"]
    )
    local_client = runner.invoke(
        app, ["client", "--server", "localhost:1", "--key", str(tmp_path / "nope"), "--data", "x.npz", "--insecure"]
    )
    lonely = runner.invoke(app, ["client", "--server", "localhost:1", "--key", client_key, "--data", "x",
                                 "--insecure-non-loopback"])  # fmt: skip

    for refused in (everywhere, remote_client):
        assert refused.exit_code == 2 and "which is not a loopback address" in refused.stderr
        assert "add --insecure-non-loopback if you mean it" in refused.stderr
    # Asked twice, or on loopback: it goes on (here to the next error), saying loudly that it is plaintext.
    for loud in (anywhere, local, local_client):
        assert "WARNING: --insecure: no TLS" in loud.stderr and "not a loopback" not in loud.stderr
    assert "min_clients (2) exceeds the number of clients (1)" in anywhere.stderr + local.stderr
    assert "client key" in local_client.stderr and "not found" in local_client.stderr
    assert lonely.exit_code == 2 and "--insecure-non-loopback only goes with --insecure" in lonely.stderr


def test_the_api_refuses_plaintext_off_loopback_too(tmp_path: Path) -> None:
    from sheaf.core.config import load_config
    from sheaf.core.errors import ConfigError
    from sheaf.deploy.client import ClientOptions, DeployedClient
    from sheaf.deploy.keys import init_keys
    from sheaf.deploy.server import ServerOptions, run_server

    made = init_keys(tmp_path / "k", 2)
    with pytest.raises(ConfigError, match="not a loopback address"):
        run_server(load_config(overrides=[f"runs_dir={tmp_path}"]), ServerOptions(keys=made.folder, insecure=True))
    with pytest.raises(ConfigError, match="not a loopback address"):
        DeployedClient(ClientOptions("10.0.0.5:7443", made.client_keys[0], tmp_path / "x.npz", insecure=True))
    DeployedClient(
        ClientOptions(
            "10.0.0.5:7443", made.client_keys[0], tmp_path / "x.npz", insecure=True, insecure_non_loopback=True
        )
    ).close()


def test_a_server_refuses_simulated_devices_in_one_line(tmp_path: Path) -> None:
    runner.invoke(app, ["keys", "init", str(tmp_path / "k"), "--clients", "3"])
    args = ["server", "--keys", str(tmp_path / "k"), "--address", "127.0.0.1:0", "--set", f"runs_dir={tmp_path}"]
    refused = runner.invoke(app, [*args, "--set", "devices.enabled=true", "--set", "asynchronous.enabled=true"])
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        "error: simulated devices run in simulation only: a deployment's devices are real; "
        "set devices.enabled=false for sheaf server (asynchronous.enabled needs no devices there)"
    ]
    assert not list(tmp_path.glob("*.sqlite"))
