"""A deployed client's persistent state, kept in a file on the client, never on the server.

Some strategies give each client a state that lives across rounds (a control variate, a
personal head): the task returns it in ``FitResult.client_state`` and gets it back in
``FitInstructions.client_state`` the next time. In simulation the run store keeps it; a
deployed client keeps it in ``<state dir>/<run id>-client<id>.npz``.

The state moves on only when the update that produced it was aggregated — as in
simulation. A new state is therefore kept as *pending* with its round; the next task from
the server says the last round whose update from this client was aggregated
(``aggregated_round``): a pending state of that round becomes the state, any other
pending state is dropped (its update was rejected, came too late, or the server restarted
before the round was committed).

The file is NumPy's NPZ of plain arrays plus a JSON string (no pickle), written to a
temporary file and renamed over the old one, so a crash leaves the old or the new state,
never half of one.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from sheaf.core.params import Params
    >>> states = ClientStateFile(pathlib.Path(tempfile.mkdtemp()) / "run-client0.npz")
    >>> states.state_for(round=1, aggregated_round=0)
    {}
    >>> states.set_pending(1, {"c": Params({"w": np.ones(2)})})
    >>> states.state_for(round=2, aggregated_round=1)["c"]["w"].tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from sheaf.core.errors import DataError, SheafError
from sheaf.core.tree import decode_tree, encode_tree
from sheaf.core.update import TensorGroups

__all__ = ["ClientStateFile"]


class ClientStateFile:
    """The state file of one client in one run.

    Args:
        path: the file (its folder is created when first written).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._committed: tuple[int, TensorGroups] | None = None
        self._pending: tuple[int, TensorGroups] | None = None
        if path.exists():
            self._load()

    def _load(self) -> None:
        try:
            # Opened here, so the file is closed whatever NumPy makes of its contents.
            with open(self.path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
                meta = json.loads(str(archive["meta"]))
                arrays = {key: archive[key] for key in archive.files if key != "meta"}
            if not isinstance(meta, dict):
                raise TypeError("its meta is not an object")
            for slot in ("committed", "pending"):
                entry = meta.get(slot)
                if entry is not None:
                    count, round = entry["count"], entry["round"]
                    if type(count) is not int or type(round) is not int or not 0 <= count <= len(arrays):
                        raise ValueError(f"its {slot} state has a malformed round or tensor count")
                    tensors = [arrays[f"{slot}{i}"] for i in range(count)]
                    state = (round, decode_tree(entry["structure"], tensors))
                    setattr(self, f"_{slot}", state)
        # A damaged or forged file fails in NumPy's and zipfile's own ways: all mean "unreadable".
        except (OSError, ValueError, KeyError, TypeError, EOFError, RecursionError, zipfile.BadZipFile, zlib.error,
                NotImplementedError, SheafError) as exc:  # fmt: skip
            raise DataError(
                f"client state file {str(self.path)!r} is unreadable ({str(exc)[:200]}); move it away to start afresh"
            ) from None

    def _save(self) -> None:
        meta: dict[str, Any] = {"version": 1}
        arrays: dict[str, Any] = {}
        for slot, value in (("committed", self._committed), ("pending", self._pending)):
            if value is None:
                meta[slot] = None
                continue
            structure, tensors = encode_tree(dict(value[1]))
            meta[slot] = {"round": value[0], "structure": structure, "count": len(tensors)}
            arrays.update({f"{slot}{i}": t for i, t in enumerate(tensors)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    def state_for(self, round: int, aggregated_round: int) -> TensorGroups:
        """The state to train round ``round`` with, given the server's ``aggregated_round``."""
        if self._pending is not None and self._pending[0] < round:
            if self._pending[0] == aggregated_round:
                self._committed = self._pending
            self._pending = None
            self._save()
        return dict(self._committed[1]) if self._committed is not None else {}

    def set_pending(self, round: int, state: TensorGroups) -> None:
        """Keep the state a fit of ``round`` produced until its update is known aggregated."""
        self._pending = (round, dict(state))
        self._save()
