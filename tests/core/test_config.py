from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sheaf.core.config import RunConfig, apply_overrides, load_config
from sheaf.core.errors import ConfigError


def test_defaults_are_the_quickstart() -> None:
    cfg = load_config()
    assert (cfg.data.dataset, cfg.data.clients, cfg.data.partition, cfg.data.alpha) == ("digits", 20, "dirichlet", 0.5)
    assert cfg.strategy.name == "fedavg"


def test_every_setting_the_issue_names_can_be_overridden_by_its_bare_name() -> None:
    cfg = load_config(
        overrides=[
            "dataset=heart",
            "partition=iid",
            "clients=7",
            "fraction=0.25",
            "rounds=3",
            "strategy=fedavg",
            "epochs=4",
            "batch_size=8",
            "lr=0.5",
            "seed=9",
            "interval=2",
        ]
    )
    assert cfg.data.dataset == "heart"
    assert cfg.data.partition == "iid"
    assert cfg.data.clients == 7
    assert cfg.strategy.fraction == 0.25
    assert cfg.rounds == 3
    assert cfg.train.epochs == 4
    assert cfg.train.batch_size == 8
    assert cfg.train.lr == 0.5
    assert cfg.seed == 9
    assert cfg.evaluation.interval == 2


def test_engine_settings_and_the_evaluation_sample() -> None:
    cfg = load_config(overrides=["backend=pool", "workers=3", "memory_mb=256", "ray_address=auto", "max_clients=50"])
    assert (cfg.backend, cfg.engine.workers, cfg.engine.memory_mb, cfg.engine.ray_address) == ("pool", 3, 256, "auto")
    assert cfg.evaluation.max_clients == 50
    assert load_config().backend == "auto"


def test_dotted_keys_and_toml_literals() -> None:
    cfg = load_config(overrides=["model.hidden=[32, 16]", "evaluation.federated=false", "data.alpha=1"])
    assert cfg.model.hidden == (32, 16)
    assert cfg.evaluation.federated is False
    assert cfg.data.alpha == 1.0


def test_a_toml_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('rounds = 4\n[data]\nclients = 6\n[strategy]\nname = "fedavg"\nfraction = 0.5\n')
    cfg = load_config(path, ["rounds=5"])
    assert (cfg.rounds, cfg.data.clients, cfg.strategy.fraction) == (5, 6, 0.5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.alpah=1"], "unknown config key 'data.alpah'; did you mean 'alpha'"),
        (["rouns=3"], "unknown config key 'rouns'; did you mean 'rounds'"),
        (["bogus.x=1"], "unknown config key 'bogus'"),
        (["alpha=0"], r"data.alpha must be > 0 for Dirichlet partitioning, got 0.0"),
        (["alpha=-1"], r"data.alpha must be > 0"),
        (["fraction=0"], r"strategy.fraction must be in \(0, 1\]"),
        (["fraction=1.5"], r"strategy.fraction must be in \(0, 1\]"),
        (["rounds=0"], "rounds must be >= 1"),
        (["rounds=abc"], "rounds must be of type int"),
        (["epochs=1.5"], "train.epochs must be of type int"),
        (["optimizer=rmsprop"], "train.optimizer must be one of: sgd, adam"),
        (["novalue"], "must look like key=value"),
        (["workers=-1"], r"engine.workers must be >= 0 \(0: one per core\), got -1"),
        (["memory_mb=0"], "engine.memory_mb must be >= 1, got 0"),
        (["client_timeout=-2"], r"engine.client_timeout must be >= 0 \(0: no limit\)"),
        (["max_clients=-5"], r"evaluation.max_clients must be >= 0 \(0: all clients\), got -5"),
        (["lr_decay=0"], r"train.lr_decay must be in \(0, 1\] \(1: a constant learning rate\), got 0"),
        (["lr_decay=1.5"], r"train.lr_decay must be in \(0, 1\]"),
    ],
)
def test_bad_settings_get_one_clear_error(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_missing_and_broken_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("rounds = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_unknown_key_in_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[train]\nepoch = 3\n")
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_config(path)


def test_strategy_options_are_kept_for_the_strategy_to_validate() -> None:
    cfg = load_config(overrides=["strategy.server_lr=0.1"])
    assert cfg.strategy.options == {"server_lr": 0.1}
    assert cfg.to_dict()["strategy"]["server_lr"] == 0.1


@given(
    rounds=st.integers(1, 500),
    clients=st.integers(1, 10_000),
    alpha=st.floats(0.01, 100),
    hidden=st.lists(st.integers(1, 256), max_size=3),
    fraction=st.floats(0.01, 1.0),
)
def test_to_dict_round_trips(rounds: int, clients: int, alpha: float, hidden: list[int], fraction: float) -> None:
    cfg = load_config(
        overrides=[
            f"rounds={rounds}",
            f"clients={clients}",
            f"alpha={alpha!r}",
            f"hidden={hidden}",
            f"fraction={fraction!r}",
        ]
    )
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_overrides_do_not_change_the_input_mapping() -> None:
    raw = {"data": {"clients": 3}}
    apply_overrides(raw, ["clients=5"])
    assert raw == {"data": {"clients": 3}}


def test_a_rounds_learning_rate_decays_from_the_first_round() -> None:
    train = load_config(overrides=["lr=0.1", "lr_decay=0.9"]).train

    rates = [train.for_round(t).lr for t in (1, 2, 11)]

    assert rates == pytest.approx([0.1, 0.09, 0.1 * 0.9**10])
    assert all(train.for_round(t).lr_decay == 1.0 for t in (1, 5))  # the round's rate is final
    constant = load_config().train
    assert constant.for_round(50) == constant


def test_a_datasets_strategy_hyperparameters_do_not_follow_the_user_to_another_strategy() -> None:
    def defaults(name: str) -> dict[str, object]:
        return {"strategy": {"name": "fedavgm", "lr": 0.2, "momentum": 0.9, "fraction": 0.1}}

    same = load_config(overrides=["strategy.momentum=0.5"], defaults=defaults).strategy
    other = load_config(overrides=["strategy=fedadam"], defaults=defaults).strategy

    assert (same.name, dict(same.options), same.fraction) == ("fedavgm", {"lr": 0.2, "momentum": 0.5}, 0.1)
    assert (other.name, dict(other.options), other.fraction) == ("fedadam", {}, 0.1)
