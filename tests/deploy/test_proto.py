from __future__ import annotations

import subprocess
import sys

import pytest

from sheaf.deploy.transport import METHODS, SERVICE_NAME
from tests.deploy.conftest import ROOT


def test_the_service_is_versioned_and_its_methods_come_from_the_schema() -> None:
    assert SERVICE_NAME == "sheaf.v1.Federation"
    assert sorted(METHODS) == ["Heartbeat", "Join", "PullTask", "PushResult", "SecAgg"]


def test_the_committed_generated_code_matches_the_schema() -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (a test extra) regenerates the protobuf modules")
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
