"""The data owner's policy file and the client's own checks on what the server describes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sheaf.core.errors import ConfigError, DataError
from sheaf.deploy.client_ledger import ClientLedger
from sheaf.deploy.description import DescriptionError, RunDescription
from sheaf.deploy.local import catalog_info, client_task
from sheaf.deploy.policy import ClientPolicy, TrainingPolicy, load_policy
from sheaf.privacy.accountant import RoundMechanism
from tests.deploy.conftest import ROOT
from tests.deploy.fake_server import description


def test_the_hospital_example_policy_loads_and_overrides_apply_after_it() -> None:
    policy = load_policy(
        ROOT / "examples" / "heart" / "policy.toml", ["privacy.budget=3", 'sharing.evaluation="never"']
    )
    assert policy.data.dataset == "heart" and policy.data.min_train_examples == 50
    assert policy.training.hidden == (16,) and policy.training.strategies[0] == "fedavg"
    assert (policy.privacy.require, policy.privacy.budget, policy.privacy.delta) == ("central", 3.0, 1e-6)
    assert policy.sharing.evaluation == "never" and policy.sharing.metrics == ("train_loss",)


def test_the_defaults_are_those_the_docs_promise() -> None:
    policy = ClientPolicy()
    assert (policy.data.test_fraction, policy.data.min_train_examples, policy.data.min_batch_size) == (0.2, 20, 8)
    assert (policy.training.max_rounds, policy.training.max_model_mb, policy.training.client_steps) == (
        1000,
        1024.0,
        ("*",),
    )
    assert (policy.privacy.require, policy.privacy.budget, policy.privacy.delta) == ("none", 0.0, 1e-5)
    assert policy.sharing == policy.sharing.__class__(("train_loss", "accuracy"), "unless-private")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.min_batch_size=0"], "policy data.min_batch_size must be >= 1, got 0"),
        (["privacy.require=always"], "policy privacy.require must be one of ['none', 'central', 'local']"),
        (["privacy.delta=1"], "policy privacy.delta must be in (0, 1), got 1.0"),
        (["sharing.evaluation=sometimes"], "policy sharing.evaluation must be one of"),
        (["data.test_fractoin=0.3"], "unknown policy key data.test_fractoin"),
        (["server.rounds=3"], "unknown policy section 'server'"),
        (["budget=3"], "must look like section.key=value"),
        (['training.max_rounds="ten"'], "policy training.max_rounds must be of type int, got 'ten'"),
    ],
)
def test_a_bad_policy_is_one_clear_error(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_policy(None, overrides)


def test_a_missing_or_broken_policy_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="policy file .* not found"):
        load_policy(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[data\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_policy(tmp_path / "bad.toml")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dataset": "../etc/passwd"}, "dataset as '../etc/passwd': not a name"),
        ({"model": "os:system"}, "model as 'os:system': not a name"),
        ({"hidden": [64] * 17}, "at most 16 layers"),
        ({"hidden": [0]}, "layer widths [0]"),
        ({"rounds": 0}, "a run of 0 rounds"),
        ({"privacy": "maybe"}, "privacy as 'maybe'"),
    ],
)
def test_a_malformed_run_description_is_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(DescriptionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RunDescription.from_proto(description(**fields))


def test_the_built_in_model_is_the_one_the_policy_agrees_to_and_within_its_size() -> None:
    info = catalog_info("digits")
    run = RunDescription.from_proto(description(hidden=[64]))
    assert type(client_task(run, TrainingPolicy(), info=info)).__name__ == "TorchTask"
    with pytest.raises(ConfigError, match=r"the run uses model mlp \[64\], this client's policy agrees to mlp \[16\]"):
        client_task(run, TrainingPolicy(hidden=(16,)), info=info)
    huge = RunDescription.from_proto(description(hidden=[1 << 20, 1 << 20]))  # 4 TiB: sized, never allocated
    with pytest.raises(ConfigError, match=r"more than this client's training.max_model_mb=1024"):
        client_task(huge, TrainingPolicy(), info=info)
    with pytest.raises(ConfigError, match="bring your own task"):
        client_task(RunDescription.from_proto(description(dataset="private")), TrainingPolicy(), info=None)


def test_an_unreadable_ledger_stops_the_client_rather_than_reset_its_budget(tmp_path: Path) -> None:
    path = tmp_path / "ledger-k.json"
    ledger = ClientLedger(path)
    ledger.record("run1", 3, ledger.charged("run1", RoundMechanism("local", 2.0), 3))
    assert ClientLedger(path).last_trained("run1") == 3
    path.write_text('{"events": [["local", 2.0, 1.0, 0, 0, "x"]], "runs": {}}')
    with pytest.raises(DataError, match="unreadable .* starting afresh would forget what this client has spent"):
        ClientLedger(path)
