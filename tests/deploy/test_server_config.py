from __future__ import annotations

import pytest

from sheaf.core.config import load_config
from sheaf.core.errors import ConfigError


def test_server_settings_have_bare_keys_and_travel_in_the_config() -> None:
    config = load_config(overrides=["round_timeout=20", "server.heartbeat_interval=2", "max_update_norm=5"])
    assert (config.server.round_timeout, config.server.heartbeat_interval, config.server.max_update_norm) == (20, 2, 5)
    assert config.to_dict()["server"]["heartbeat_timeout"] == 30.0


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("round_timeout=0", "server.round_timeout must be > 0 seconds"),
        ("heartbeat_timeout=1", r"server.heartbeat_timeout must be longer than server.heartbeat_interval \(5.0\)"),
        ("max_update_mb=-1", "server.max_update_mb must be >= 0"),
        ("server.retries=3", "unknown config key 'server.retries'"),
    ],
)
def test_bad_server_settings_are_one_clear_error(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[override])
