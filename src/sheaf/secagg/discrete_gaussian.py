"""The discrete Gaussian N_Z(0, σ²), sampled exactly: the noise share of distributed DP.

``P(X = x) ∝ exp(-x² / (2σ²))`` on the integers. It lives in the integer ring secure
aggregation adds in, so no floating point touches the noise (the attacks of Mironov 2012
and Jin et al. 2022 need it), and it is σ²-subgaussian, which bounds the ring's
wrap-around (:mod:`sheaf.quantize.quantizer`).

The sampler is Canonne, Kamath and Steinke's (NeurIPS 2020), exact: it uses nothing but
uniform integers (:func:`~sheaf.quantize.randomness.uniform_below`) and exact integer
arithmetic —

1. ``Bernoulli(exp(-γ))`` for a rational ``γ = a / b`` (their Algorithm 1): for
   ``γ <= 1``, draw ``A_k ~ Bernoulli(γ / k)`` for k = 1, 2, ... until one fails; the
   result is 1 if the number of draws is odd. For ``γ > 1``, ``floor(γ)`` draws of
   ``Bernoulli(exp(-1))`` must all succeed, then one of ``Bernoulli(exp(-(γ - floor γ)))``;
2. the discrete Laplace of scale ``t`` (their Algorithm 2): ``U`` uniform in ``[0, t)``,
   kept with probability ``exp(-U / t)``; ``V`` the number of successes of
   ``Bernoulli(exp(-1))`` before the first failure; ``X = U + t V`` with a random sign,
   ``-0`` rejected;
3. the discrete Gaussian (their Algorithm 3): ``t = floor(σ) + 1``; a discrete Laplace
   ``Y`` of scale ``t`` is accepted with probability ``exp(-(|Y| - σ²/t)² / (2σ²))``.

Vectorised: every loop runs over the still-undecided samples of a whole array at once,
in int64. The variance is a whole number ``σ² <= 2**26`` (:data:`MAX_VARIANCE`), which
keeps every product below ``2**63``; the rare sample whose numbers would not fit (a
Laplace draw beyond ``16 t``, or an Algorithm 1 loop past 256 steps — each far below
``10**-6``) finishes the *same* algorithm in Python integers, so the output is exact for
every draw. The goodness-of-fit test checks it against the exact distribution.

The random bits are the caller's: :class:`~sheaf.quantize.randomness.SecureBits`
(``os.urandom``), or :class:`~sheaf.quantize.randomness.SeededBits` only where a simulation
explicitly asks for reproducible noise.

Example:
    >>> import numpy as np
    >>> from sheaf.quantize.randomness import SeededBits
    >>> x = discrete_gaussian(100, 10_000, SeededBits(np.random.default_rng(0)))
    >>> x.dtype.name, abs(float(x.mean())) < 0.5, 90 < float(x.var()) < 110
    ('int64', True, True)

References:
    Canonne, Kamath, Steinke. The Discrete Gaussian for Differential Privacy. NeurIPS 2020.
    Kairouz, Liu, Steinke. The Distributed Discrete Gaussian Mechanism for Federated
    Learning with Secure Aggregation. ICML 2021. Mironov. On Significance of the Least
    Significant Bits for Differential Privacy. CCS 2012. Jin, McMurtry, Rubinstein,
    Ohrimenko. Are We There Yet? Timing and Floating-Point Attacks on Differential Privacy
    Systems. IEEE S&P 2022.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from sheaf.quantize.randomness import BitSource

__all__ = ["MAX_VARIANCE", "bernoulli_exp", "discrete_gaussian", "discrete_gaussian_pmf", "discrete_laplace"]

#: The largest variance sampled in int64 arithmetic (σ <= 8192).
MAX_VARIANCE = 1 << 26
#: Algorithm 1 loops longer than this finish in Python integers.
_MAX_STEPS = 256
#: Laplace draws beyond this many scales are decided in Python integers.
_MAX_SCALES = 16

Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


def _uniform_int(source: BitSource, high: int) -> int:
    """An exactly uniform Python integer in ``[0, high)``, for bounds of any size."""
    size = high.bit_length()
    words = -(-size // 64)
    while True:
        value = 0
        for word in source.words(words).tolist():
            value = (value << 64) | int(word)
        value &= (1 << size) - 1
        if value < high:
            return value


def _bernoulli_exp_scalar(numerator: int, denominator: int, source: BitSource, steps: int = 1) -> bool:
    """Algorithm 1 in Python integers, from step ``steps`` of the loop (for γ <= 1)."""
    k = steps
    while _uniform_int(source, denominator * k) < numerator:
        k += 1
    return k % 2 == 1


def _below(source: BitSource, highs: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Exactly uniform integers in ``[0, h)`` for bounds ``1 <= h < 2**63`` (trusted, no checks)."""
    limit = np.uint64(0) - (np.uint64(0) - highs) % highs  # the largest multiple of h below 2**64
    out = source.words(highs.size)
    bad = np.flatnonzero((out >= limit) & (limit != 0))
    while bad.size:  # probability below h / 2**64 per draw
        out[bad] = source.words(bad.size)
        bad = bad[(out[bad] >= limit[bad]) & (limit[bad] != 0)]
    return out % highs


