"""Record the final-params digests that ``test_behaviour_unchanged.py`` compares against.

Run once, from a checkout whose behaviour is the reference (the digests committed in
``fixtures/behaviour_digests.json`` were recorded on main at 59ed0ee, before the seams
refactor)::

    python -m tests.run.record_digests > tests/run/fixtures/behaviour_digests.json

Every (configuration, backend) pair runs in a fresh Python process, so nothing one run
leaves behind in a process can change another's result.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from tests.run.behaviour import BACKENDS, CONFIGS


def main() -> None:
    digests: dict[str, dict[str, str]] = {}
    for name in CONFIGS:
        digests[name] = {}
        for backend in BACKENDS:
            with tempfile.TemporaryDirectory() as folder:
                out = subprocess.run(
                    [sys.executable, "-m", "tests.run.behaviour", name, backend, folder],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            digests[name][backend] = out.strip().splitlines()[-1]
            print(name, backend, digests[name][backend], file=sys.stderr)
    print(json.dumps(digests, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
