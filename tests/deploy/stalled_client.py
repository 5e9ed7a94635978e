"""``python -m tests.deploy.stalled_client client ...``: ``sheaf client`` that stalls after sharing its keys.

For the end-to-end test of a client killed mid-protocol: when the shares its neighbours
sealed for it arrive (its own shares are out), it prints ``stalled after sharing keys``
and waits, so the test can kill it (SIGKILL) at exactly that point of SecAgg+ — after its
keys and shares went out, before its masked input.
"""

from __future__ import annotations

import sys
import time

from sheaf.cli.app import app
from sheaf.deploy.client_work import ClientWork
from sheaf.secagg.client import ClientState

_step = ClientWork.protocol_step


def _stalling(self: ClientWork, state: ClientState, data: bytes, want: int) -> tuple[ClientState, bytes | None]:
    if want == 2:  # ForwardedShares: its own ShareKeys went out with the last request
        print("stalled after sharing keys", flush=True)
        sys.stdout.flush()
        time.sleep(3600)
    return _step(self, state, data, want)


if __name__ == "__main__":
    ClientWork.protocol_step = _stalling  # type: ignore[method-assign]
    app(prog_name="sheaf")
