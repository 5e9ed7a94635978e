"""The deployment commands' own surface: keys, status, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sheaf.cli.app import app
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
    assert bad.exit_code == 2 and bad.stderr.startswith("error: policy privacy.require must be one of")
    unknown = runner.invoke(app, [*args, "--set", "data.min_rows=3"])
    assert unknown.exit_code == 2 and "unknown policy key data.min_rows" in unknown.stderr
