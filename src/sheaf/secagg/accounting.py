"""Privacy accounting of the distributed discrete Gaussian: the noise that survived, every round.

Under distributed DP each client adds its own share, ``N_Z(0, σ²)`` on every rotated
integer coordinate, and the server, after unmasking, tops the sum up to exactly K shares
(:func:`sheaf.secagg.distributed.top_up`): every released sum carries K i.i.d. shares,
whoever took part. What protects a client in a released sum is ``m = K - 1`` of them; its
own share is not counted (adding an independent share is post-processing, so the K-share
pair is no worse than the ``K - 1``-share one). Against the server, which knows its own
top-up, only the other survivors' ``m = survivors - 1`` shares count.

**One round** (Kairouz, Liu, Steinke, ICML 2021, Theorem 1 and Proposition 14): the sum of
``m`` independent ``N_Z(0, σ²)`` is close to ``N_Z(0, m σ²)``; for integer vectors of L2
sensitivity ``Δ₂`` and L1 sensitivity ``Δ₁`` in dimension ``d``, with
``τ = 10 Σ_{k=1}^{m-1} exp(-2π² σ² k / (k + 1))``, the release is ``(α, ε(α))``-RDP for
every order ``α >= 1`` with

    ε(α) = min( α Δ₂² / (2 m σ²) + τ d,
                α/2 (Δ₂² / (m σ²) + 2 Δ₁ τ / sqrt(m σ²) + τ² d),
                α/2 (Δ₂ / sqrt(m σ²) + τ sqrt(d))² ).

The sensitivity is that of the *rounded* vectors: a client clips to C, so its scaled,
rotated vector has norm at most ``s C``, and stochastic rounding moves each of the ``d``
coordinates by less than 1, so ``Δ₂ = s C + sqrt(d)`` (deterministically) and, the
coordinates being integers, ``Δ₁ <= min(sqrt(d) Δ₂, Δ₂²)``.

**Sampling.** With Poisson sampling at rate q, a round is the subsampled mechanism: for a
fixed cohort without the client the released sum is ``P = c + Z`` and with it
``Q = c + x + Z``, ``Z`` the sum of the K shares — the same distribution in both worlds
*because of the top-up* (without it, ``Q`` would carry one share more than ``P``, a
difference of variance that no shift argument covers; that was a flaw of sheaf before the
top-up). A round whose survivors exceed K is aborted instead, an event of probability at
most δ_K per round that is added to δ. The release is ``P`` (the add neighbour) against
``M = (1-q) P + q Q``. Two directions:

- ``D_α(M || P)`` has, at integer orders, an **exact** binomial expansion in the unsampled
  curve, for any mechanism: with ``W = Q/P``, ``E_P[(1-q+qW)^α] = Σ_l C(α,l) (1-q)^(α-l) q^l
  E_P[W^l]`` and ``E_P[W^l] = e^((l-1) D_l(Q||P)) <= e^((l-1) ε(l))``, so

      (α-1) ε'(α) <= log Σ_{l=0..α} C(α,l) (1-q)^(α-l) q^l e^((l-1) ε(l)).

- ``D_α(P || M)`` is never larger, because the pair is **symmetric**: ``Z`` (a sum of
  centred discrete Gaussians) is symmetric, so the reflection ``y -> 2c + x - y`` (a
  bijection of Z^d) carries P to Q and Q to P; hence ``W(Ry) = 1/W(y)`` and
  ``E_P[f(W)] = E_P[W f(1/W)]`` for every f. With ``g(w) = (1-q+qw)^α - (1-q+qw)^(1-α)``,
  ``e^((α-1) D_α(M||P)) - e^((α-1) D_α(P||M)) = E_P[g(W)] = E_P[(g(W) + W g(1/W)) 1{W > 1}]``,
  and for ``t > 1``, writing ``ψ(y) = y^α - y^(1-α)``, ``x = q(t-1)``, ``β = x/t``,
  ``g(t) + t g(1/t) = ψ(1+x) + t ψ(1-β) >= 0`` because ``ψ`` is convex on ``[1, ∞)`` (ψ'' =
  α(α-1)(y^(α-2) - y^(-α-1)) >= 0 there), so its secant slope ``ψ(1+x)/x`` grows with x,
  and ``x >= β/(1-β)`` (from q <= 1), where the slope equals ``-t ψ(1-β)/x`` exactly.

So the Poisson-subsampled curve is the add direction's expansion above
(:func:`symmetric_subsampled_rdp`) — for the continuous Gaussian it is Mironov, Talwar and
Zhang's sampled-Gaussian formula, the one central DP's accountant uses; for the discrete sum
it holds with the discrete curve ε(l) of Kairouz, Liu and Steinke. Zhu and Wang's general
bound (ICML 2019, Theorem 5, with its factor 3), which needs no symmetry, is kept as
:func:`poisson_subsampled_rdp` and is never smaller (tested). The guarantee with
amplification is about what anyone who does not know the cohort learns from the released
models (the guarantee central DP reports). The server *knows* who took part, so against it
there is no amplification: sheaf reports that epsilon too (``epsilon_server``), from the
unsampled curve. Rounds compose by adding RDP curves; dp-accounting converts the total to
(ε, δ) (:func:`dp_accounting.rdp.compute_epsilon`).

Example:
    >>> mechanism = DistributedMechanism(l2=1000.0, l1=1e6, dimension=1024, variance=40_000, rate=0.1)
    >>> round_rdp = mechanism.round_rdp(shares=99)
    >>> epsilon_from_rdp(100 * round_rdp, 1e-5) < epsilon_from_rdp(100 * mechanism.round_rdp(99, sampled=False), 1e-5)
    True

References:
    Kairouz, Liu, Steinke. The Distributed Discrete Gaussian Mechanism for Federated
    Learning with Secure Aggregation. ICML 2021. Canonne, Kamath, Steinke. The Discrete
    Gaussian for Differential Privacy. NeurIPS 2020. Zhu, Wang. Poisson Subsampled Rényi
    Differential Privacy. ICML 2019. Mironov. Rényi Differential Privacy. CSF 2017.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "ORDERS",
    "DistributedMechanism",
    "calibrate_distributed",
    "epsilon_from_rdp",
    "planned_epsilon",
    "poisson_subsampled_rdp",
    "rounded_sensitivity",
    "symmetric_subsampled_rdp",
]

#: The RDP orders tracked (integers: the subsampling expansion holds at integer orders).
ORDERS: tuple[int, ...] = (*range(2, 65), 80, 96, 128, 160, 192, 256)

Curve = npt.NDArray[np.float64]


def rounded_sensitivity(scaled_clip: float, dimension: int) -> tuple[float, float]:
    """``(Δ₂, Δ₁)`` of integer vectors stochastically rounded from a ball of radius ``scaled_clip``.

    Example:
        >>> rounded_sensitivity(100.0, 16)
        (104.0, 416.0)
    """
    l2 = scaled_clip + math.sqrt(dimension)
    return l2, min(math.sqrt(dimension) * l2, l2 * l2)


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def _subsampled_rdp(rate: float, curve: dict[int, float], factor: int) -> dict[int, float]:
    """The expansion both bounds below share: for integer ``α >= 2``,

        (α - 1) ε'(α) <= log( (1-q)^(α-1) (1 + (α-1) q) + C(α,2) q² (1-q)^(α-2) e^ε(2)
                              + factor Σ_{l=3..α} C(α,l) q^l (1-q)^(α-l) e^((l-1) ε(l)) )

    and ``ε'(α) <= ε(α)``; ``factor`` is 1 for a symmetric pair, 3 in Zhu and Wang's
    general bound."""
    if rate >= 1:
        return dict(curve)
    log_q, log_p = math.log(rate), math.log1p(-rate)
    out = {}
    for alpha in curve:
        total = (alpha - 1) * log_p + math.log1p((alpha - 1) * rate)
        for order in range(2, alpha + 1):
            weight = factor * math.comb(alpha, order) if order >= 3 else math.comb(alpha, order)
            term = math.log(weight) + order * log_q + (alpha - order) * log_p
            total = _log_add(total, term + (order - 1) * curve[order])
        out[alpha] = min(total / (alpha - 1), curve[alpha])
    return out


def poisson_subsampled_rdp(rate: float, curve: dict[int, float]) -> dict[int, float]:
    """Zhu and Wang's general bound (Theorem 5) on the RDP of the Poisson-subsampled mechanism.

    It needs nothing of the mechanism but its RDP curve; sheaf's accountant uses the tighter
    :func:`symmetric_subsampled_rdp`, which the distributed discrete Gaussian's symmetry
    allows, and keeps this one as the reference it must never exceed.

    For integer ``α >= 2``, with ``ε(l)`` the unsampled mechanism's RDP at order l:

        (α - 1) ε'(α) <= log( (1-q)^(α-1) (1 + (α-1) q) + C(α,2) q² (1-q)^(α-2) e^ε(2)
                              + 3 Σ_{l=3..α} C(α,l) q^l (1-q)^(α-l) e^((l-1) ε(l)) )

    and ``ε'(α) <= ε(α)`` (subsampling never hurts). ``curve`` must hold every order from 2
    to the largest asked for.
    """
    return _subsampled_rdp(rate, curve, factor=3)


def symmetric_subsampled_rdp(rate: float, curve: dict[int, float]) -> dict[int, float]:
    """The RDP of a Poisson-subsampled mechanism whose neighbouring pair is symmetric.

    For integer ``α >= 2``, with ``ε(l)`` the unsampled mechanism's RDP at order l, an upper
    bound on ``D_α(M||P)`` (an exact expansion, given the ``ε(l)``) and so, for a symmetric
    pair, on both directions (proof in the module docstring): Zhu and Wang's sum without its
    factor 3,

        (α - 1) ε'(α) <= log( (1-q)^(α-1) (1 + (α-1) q) + Σ_{l=2..α} C(α,l) q^l (1-q)^(α-l) e^((l-1) ε(l)) )

    and ``ε'(α) <= ε(α)``. ``curve`` must hold every order from 2 to the largest asked for.

    Example:
        >>> gaussian = {a: a / 2 for a in range(2, 5)}  # z = 1
        >>> round(symmetric_subsampled_rdp(0.1, gaussian)[2], 6)  # Mironov et al.: log(1 + q^2 (e - 1)) at alpha = 2
        0.017037
    """
    return _subsampled_rdp(rate, curve, factor=1)


@dataclass(frozen=True)
class DistributedMechanism:
    """What one round of distributed DP releases about a client, for the accountant.

    Attributes:
        l2: Δ₂, the L2 sensitivity of one client's rounded integer vector.
        l1: Δ₁, its L1 sensitivity.
        dimension: d, the coordinates noised.
        variance: σ², the variance of each client's discrete Gaussian share (integer units).
        rate: the Poisson sampling rate q (1: no amplification).
    """

    l2: float
    l1: float
    dimension: int
    variance: float
    rate: float = 1.0

    def unsampled(self, shares: int) -> dict[int, float]:
        """ε(α) of one round whose sum holds ``shares`` noise shares besides the client's own."""
        if shares < 1 or self.variance <= 0:
            return dict.fromkeys(range(2, ORDERS[-1] + 1), math.inf)
        sigma2 = shares * self.variance
        sigma = math.sqrt(sigma2)
        tau = 10 * sum(math.exp(-2 * math.pi**2 * self.variance * k / (k + 1)) for k in range(1, shares))
        d = self.dimension
        curve = {}
        for alpha in range(2, ORDERS[-1] + 1):
            curve[alpha] = min(
                alpha * self.l2**2 / (2 * sigma2) + tau * d,
                alpha / 2 * (self.l2**2 / sigma2 + 2 * self.l1 * tau / sigma + tau**2 * d),
                alpha / 2 * (self.l2 / sigma + tau * math.sqrt(d)) ** 2,
            )
        return curve

    @functools.lru_cache(maxsize=512)  # noqa: B019 - frozen and hashable; a run asks for few share counts
    def round_rdp(self, shares: int, sampled: bool = True) -> Curve:
        """The RDP of one round at :data:`ORDERS`: subsampled at :attr:`rate` (the released
        models, to anyone who does not know the cohort), or not (to the server)."""
        curve = self.unsampled(shares)
        if sampled and self.rate < 1 and all(math.isfinite(v) for v in curve.values()):
            curve = symmetric_subsampled_rdp(self.rate, curve)
        return np.array([curve[alpha] for alpha in ORDERS], np.float64)


