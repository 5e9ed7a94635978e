"""What the server checks on an incoming update before it may reach aggregation.

Two stages, so a bad update costs little:

1. :func:`declared_problem` — on the result's header alone, before any tensor bytes are
   received: the delta must declare exactly the model's tensor names, shapes and dtypes
   — or, where clients compress their updates, the encoding must declare exactly its
   encoder's layout for the model (so an encoded update is never larger than its encoder
   can make it); the size limit is enforced by the reader: see :mod:`sheaf.deploy.wire`;
2. :func:`value_problem` — on the received values: the round's acceptance rule
   (:class:`~sheaf.core.acceptance.UpdateRule`: every value finite, extras included; the
   weight the client may claim; the norm bound — ``server.max_update_norm`` and the
   relative bound; the metrics and extras the strategy reads, in their ranges). An encoded
   update is judged here on what it carries beside its encoding (the weight it claims, its
   extras); the strategy's server half decodes it in the round loop, which then judges the
   decoded delta by the same rule.

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
from sheaf.core.encoded import EncodedLayout
from sheaf.core.errors import SheafError
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.wire import ENCODED_GROUP

__all__ = ["declared_problem", "value_problem"]


def declared_problem(tensors: Sequence[pb.TensorSpec], like: Params, encoding: EncodedLayout = ()) -> str | None:
    """Whether a fit result's declared delta (group ``""``) matches the model, or its declared
    encoding (group ``sheaf:encoded``) its encoder's ``encoding`` when updates are encoded, as one line."""
    if encoding:
        if any(spec.group == "" for spec in tensors):
            return "update declares a plain delta; this run's clients send their updates encoded"
        coded = [(s.name, s.dtype, tuple(int(d) for d in s.shape)) for s in tensors if s.group == ENCODED_GROUP]
        if tuple(coded) != encoding:
            return f"encoded update declares {coded[:4]}, its encoder sends {list(encoding)[:4]}"
        return None
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

    An encoded update (compression) has no delta yet: here its extras must be finite and
    its weight within the rule; its delta is judged once the strategy's server half decoded
    it (round loop), by the same rule, and its norm is nan.

    Returns:
        ``(None, norm)`` if it is accepted, else ``(one line saying why, nan)``.
    """
    if update.encoded is not None:
        for group, tensors in update.extras.items():
            if not tensors.all_finite():
                return f"client {update.client_id}: extra tensors {group!r} hold NaN or infinite values", math.nan
        try:
            rule.check_weight(update.client_id, update.num_examples)
        except SheafError as exc:
            return str(exc), math.nan
        return None, math.nan
    try:
        return None, rule.measured(update, like)
    except SheafError as exc:
        return str(exc), math.nan