def bernoulli_exp(numerators: npt.ArrayLike, denominators: npt.ArrayLike, source: BitSource) -> Bools:
    """``Bernoulli(exp(-a/b))`` elementwise, exactly, for integers ``a >= 0``, ``b >= 1``
    (``b * 256 < 2**63``).

    One loop runs every element's chain of Algorithm 1 trials — ``floor(a/b)`` trials of
    ``Bernoulli(exp(-1))``, then one of ``Bernoulli(exp(-(a mod b)/b))`` — a draw per
    element per pass, so the number of NumPy calls grows with the longest chain, not with
    the number of trials.

    Example:
        >>> import numpy as np
        >>> from sheaf.quantize.randomness import SeededBits
        >>> draws = bernoulli_exp(np.full(20_000, 3), np.full(20_000, 2), SeededBits(np.random.default_rng(1)))
        >>> abs(float(draws.mean()) - float(np.exp(-1.5))) < 0.01
        True
    """
    a = np.asarray(numerators, dtype=np.int64).ravel()
    b = np.broadcast_to(np.asarray(denominators, dtype=np.int64), a.shape).ravel()
    remaining = a // b  # Bernoulli(exp(-1)) trials still to pass before the fractional one
    fraction = a - remaining * b
    k = np.ones(a.shape, np.int64)
    result = np.zeros(a.shape, bool)
    live = np.arange(a.size)
    while live.size:
        long = k[live] > _MAX_STEPS
        for index in live[long]:  # astronomically rare: finish the same chain in Python integers
            result[index] = _finish_chain(
                int(remaining[index]), int(fraction[index]), int(b[index]), int(k[index]), source
            )
        live = live[~long]
        if not live.size:
            break
        unit = remaining[live] > 0
        num = np.where(unit, 1, fraction[live])
        den = np.where(unit, 1, b[live])
        step = _below(source, (den * k[live]).astype(np.uint64)) < num.astype(np.uint64)
        k[live[step]] += 1
        ended = live[~step]
        passed = k[ended] % 2 == 1
        was_unit = remaining[ended] > 0
        result[ended[passed & ~was_unit]] = True
        going = ended[passed & was_unit]  # a Bernoulli(exp(-1)) trial passed: start the next trial
        remaining[going] -= 1
        k[going] = 1
        live = np.concatenate([live[step], going])
    return result


def _finish_chain(remaining: int, fraction: int, denominator: int, k: int, source: BitSource) -> bool:
    """The rest of one element's chain (see :func:`bernoulli_exp`) from loop step ``k``."""
    if remaining > 0:
        if not _bernoulli_exp_scalar(1, 1, source, k):
            return False
        return _bernoulli_exp_python((remaining - 1) * denominator + fraction, denominator, source)
    return _bernoulli_exp_scalar(fraction, denominator, source, k)


