"""What the server checks on an incoming update before it may reach aggregation.

Two stages, so a bad update costs little:

1. :func:`declared_problem` — on the result's header alone, before any tensor bytes are
   received: the delta must declare exactly the model's tensor names, shapes and dtypes
   (the size limit is enforced by the reader: see :mod:`sheaf.deploy.wire`);
2. :func:`value_problem` — on the received values: the round's acceptance rule
   (:class:`~sheaf.core.acceptance.UpdateRule`: every value finite, extras included; the
   weight the client may claim; the norm bound — ``server.max_update_norm`` and the
   relative bound; the metrics and extras the strategy reads, in their ranges).

Each returns None or one line saying what is wrong, which the server logs, answers the
client with, and records as the client's dropout reason for the round.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> from sheaf.core.update import Update
    >>> model = Params({"w": np.zeros(2, np.float32)})
    >>> bad = Update(3, Params({"w": np.array([np.nan, 0], np.float32)}), 5)
    >>> value_problem(bad, model, UpdateRule())
    ("client 3: tensor 'w' holds NaN or infinite values", nan)
    >>> value_problem(Update(3, Params({"w": np.array([3, 4], np.float32)}), 5), model, UpdateRule())
    (None, 5.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sheaf.core.acceptance import UpdateRule
from sheaf.core.errors import SheafError
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.deploy._proto import federation_pb2 as pb

__all__ = ["declared_problem", "value_problem"]


def declared_problem(tensors: Sequence[pb.TensorSpec], like: Params) -> str | None:
    """Whether a fit result's declared delta (group ``""``) matches the model, as one line."""
    declared = {spec.name: spec for spec in tensors if spec.group == ""}
    if set(declared) != set(like) or len(declared) != len(like):
        return f"update declares tensors {sorted(declared)[:8]}, the model has {sorted(like)[:8]}"
    for name, array in like.items():
        spec = declared[name]
        shape = tuple(int(d) for d in spec.shape)
        if shape != array.shape:
            return f"tensor {name!r} has shape {shape}, the model's is {array.shape}"
        if spec.dtype != array.dtype.name:
            return f"tensor {name!r} has dtype {spec.dtype}, the model's is {array.dtype.name}"
    return None


def value_problem(update: Update, like: Params, rule: UpdateRule) -> tuple[str | None, float]:
    """Whether an update's values may be aggregated under ``rule``, and its delta's L2 norm.

    Returns:
        ``(None, norm)`` if it is accepted, else ``(one line saying why, nan)``.
    """
    try:
        return None, rule.measured(update, like)
    except SheafError as exc:
        return str(exc), math.nan
