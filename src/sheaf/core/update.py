"""What a client sends back after local training, and the scalar types around it.

An :class:`Update` always carries the *delta* (client params minus the global params it
started from): strategies, clipping and secure aggregation all work on deltas. A task that
returns new params is turned into a delta with :meth:`Update.from_params`. A compressed
update arrives *encoded* (:class:`~sheaf.core.encoded.Encoded`, with an empty delta) and
is decoded by the strategy's server half before anything else reads it.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> start = Params({"w": np.zeros(3, np.float32)})
    >>> trained = Params({"w": np.ones(3, np.float32)})
    >>> u = Update.from_params(7, start, trained, num_examples=20, metrics={"loss": 0.4})
    >>> u.delta["w"].tolist(), u.num_examples
    ([1.0, 1.0, 1.0], 20)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from sheaf.core.encoded import Encoded
from sheaf.core.errors import SheafError
from sheaf.core.params import Params

__all__ = ["MAX_EXAMPLES", "Metrics", "Scalar", "TensorGroups", "Update", "check_update", "validate_metrics"]

#: A value that can travel in a config or a metrics record.
Scalar = bool | int | float | str

#: Named numbers a client or evaluation reports (loss, accuracy, ...).
Metrics = Mapping[str, float]

#: Named groups of tensors besides the model itself: what a strategy sends to clients
#: (e.g. SCAFFOLD's server control variate), what a client sends back beside its delta, or
#: a client's own persistent state (e.g. its control variate or a personal head).
TensorGroups = Mapping[str, Params]


def validate_metrics(metrics: Mapping[str, object], *, source: str) -> dict[str, float]:
    """Return ``metrics`` as a plain dict of floats, or raise one clear error.

    Args:
        metrics: mapping of metric name to number.
        source: who produced them, for the error message.

    Raises:
        SheafError: if a name is not a string or a value is not a finite-or-nan number.
    """
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str):
            raise SheafError(f"{source}: metric names must be strings, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SheafError(f"{source}: metric {name!r} must be a number, got {type(value).__name__}")
        if math.isinf(float(value)):
            raise SheafError(f"{source}: metric {name!r} is infinite")
        out[name] = float(value)
    return out


@dataclass(frozen=True)
class Update:
    """One client's contribution to a round.

    Attributes:
        client_id: the client that trained.
        delta: trained params minus the global params the client started from.
        num_examples: how many training examples the client used (its weight in FedAvg).
        metrics: numbers the client chose to share (e.g. its training loss).
        extras: further tensors the client sends (e.g. SCAFFOLD's control-variate delta).
        encoded: the delta as its encoder sent it (compression), the delta itself then
            being empty until the server half decodes it; None for a plain delta.
    """

    client_id: int
    delta: Params
    num_examples: int
    metrics: Metrics = field(default_factory=dict)
    extras: TensorGroups = field(default_factory=dict)
    encoded: Encoded | None = None

    def __post_init__(self) -> None:
        if self.num_examples < 0:
            raise SheafError(f"client {self.client_id}: num_examples must be >= 0, got {self.num_examples}")

    @classmethod
    def from_params(
        cls,
        client_id: int,
        start: Params,
        trained: Params,
        num_examples: int,
        metrics: Metrics | None = None,
        extras: TensorGroups | None = None,
    ) -> Update:
        """Build an update from the params a client started from and ended with."""
        if not start.same_structure(trained):
            raise SheafError(
                f"client {client_id}: trained params do not match the global model's "
                f"names/shapes/dtypes ({trained!r} vs {start!r})"
            )
        return cls(client_id, trained - start, num_examples, dict(metrics or {}), dict(extras or {}))


#: The most examples one update may claim, its largest weight in an exact sum: a float32
#: delta (24 significant bits) times a weight below 2**29 has at most 53 significant bits,
#: so the product is exact in float64.
MAX_EXAMPLES = (1 << 29) - 1


def check_update(update: Update, like: Params) -> None:
    """Check an update before aggregation: a sane weight; same names, shapes and dtypes, all finite.

    Raises:
        SheafError: naming the client and the first problem found.
    """
    who = f"client {update.client_id}"
    if update.encoded is not None:
        raise SheafError(f"{who}: update is still encoded; the strategy's server half decodes it before it is checked")
    if isinstance(update.num_examples, bool) or not isinstance(update.num_examples, int | np.integer):
        raise SheafError(f"{who}: num_examples must be a whole number, got {update.num_examples!r}")
    if not 0 <= update.num_examples <= MAX_EXAMPLES:
        raise SheafError(f"{who}: claims {update.num_examples} examples; an update may claim 0 to {MAX_EXAMPLES}")
    if len(update.delta) != len(like) or set(update.delta) != set(like):
        raise SheafError(f"{who}: update has tensors {list(update.delta)}, the model has {list(like)}")
    for name, expected in like.items():
        got = update.delta[name]
        if got.shape != expected.shape:
            raise SheafError(f"{who}: tensor {name!r} has shape {got.shape}, expected {expected.shape}")
        if got.dtype != expected.dtype:
            raise SheafError(f"{who}: tensor {name!r} has dtype {got.dtype}, expected {expected.dtype}")
        if not bool(np.isfinite(got).all()):
            raise SheafError(f"{who}: tensor {name!r} holds NaN or infinite values")
    for group, tensors in update.extras.items():
        if not tensors.all_finite():
            raise SheafError(f"{who}: extra tensors {group!r} hold NaN or infinite values")