def _exp_minus_one_successes(count: int, source: BitSource) -> Ints:
    """For each of ``count`` elements, the successes of ``Bernoulli(exp(-1))`` before its first failure."""
    successes = np.zeros(count, np.int64)
    k = np.ones(count, np.int64)
    live = np.arange(count)
    while live.size:
        long = k[live] > _MAX_STEPS
        for index in live[long]:  # finish in Python integers
            if _bernoulli_exp_scalar(1, 1, source, int(k[index])):
                successes[index] += 1
                while _bernoulli_exp_scalar(1, 1, source):
                    successes[index] += 1
        live = live[~long]
        step = _below(source, k[live].astype(np.uint64)) == 0  # Bernoulli(1/k)
        k[live[step]] += 1
        ended = live[~step]
        passed = ended[k[ended] % 2 == 1]
        successes[passed] += 1
        k[passed] = 1
        live = np.concatenate([live[step], passed])
    return successes


def discrete_laplace(scale: int, count: int, source: BitSource) -> Ints:
    """``count`` draws with ``P(x) ∝ exp(-|x| / scale)`` on the integers (Algorithm 2)."""
    out = np.empty(count, np.int64)
    filled = 0
    while filled < count:
        want = count - filled
        draws = want + want // 2 + 16  # about 1.6 draws per value survive the two rejections
        u = _below(source, np.full(draws, scale, np.uint64)).astype(np.int64)
        u = u[bernoulli_exp(u, np.full(draws, scale, np.int64), source)]
        x = u + scale * _exp_minus_one_successes(u.size, source)
        negative = (source.words(x.size) & np.uint64(1)) == 1
        values = np.where(negative, -x, x)[~(negative & (x == 0))]
        take = min(values.size, want)
        out[filled : filled + take] = values[:take]
        filled += take
    return out


def discrete_gaussian(variance: int, count: int, source: BitSource) -> Ints:
    """``count`` independent draws of N_Z(0, variance), exactly (Algorithm 3).

    Args:
        variance: σ², a whole number in ``[0, MAX_VARIANCE]`` (0 gives zeros).
        count: how many draws.
        source: the random bits (secure, or seeded where a simulation asks for it).

    Raises:
        ValueError: if the variance is out of range.
    """
    if not 0 <= variance <= MAX_VARIANCE or int(variance) != variance:
        raise ValueError(f"discrete Gaussian variance must be a whole number in [0, {MAX_VARIANCE}], got {variance}")
    if variance == 0 or count == 0:
        return np.zeros(count, np.int64)
    sigma2 = int(variance)
    t = math.isqrt(sigma2) + 1  # floor(σ) + 1
    out = np.empty(count, np.int64)
    filled = 0
    while filled < count:
        want = count - filled
        draws = 2 * want + 16  # at least about half of the Laplace draws are accepted
        y = discrete_laplace(t, draws, source)
        magnitude = np.abs(y)
        # γ = (|Y| - σ²/t)² / (2σ²) = (|Y| t - σ²)² / (2 σ² t²)
        near = magnitude <= _MAX_SCALES * t
        accept = np.zeros(draws, bool)
        gap = magnitude[near] * t - sigma2
        accept[near] = bernoulli_exp(gap * gap, np.full(gap.size, 2 * sigma2 * t * t), source)
        for index in np.flatnonzero(~near):  # far tail (P < e^-16 per draw): exact in Python integers
            far_gap = int(magnitude[index]) * t - sigma2
            accept[index] = _bernoulli_exp_python(far_gap * far_gap, 2 * sigma2 * t * t, source)
        values = y[accept]
        take = min(values.size, want)
        out[filled : filled + take] = values[:take]
        filled += take
    return out


def _bernoulli_exp_python(numerator: int, denominator: int, source: BitSource) -> bool:
    """Algorithm 1 for any rational γ >= 0, in Python integers."""
    for _ in range(numerator // denominator):
        if not _bernoulli_exp_scalar(1, 1, source):
            return False
    return _bernoulli_exp_scalar(numerator % denominator, denominator, source)


def discrete_gaussian_pmf(variance: float, support: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """The exact probabilities of N_Z(0, variance) on ``support`` (normalised over ±40σ).

    Example:
        >>> import numpy as np
        >>> round(float(discrete_gaussian_pmf(1.0, np.array([0]))[0]), 6)
        0.398942
    """
    sigma = math.sqrt(variance)
    span = math.ceil(40 * sigma) + 1
    everything = np.arange(-span, span + 1, dtype=np.float64)
    normaliser = float(np.exp(-(everything**2) / (2 * variance)).sum())
    return np.exp(-(support.astype(np.float64) ** 2) / (2 * variance)) / normaliser
