"""L2 clipping of updates, and adaptive clipping's geometric update of the clip norm.

Clipping bounds what one client can move the sum of updates by — its *sensitivity* — so
Gaussian noise of a known scale hides any one client. The server clips in float64
(:func:`clip_delta`); a client that clips before sending (:func:`clip_sent`) makes sure the
delta the *server* will compute from its params, in the model's dtype, is within the
norm, so float rounding cannot push it past C.

Adaptive clipping (Andrew et al. 2021) lets C follow a target quantile γ of the update
norms: each client contributes a bit ``b = [‖Δ‖ ≤ C]``, the server releases the noised
*centred* count ``Σ (b_i − ½) + N(0, σ_b²)``, reads the share ``b̄`` below C from it and
sets ``C ← C · exp(−η (b̄ − γ))``. Centring matters: adding or removing one client moves
the centred count by ½ and the plain count ``Σ b_i`` by 1. Releasing the count costs
privacy too; :func:`update_noise_multiplier` splits one noise multiplier z between the
update (z_Δ) and the count (σ_b) so that the round is exactly one Gaussian mechanism of
multiplier z: ``z^-2 = z_Δ^-2 + (½ / σ_b)^2 = z_Δ^-2 + (2σ_b)^-2``.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> clipped, norm = clip_delta(Params({"w": np.array([3.0, 4.0])}), clip=1.0)
    >>> norm, clipped["w"].tolist()
    (5.0, [0.6000000000000001, 0.8])
    >>> round(update_clip(1.0, below=1.0, target_quantile=0.5, lr=0.2), 4)   # all below: shrink
    0.9048

References:
    McMahan, Ramage, Talwar, Zhang. Learning Differentially Private Recurrent Language
    Models. ICLR 2018. Andrew, Thakkar, McMahan, Ramaswamy. Differentially Private Learning
    with Adaptive Clipping. NeurIPS 2021.
"""

from __future__ import annotations

import math

import numpy as np

from sheaf.core.errors import ConfigError
from sheaf.core.params import Params

__all__ = ["clip_delta", "clip_sent", "update_clip", "update_noise_multiplier"]


def clip_delta(delta: Params, clip: float) -> tuple[Params, float]:
    """Scale ``delta`` to L2 norm at most ``clip``, in float64.

    Args:
        delta: an update.
        clip: the clip norm C > 0.

    Returns:
        The clipped delta (float64 arrays; unchanged values if its norm is within C) and
        the norm of the original.
    """
    wide = delta.astype(np.float64)
    norm = wide.l2_norm()
    if norm <= clip:
        return wide, norm
    factor = clip / norm
    clipped = wide * factor
    # Rounding of the product can leave the norm a hair above C; nudge it below.
    while clipped.l2_norm() > clip:
        factor *= 1 - 1e-15
        clipped = wide * factor
    return clipped, norm


def clip_sent(start: Params, trained: Params, clip: float) -> tuple[Params, float]:
    """Params to send so that the delta the server computes has L2 norm at most ``clip``.

    The server computes ``sent - start`` in each tensor's dtype; the sum of a float32
    parameter and a small clipped step rounds, so the clipped step is shrunk until that
    difference is within C as well.

    Args:
        start: the global params the client started from.
        trained: the params after local training.
        clip: the clip norm C > 0.

    Returns:
        The params to send, and the norm of the unclipped delta.
    """
    delta = trained - start
    norm = delta.astype(np.float64).l2_norm()
    if norm <= clip:
        return trained, norm
    factor = clip / norm
    wide = delta.astype(np.float64)
    for _ in range(64):
        step = wide * factor
        sent = Params({k: (start[k].astype(np.float64) + step[k]).astype(start[k].dtype) for k in start})
        seen = (sent - start).astype(np.float64).l2_norm()
        if seen <= clip:
            return sent, norm
        factor *= clip / seen * (1 - 1e-7)
    return start, norm  # pragma: no cover - rounding never takes 64 shrinks; sending nothing is safe


def update_clip(clip: float, below: float, target_quantile: float, lr: float) -> float:
    """Adaptive clipping's geometric step: ``C · exp(−lr · (below − target_quantile))``.

    Args:
        clip: the current clip norm.
        below: the (noised) share of updates whose norm was at most ``clip``.
        target_quantile: γ, the share that should be below.
        lr: η, the step size.
    """
    return clip * math.exp(-lr * (below - target_quantile))


def update_noise_multiplier(noise_multiplier: float, count_stddev: float) -> float:
    """The update's share z_Δ of a round's noise multiplier z when σ_b noises the bit count.

    Andrew et al. (Theorem 1): releasing the clipped sum with multiplier z_Δ and the count
    of ``b − ½`` (sensitivity ½) with noise σ_b is one Gaussian mechanism with
    ``z^-2 = z_Δ^-2 + (2σ_b)^-2``.

    Raises:
        ConfigError: if ``2 σ_b <= z`` (the count alone would spend more than the budget).

    Example:
        >>> round(update_noise_multiplier(1.0, count_stddev=5.0), 4)
        1.005
    """
    if noise_multiplier == 0:
        return 0.0
    if 2 * count_stddev <= noise_multiplier:
        raise ConfigError(
            f"privacy.count_stddev must be > noise_multiplier / 2 = {noise_multiplier / 2:g} for adaptive "
            f"clipping, got {count_stddev:g}; raise it (Andrew et al. suggest expected clients per round / 20)"
        )
    return float((noise_multiplier**-2 - (2 * count_stddev) ** -2) ** -0.5)
