"""The learning-rate decay by round, one formula for the clients' and the server's rate.

Round ``t`` (1-based) uses ``lr · decay^(t−1)``: ``train.lr_decay`` decays the rate clients
train with (:meth:`~sheaf.core.config.TrainConfig.for_round`), and ``strategy.lr_decay`` the
server optimiser's (``sheaf.strategies.server_opt``). A decay of 1 gives ``lr`` exactly in every
round (``1.0 ** k`` is exactly 1), so a constant rate needs no special case.
A rate decayed past the smallest positive float stays at that float rather than 0: a
client's settings need a rate > 0, and a long run with a steep decay would otherwise stop
with a ``ConfigError`` (``0.25 ** 538`` is 0).

Example:
    >>> decayed_lr(0.2, 1.0, 50), decayed_lr(0.2, 0.5, 3)
    (0.2, 0.05)
"""

from __future__ import annotations

import math

__all__ = ["decayed_lr"]

#: The smallest positive float: the floor of a decayed rate.
_SMALLEST_RATE = math.ulp(0.0)


def decayed_lr(lr: float, decay: float, round: int) -> float:
    """The learning rate of round ``round`` (1-based): ``lr · decay^(round−1)``.

    The settings are checked where they are read (``train.lr_decay``, ``strategy.lr_decay``:
    ``lr > 0``, ``decay`` in (0, 1]); a round before the first counts as the first.

    Args:
        lr: the rate of the first round.
        decay: the factor per round, in (0, 1].
        round: the round, counted from 1.

    Returns:
        The rate, in ``(0, lr]`` and never rising from one round to the next.
    """
    return max(lr * decay ** max(0, round - 1), _SMALLEST_RATE)
