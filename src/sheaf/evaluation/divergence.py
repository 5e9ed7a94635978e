"""Is a run diverging? A warning the CLI, the report and the dashboard give the same way.

A run diverges when its loss climbs far above where it started and stays there: a learning
rate too high for the model, or differential-privacy noise too large for the cohort (a
private run whose central loss went from 47 to 225 was one). The rule, on the central loss
(the monitored subset's in a monitored run, the rounds with a central evaluation where it
runs every ``evaluation.central_interval`` rounds, or the clients' training loss where there
is no central test set):

- the loss of the last round is not finite, or
- each of the last ``window`` rounds' losses is above ``factor`` times the lowest loss so
  far **and** above the first round's loss.

The second condition keeps overfitting out: a loss that falls from 2.3 to 0.2 and creeps
back to 0.5 is a model fitting its training data too well, not one that diverges.

Example:
    >>> from sheaf.evaluation.history import RoundRecord
    >>> rising = [RoundRecord(i + 1, 10, 10, central={"loss": v}) for i, v in enumerate([47, 60, 110, 180, 225])]
    >>> print(divergence(rising))
    the run is diverging: its central loss rose from 47 (round 1) to 225 (round 5); lower train.lr, or with differential privacy the noise (privacy.noise_multiplier), or sample more clients per round
    >>> falling = [RoundRecord(i + 1, 10, 10, central={"loss": v}) for i, v in enumerate([2.3, 0.4, 0.2, 0.5, 0.5, 0.5])]
    >>> divergence(falling) is None
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sheaf.evaluation.history import RoundRecord

__all__ = ["divergence", "loss_series"]


def loss_series(records: Sequence[RoundRecord]) -> tuple[str, list[tuple[int, float]]]:
    """The loss the rule watches, and its ``(round, value)`` pairs (NaN kept, missing skipped)."""
    for label, section, key in (
        ("central loss", "central", "loss"),
        ("monitored central loss", "monitor", "loss"),
        ("clients' training loss", "fit", "train_loss"),
    ):
        values = [(r.round, float(v)) for r in records if isinstance(v := getattr(r, section).get(key), int | float)]
        if section == "central" and any("loss" in r.monitor for r in records):
            continue  # a monitored run: only the last round has a central figure; watch the subset
        if values:
            return label, values
    return "", []


def divergence(records: Sequence[RoundRecord], *, window: int = 3, factor: float = 2.0) -> str | None:
    """Why the run looks like it is diverging, or None if it does not.

    Args:
        records: the run's rounds so far, in order.
        window: how many of the last rounds must all be too high.
        factor: how many times its lowest so far the loss must exceed.
    """
    label, series = loss_series(records)
    if not series:
        return None
    last_round, last = series[-1]
    advice = (
        "lower train.lr, or with differential privacy the noise (privacy.noise_multiplier), "
        "or sample more clients per round"
    )
    if math.isinf(last) or (math.isnan(last) and len(series) > 1 and not math.isnan(series[0][1])):
        return f"the run is diverging: its {label} is not finite at round {last_round}; {advice}"
    finite = [(r, v) for r, v in series if math.isfinite(v)]
    if len(finite) < window + 1:
        return None
    first = finite[0][1]
    best_round, best = min(finite, key=lambda rv: rv[1])
    tail = finite[-window:]
    if all(v > factor * best and v > first for _, v in tail):
        return f"the run is diverging: its {label} rose from {best:.4g} (round {best_round}) to {last:.4g} (round {last_round}); {advice}"
    return None