def epsilon_from_rdp(rdp: Curve, delta: float) -> float:
    """Epsilon at ``delta`` of an RDP curve at :data:`ORDERS`, converted by dp-accounting."""
    from dp_accounting.rdp import rdp_privacy_accountant

    if not np.all(np.isfinite(rdp)):
        return math.inf
    if not np.any(rdp > 0):
        return 0.0
    value, _ = rdp_privacy_accountant.compute_epsilon(np.asarray(ORDERS, np.float64), rdp, delta)
    return float(value)


def planned_epsilon(noise_multiplier: float, *, rate: float, shares: int, rounds: int, delta: float) -> float:
    """Epsilon after ``rounds`` rounds whose sums each hold ``shares`` other clients' noise,
    together a discrete Gaussian of ``noise_multiplier`` times the sensitivity (the τ terms
    of the discrete sum are negligible at the variances sheaf uses, and are accounted in
    the rounds themselves)."""
    # Large integer units so that τ vanishes and only the ratio noise / sensitivity matters.
    unit = 1e4
    mechanism = DistributedMechanism(unit, unit, 1, (noise_multiplier * unit) ** 2 / shares, rate)
    return epsilon_from_rdp(rounds * mechanism.round_rdp(shares), delta)


def calibrate_distributed(target: float, *, rate: float, shares: int, rounds: int, delta: float) -> float:
    """The smallest noise multiplier (to 0.1%) whose planned rounds spend at most ``target``.

    Raises:
        ValueError: if no multiplier up to 1000 reaches the target.
    """
    low, high = 0.05, 1.0
    while planned_epsilon(high, rate=rate, shares=shares, rounds=rounds, delta=delta) > target:
        low, high = high, high * 2
        if high > 1000:
            raise ValueError(f"no noise multiplier up to 1000 reaches epsilon {target} in {rounds} rounds")
    while high - low > 1e-3 * high:
        middle = (low + high) / 2
        if planned_epsilon(middle, rate=rate, shares=shares, rounds=rounds, delta=delta) > target:
            low = middle
        else:
            high = middle
    return high
