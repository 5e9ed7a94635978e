"""When an update is accepted for aggregation: one rule, applied wherever updates arrive.

An update from a client that trained (``num_examples > 0``) is accepted if

1. it is shaped like the model: the same tensor names, shapes and dtypes, every value
   finite (:func:`~sheaf.core.update.check_update`);
2. it carries every metric the strategy's steps read, each a finite number inside the
   range the step declares (a :class:`MetricRange`), and every extra tensor group they
   read, shaped like the model;
3. its delta's L2 norm is within the bound a step declares (a private mean whose clients
   clip to C accepts nothing longer: the server, adding up updates it never sees one by
   one, relies on it for the sensitivity of the sum) or the operator sets;
4. the number of examples it claims (its weight in a weighted mean) is at most what the
   operator allows (``max_weight``; always at most
   :data:`~sheaf.core.update.MAX_EXAMPLES`).

Where clients compress their updates, an update arrives encoded and must have exactly
its encoder's layout (``encoding``: every array's name, dtype and shape, fixed for the
model before the round; the deployed server checks a result's declared tensors against it
before it takes any bytes); the strategy's server half decodes it, and the decoded update
meets the rule above like any other.

Everything a client sends is a claim it may lie about, so the ranges are what a step can
take without breaking: FedNova's ``fednova_norm`` is a step count, never ``5e-324``;
q-FFL's Lipschitz estimate is a positive number small enough to square. A client that did
not train (no examples) carries no weight and is never refused.

The rule is a value (:class:`UpdateRule`) derived from a strategy's contract. It travels
with a cohort to wherever updates are added up — the round loop, a pool worker or Ray
actor adding an update to its exact partial sum, the deployed server folding a client's
delta into its running sum — so an update is judged by the same words everywhere, and a
refusal becomes that client's dropout with the reason recorded.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> from sheaf.core.update import Update
    >>> rule = UpdateRule("fednova", metrics=(MetricRange("fednova_norm", 1e-6, 1e9),))
    >>> like = Params({"w": np.zeros(2)})
    >>> rule.check(Update(3, like, 4, {"fednova_norm": 2.0}), like)
    >>> rule.check(Update(3, like, 4, {"fednova_norm": 5e-324}), like)
    Traceback (most recent call last):
    ...
    sheaf.core.acceptance.UpdateRejected: client 3: strategy 'fednova' needs metric 'fednova_norm' in [1e-06, 1e+09], got 5e-324
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sheaf.core.encoded import EncodedLayout
from sheaf.core.errors import SheafError, StrategyError
from sheaf.core.params import Params
from sheaf.core.update import MAX_EXAMPLES, Update, check_update

__all__ = ["MetricRange", "OperatorLimits", "UpdateRejected", "UpdateRule", "model_scale"]


class UpdateRejected(StrategyError):
    """An update breaks the acceptance rule: its client is a dropout, with this reason."""


@dataclass(frozen=True)
class MetricRange:
    """A metric a step reads from every update, and the values it can take.

    Attributes:
        name: the metric's name.
        low: the smallest value accepted.
        high: the largest value accepted.
    """

    name: str
    low: float = -math.inf
    high: float = math.inf

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"metric range of {self.name!r} is empty: [{self.low}, {self.high}]")

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is a finite number within the range."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return math.isfinite(value) and self.low <= value <= self.high

    def describe(self) -> str:
        """The range in words, e.g. ``in [1e-06, 1e+09]``."""
        if self.low == -math.inf and self.high == math.inf:
            return "finite"
        return f"in [{self.low:g}, {self.high:g}]"

    def to_json(self) -> list[Any]:
        """``[name, low, high]`` with infinities as None (JSON has none)."""
        return [self.name, None if math.isinf(self.low) else self.low, None if math.isinf(self.high) else self.high]

    @classmethod
    def from_json(cls, value: Sequence[Any]) -> MetricRange:
        """The inverse of :meth:`to_json`."""
        name, low, high = value
        return cls(str(name), -math.inf if low is None else float(low), math.inf if high is None else float(high))


@dataclass(frozen=True)
class UpdateRule:
    """What an update must carry to be aggregated (see the module docstring).

    Attributes:
        owner: whose rule it is (the strategy's name), for messages.
        metrics: the metrics read from every update that trained, with their ranges.
        extras: the extra tensor groups read from every such update (shaped like the model).
        max_norm: the largest L2 norm of a delta accepted (computed in float64; ``inf``:
            no bound).
        max_weight: the most examples an update may claim.
        weight_caps: ``(client id, most examples)`` pairs: what the operator declared for
            particular clients (tighter than ``max_weight``).
        encoding: the layout every update arrives in when clients encode their updates
            (compression); empty: updates arrive as plain deltas.
    """

    owner: str = ""
    metrics: tuple[MetricRange, ...] = ()
    extras: tuple[str, ...] = ()
    max_norm: float = math.inf
    max_weight: int = MAX_EXAMPLES
    weight_caps: tuple[tuple[int, int], ...] = ()
    encoding: EncodedLayout = ()

    def weight_cap(self, client_id: int) -> int:
        """The most examples ``client_id`` may claim."""
        return min([self.max_weight, *(cap for cid, cap in self.weight_caps if cid == client_id)])

    def narrowed(
        self,
        *,
        max_norm: float = math.inf,
        max_weight: int = MAX_EXAMPLES,
        weight_caps: Mapping[int, int] | None = None,
    ) -> UpdateRule:
        """This rule with tighter bounds (each the smaller of its own and the one given)."""
        caps = dict(self.weight_caps)
        for client, cap in (weight_caps or {}).items():
            caps[int(client)] = min(int(cap), caps.get(int(client), int(cap)))
        return dataclasses.replace(
            self,
            max_norm=min(self.max_norm, max_norm),
            max_weight=min(self.max_weight, max_weight),
            weight_caps=tuple(sorted(caps.items())),
        )

    @property
    def reads_updates(self) -> bool:
        """Whether anything beyond an update's delta and weight is read (so a sum cannot stand in):
        metrics, extras, or an encoding only the server half can decode."""
        return bool(self.metrics or self.extras or self.encoding)

    def check(self, update: Update, like: Params) -> None:
        """Accept ``update`` or say why not.

        Raises:
            UpdateRejected: naming the client and the first problem found.
        """
        self._judge(update, like, measure=False)

    def measured(self, update: Update, like: Params) -> float:
        """Accept ``update`` or say why not, and return its delta's L2 norm (in float64).

        Raises:
            UpdateRejected: naming the client and the first problem found.
        """
        return self._judge(update, like, measure=True)

    def check_weight(self, client_id: int, num_examples: int) -> None:
        """Accept a claim of ``num_examples`` from ``client_id`` (an update's or an evaluation's).

        Raises:
            UpdateRejected: if it is more than the client may claim.
        """
        cap = self.weight_cap(client_id)
        if num_examples > cap:
            raise UpdateRejected(
                f"client {client_id}: claims {num_examples} examples, more than the {cap} this run accepts from it"
            )

    def _judge(self, update: Update, like: Params, *, measure: bool) -> float:
        try:
            check_update(update, like)
        except SheafError as exc:  # the structural check's words, as this rule's one error type
            raise UpdateRejected(str(exc)) from None
        self.check_weight(update.client_id, update.num_examples)
        norm = update.delta.l2_norm() if measure or self.max_norm < math.inf else math.nan  # in float64
        if update.num_examples == 0:
            return norm
        who = f"client {update.client_id}: strategy {self.owner!r}"
        if self.max_norm < math.inf and not norm <= self.max_norm:
            raise UpdateRejected(f"{who} accepts updates of L2 norm at most {self.max_norm:g}, got {norm:.6g}")
        for wanted in self.metrics:
            value = update.metrics.get(wanted.name)
            if not wanted.accepts(value):
                raise UpdateRejected(f"{who} needs metric {wanted.name!r} {wanted.describe()}, got {value!r}")
        for group in self.extras:
            tensors = update.extras.get(group)
            if tensors is None or not like.same_structure(tensors):
                raise UpdateRejected(f"{who} needs extra tensors {group!r} shaped like the model")
        return norm

    def to_json(self) -> dict[str, Any]:
        """The rule as JSON (for a worker's round message)."""
        return {
            "owner": self.owner,
            "metrics": [m.to_json() for m in self.metrics],
            "extras": list(self.extras),
            "max_norm": None if math.isinf(self.max_norm) else self.max_norm,
            "max_weight": self.max_weight,
            "weight_caps": [list(pair) for pair in self.weight_caps],
            "encoding": [[name, dtype, list(shape)] for name, dtype, shape in self.encoding],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> UpdateRule:
        """The inverse of :meth:`to_json`."""
        bound = value.get("max_norm")
        return cls(
            str(value.get("owner", "")),
            tuple(MetricRange.from_json(m) for m in value.get("metrics", ())),
            tuple(str(e) for e in value.get("extras", ())),
            math.inf if bound is None else float(bound),
            int(value.get("max_weight", MAX_EXAMPLES)),
            tuple((int(cid), int(cap)) for cid, cap in value.get("weight_caps", ())),
            tuple((str(n), str(d), tuple(int(x) for x in shape)) for n, d, shape in value.get("encoding", ())),
        )


@dataclass(frozen=True)
class OperatorLimits:
    """What a deployment's operator bounds, beyond what the strategy reads (``[server]``).

    A client's claims are bounded by what the operator declares: the examples it may claim
    (per client, from its line in the authorised-clients file, else ``max_examples``) and
    the length of its delta — absolutely (``max_update_norm``) and relative to the updates
    aggregated in the previous round (``max_norm_ratio`` times their median length). The
    relative bound needs no knowledge of the model and moves with training; together with
    the weight cap it bounds what one client can move the model by in a round, whatever it
    claims, while honest updates stay well within it.

    Before any round was aggregated there is no median to go by, so the first rounds bound
    a delta by ``max_norm_ratio`` times the model's own scale (:func:`model_scale`: its L2
    norm, or the square root of its size if that is larger — one unit per parameter, so a
    model initialised at zero has a scale too). An honest first update moves each
    parameter by far less than ten units; a finite 1e30 delta is refused by name instead
    of exploding the aggregate and spoiling the round for every honest client.

    Attributes:
        max_examples: the most examples any client may claim.
        max_update_norm: the longest delta accepted (``inf``: no absolute bound).
        max_norm_ratio: the longest delta accepted, as a multiple of the previous round's
            median (0: off).
        weight_caps: per-client declared maxima of examples.

    Example:
        >>> limits = OperatorLimits(max_examples=500, max_norm_ratio=10.0, weight_caps={3: 120})
        >>> rule = limits.rule_for(UpdateRule("fedavg"), previous_median=0.5)
        >>> rule.max_norm, rule.weight_cap(3), rule.weight_cap(4)
        (5.0, 120, 500)
        >>> import numpy as np
        >>> limits.rule_for(UpdateRule("fedavg"), None, model=Params({"w": np.zeros(100)})).max_norm
        100.0
    """

    max_examples: int = MAX_EXAMPLES
    max_update_norm: float = math.inf
    max_norm_ratio: float = 0.0
    weight_caps: Mapping[int, int] = dataclasses.field(default_factory=dict)

    def rule_for(self, rule: UpdateRule, previous_median: float | None, model: Params | None = None) -> UpdateRule:
        """``rule`` narrowed by these limits for a round after one whose aggregated updates
        had median length ``previous_median`` (None: no such round yet, when the bound goes
        by the scale of ``model``, the round's global params)."""
        bound = self.max_update_norm
        if self.max_norm_ratio > 0:
            if previous_median is not None and previous_median > 0:
                bound = min(bound, self.max_norm_ratio * previous_median)
            elif model is not None:
                bound = min(bound, self.max_norm_ratio * model_scale(model))
        return rule.narrowed(max_norm=bound, max_weight=self.max_examples, weight_caps=self.weight_caps)

    def weight_rule(self) -> UpdateRule:
        """The rule for what carries no delta (an evaluation): only the weight is bounded."""
        return UpdateRule("evaluation").narrowed(max_weight=self.max_examples, weight_caps=self.weight_caps)


def model_scale(model: Params) -> float:
    """A model's scale: its L2 norm, or the square root of its size if that is larger.

    Example:
        >>> import numpy as np
        >>> model_scale(Params({"w": np.full(4, 3.0)})), model_scale(Params({"w": np.zeros(4)}))
        (6.0, 2.0)
    """
    size = sum(array.size for array in model.values())
    return max(math.sqrt(size), model.l2_norm())
