"""Exact, order-independent sums of weighted tensors: the same total however the work is split.

Float addition is not associative: summing client updates in another order, or in groups
(one partial sum per worker process, then the partial sums), changes the last bits of the
result, and with them the trained model. :class:`ExactSum` accumulates every term
``weight * delta`` *exactly*, so the total does not depend on the order or the grouping of
the additions at all; only the final total is rounded to float64 (to within one unit in
the last place).

How: each float64 term is split, without error, into pieces on a fixed grid of binary
exponents — bin ``k`` holds integer multiples of ``2**(32 * k)`` smaller than
``2**(32 * k + 31)`` (the extraction ``q = (r + c) - c`` with ``c = 1.5 * 2**(32k + 52)``).
Up to 2**21 such pieces add up below ``2**53`` units of their bin, so every addition inside
a bin is exact and a bin's value is the exact sum of its pieces. Merging two sums adds their
bins. Terms of a float32 delta times an example count span at most three bins.

Terms that are not finite (or beyond ``2**990``, far outside any float32 model) are summed
plainly beside the bins: IEEE sums of infinities and NaN are order-independent as well.

All tensors are held as one flat float64 vector, processed in cache-sized blocks of
columns, and many terms are best added at once (:meth:`ExactSum.add_stacked`): the cost is
about fifteen passes over the terms, against two for a plain sum.

Example:
    >>> import numpy as np
    >>> like = {"w": np.zeros(1)}
    >>> terms = [np.array([1e16]), np.array([1.0]), np.array([-1e16])]
    >>> (terms[0] + terms[1]) + terms[2]          # plain float64: the 1.0 is lost
    array([0.])
    >>> whole, first, last = ExactSum(like), ExactSum(like), ExactSum(like)
    >>> for term in terms:
    ...     whole.add({"w": term}, weight=1)
    >>> first.add({"w": terms[0]}, 1); last.add({"w": terms[2]}, 1); last.add({"w": terms[1]}, 1)
    >>> first.merge(last)
    >>> whole.total()["w"].tolist(), first.total()["w"].tolist(), first.weight
    ([1.0], [1.0], 3)

References:
    Demmel, Nguyen. Parallel Reproducible Summation. IEEE Transactions on Computers, 2015
    (binned summation on a fixed exponent grid). Rump, Ogita, Oishi. Accurate Floating-Point
    Summation Part I: Faithful Rounding. SIAM J. Sci. Comput., 2008 (the extraction step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from sheaf.core.errors import SheafError
from sheaf.core.params import Params
from sheaf.core.update import MAX_EXAMPLES, Update

__all__ = ["MAX_TERMS", "ExactSum", "StackedSum"]

_WIDTH = 32  # bits per bin
_TOP = 30  # highest bin: unit 2**960; its extraction constant 1.5 * 2**1012 is still finite
_BOTTOM = -34  # unit 2**-1088, below the smallest float64: whatever is left fits exactly
_HUGE = 2.0**990  # terms at least this large are summed plainly (never met by float32 models)
_BLOCK = 1 << 15  # elements per block: the working buffers stay in cache
_STACK_BYTES = 1 << 25  # add_updates stacks at most this many bytes of terms at a time

#: The most terms one sum may hold: pieces stay below 2**(unit + 31) and 2**21 of them
#: below 2**(unit + 52), where float64 addition is still exact.
MAX_TERMS = 1 << 21

Float64 = npt.NDArray[np.float64]


def _mantissa_bits(dtype: np.dtype[Any]) -> int:
    return int(np.finfo(dtype).nmant) + 1 if np.issubdtype(dtype, np.floating) else 53


def _bin_above(magnitude: float) -> int:
    """The bin whose pieces can hold a value of this magnitude (< 2**(unit + 31))."""
    exponent = math.frexp(magnitude)[1]  # magnitude < 2**exponent
    return min(max(-((31 - exponent) // _WIDTH), _BOTTOM), _TOP)  # ceil((exponent - 31) / 32)


def _bin_below(smallest: float, significant: int = 53) -> int:
    """The bin whose unit divides every bit of values at least this large (in magnitude)."""
    exponent = math.frexp(smallest)[1]  # lowest set bit >= 2**(exponent - significant bits)
    return max((exponent - significant) // _WIDTH, _BOTTOM)


class ExactSum:
    """An exact running sum of ``weight * delta`` over named tensors.

    Args:
        like: the tensors' names and shapes (e.g. the global params); the total is float64.

    Attributes:
        weight: the sum of the weights added (an exact integer).
        count: how many terms with a positive weight were added.
    """

    __slots__ = ("_bins", "_offsets", "_shapes", "_size", "_special", "count", "weight")

    def __init__(self, like: Mapping[str, npt.NDArray[Any]]) -> None:
        self._shapes = {name: tuple(int(d) for d in np.shape(array)) for name, array in like.items()}
        sizes = [math.prod(shape) for shape in self._shapes.values()]
        self._offsets = [0, *np.cumsum(sizes).tolist()]
        self._size = int(self._offsets[-1])
        self._bins: dict[int, Float64] = {}
        self._special: Float64 | None = None
        self.weight = 0
        self.count = 0

    # Adding ----------------------------------------------------------------------------
    def add(self, delta: Mapping[str, npt.NDArray[Any]], weight: int) -> None:
        """Add ``weight * delta`` (a weight of 0 adds nothing).

        Raises:
            SheafError: if the names or shapes differ from ``like``, the weight is negative,
                or the sum would hold more than :data:`MAX_TERMS` terms.
        """
        self.add_stacked({name: np.asarray(delta[name])[None] for name in self._check(delta)}, [weight])

    def add_stacked(self, deltas: Mapping[str, npt.NDArray[Any]], weights: Sequence[int] | npt.NDArray[Any]) -> None:
        """Add many terms at once: row ``i`` of every array, times ``weights[i]``.

        Gives exactly the same sum as adding the rows one by one, in any order.

        Raises:
            SheafError: as :meth:`add`, or if the arrays do not have one row per weight.
        """
        given = [int(w) for w in np.asarray(weights, dtype=object).reshape(-1)]
        bad = [w for w in given if not 0 <= w <= MAX_EXAMPLES]
        if bad:
            raise SheafError(f"weights of an exact sum must be in [0, {MAX_EXAMPLES}], got {bad[0]}")
        counts = np.asarray(given, dtype=np.int64)
        names = self._check(deltas, stacked=len(counts))
        keep = np.flatnonzero(counts > 0)
        if not len(keep):
            return
        self._reserve(len(keep))
        # A float32 delta times a weight below 2**b has at most 24 + b significant bits, so its
        # pieces end that many bits under its top: fewer bins to visit than for any float64.
        mantissa = max(_mantissa_bits(np.asarray(deltas[name]).dtype) for name in names)
        significant = min(53, mantissa + int(counts.max()).bit_length())
        factors = counts[keep].astype(np.float64)[:, None]
        terms = np.empty((len(keep), self._size), dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # infinities and NaN are summed as IEEE says
            for name, lo, hi in zip(names, self._offsets[:-1], self._offsets[1:], strict=True):
                rows = np.asarray(deltas[name]).reshape(len(counts), -1)
                np.multiply(rows[keep] if len(keep) < len(counts) else rows, factors, out=terms[:, lo:hi])
            for lo in range(0, self._size, max(1, _BLOCK // len(keep))):
                self._accumulate(terms[:, lo : lo + max(1, _BLOCK // len(keep))], lo, significant)
        self.weight += sum(given)  # a Python int: never wraps
        self.count += len(keep)

    def add_total(self, total: Mapping[str, npt.NDArray[Any]], weight: int, count: int) -> None:
        """Add a sum the caller made itself, as given: ``count`` terms of total ``weight``.

        For a backend whose results are only promised to a tolerance (the vectorized one
        sums a chunk of clients in float64, in a fixed order, far cheaper than exactly):
        the total joins this sum exactly, so merging stays independent of order.

        Raises:
            SheafError: as :meth:`add`, or if weight or count is negative.
        """
        if weight < 0 or count < 0:
            raise SheafError(f"weight and count must be >= 0, got {weight} and {count}")
        names = self._check(total)
        self._reserve(count)
        flat = np.concatenate([np.asarray(total[name], dtype=np.float64).reshape(-1) for name in names])[None]
        with np.errstate(over="ignore", invalid="ignore"):
            self._accumulate(flat, 0)
        self.weight += int(weight)
        self.count += int(count)

    def add_updates(self, updates: Sequence[Update]) -> None:
        """Add ``num_examples * delta`` of every update, stacking a few at a time.

        Raises:
            SheafError: as :meth:`add_stacked`.
        """
        rows = max(1, _STACK_BYTES // max(1, 8 * self._size))
        for start in range(0, len(updates), rows):
            chunk = [u for u in updates[start : start + rows] if u.num_examples > 0]
            if chunk:
                self.add_stacked(
                    {name: np.stack([u.delta[name] for u in chunk]) for name in self._shapes},
                    [u.num_examples for u in chunk],
                )

    def _accumulate(self, block: Float64, lo: int, significant: int = 53) -> None:
        """Split the terms of a block of columns into the bins (``block`` is overwritten).

        ``significant`` bounds the significant bits of every term (53 for any float64).
        """
        hi = lo + block.shape[1]
        magnitude = np.abs(block)
        largest = float(magnitude.max())
        if not largest < _HUGE:  # NaN, infinities or astronomically large terms
            odd = ~(magnitude < _HUGE)
            if self._special is None:
                self._special = np.zeros(self._size)
            self._special[lo:hi] += np.where(odd, block, 0.0).sum(axis=0)
            block[odd] = 0.0
            magnitude[odd] = 0.0
            largest = float(magnitude.max())
        if largest == 0.0:
            return
        smallest = float(np.min(magnitude, where=magnitude > 0, initial=largest))
        top, bottom = _bin_above(largest), _bin_below(smallest, significant)
        piece = magnitude  # reuse the buffer
        for k in range(top, bottom - 1, -1):
            if k == bottom:
                piece = block  # the rest is a multiple of this bin's unit and fits whole
            else:
                shift = math.ldexp(1.5, _WIDTH * k + 52)
                np.add(block, shift, out=piece)
                piece -= shift
            self._bin(k)[lo:hi] += piece.sum(axis=0) if len(piece) > 1 else piece[0]
            if k != bottom:
                block -= piece

    def _bin(self, k: int) -> Float64:
        if k not in self._bins:
            self._bins[k] = np.zeros(self._size)
        return self._bins[k]

    def merge(self, other: ExactSum) -> None:
        """Add another exact sum over the same tensors into this one.

        Raises:
            SheafError: if the tensors differ or the merged sum would exceed :data:`MAX_TERMS`.
        """
        if other._shapes != self._shapes:
            raise SheafError("cannot merge exact sums over different tensors")
        self._reserve(other.count)
        for k, values in other._bins.items():
            self._bin(k)[...] += values
        if other._special is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                self._special = other._special.copy() if self._special is None else self._special + other._special
        self.weight += other.weight
        self.count += other.count

    # Reading ---------------------------------------------------------------------------
    def total(self) -> Params:
        """The sum in float64, within one unit in the last place of the exact sum.

        The bins are first carried upwards (exactly) so that each is smaller than the unit
        of the next, then added from the largest down with the rounding error of each
        addition kept aside (Knuth's TwoSum) and added at the end. A deterministic function
        of the exact bins, hence of the terms alone.
        """
        bins = {k: v.copy() for k, v in self._bins.items()}
        for k in sorted(bins):
            if k < _TOP and k + 1 <= max(bins):
                shift = math.ldexp(1.5, _WIDTH * (k + 1) + 52)
                carry = (bins[k] + shift) - shift
                bins[k] -= carry
                bins[k + 1] = bins[k + 1] + carry if k + 1 in bins else carry
        flat = np.zeros(self._size)
        error = np.zeros(self._size)
        with np.errstate(over="ignore", invalid="ignore"):
            for k in sorted(bins, reverse=True):
                added = flat + bins[k]
                back = added - flat
                error += (flat - (added - back)) + (bins[k] - back)
                flat = added
            flat = flat + error
            if self._special is not None:
                flat += self._special
        return Params(
            {
                name: flat[lo:hi].reshape(shape)
                for (name, shape), lo, hi in zip(
                    self._shapes.items(), self._offsets[:-1], self._offsets[1:], strict=True
                )
            }
        )

    def _reserve(self, terms: int) -> None:
        if self.count + terms > MAX_TERMS:
            raise SheafError(
                f"an exact sum holds at most {MAX_TERMS:,} terms, got {self.count + terms:,}; "
                "sample fewer clients per round"
            )

    def _check(self, arrays: Mapping[str, npt.NDArray[Any]], stacked: int | None = None) -> list[str]:
        if len(arrays) != len(self._shapes) or set(arrays) != set(self._shapes):
            raise SheafError(f"tensors {list(arrays)} do not match the sum's {list(self._shapes)}")
        for name, shape in self._shapes.items():
            got = tuple(np.shape(arrays[name]))
            want = shape if stacked is None else (stacked, *shape)
            if got != want:
                raise SheafError(f"tensor {name!r} has shape {got}, expected {want}")
        return list(self._shapes)

    # Transport (between worker processes; no pickle) -------------------------------------
    def to_arrays(self) -> tuple[dict[str, Any], list[Float64]]:
        """A JSON-ready header and the flat float64 arrays it describes (see :meth:`from_arrays`)."""
        slots: list[int | None] = [*sorted(self._bins)]
        arrays = [self._bins[k] for k in sorted(self._bins)]
        if self._special is not None:
            slots.append(None)
            arrays.append(self._special)
        return {"weight": self.weight, "count": self.count, "slots": slots}, arrays

    @classmethod
    def from_arrays(
        cls, like: Mapping[str, npt.NDArray[Any]], header: Mapping[str, Any], arrays: Sequence[npt.NDArray[Any]]
    ) -> ExactSum:
        """Rebuild a sum sent by :meth:`to_arrays`, validating every slot.

        Raises:
            SheafError: if the header or arrays do not describe a sum over ``like``.
        """
        out = cls(like)
        try:
            slots = list(header["slots"])
            weight, count = header["weight"], header["count"]
            if not all(type(v) is int for v in (weight, count)):
                raise TypeError("weight and count must be whole numbers")
            distinct = len(set(slots)) == len(slots)
        except (KeyError, TypeError, ValueError) as exc:
            raise SheafError(f"malformed exact sum header: {str(exc)[:200]}") from None
        if len(slots) != len(arrays) or not distinct or weight < 0 or not 0 <= count <= MAX_TERMS:
            raise SheafError("malformed exact sum: its slots, arrays, weight or count do not fit together")
        for k, array in zip(slots, arrays, strict=True):
            values = np.asarray(array)
            if not (k is None or (type(k) is int and _BOTTOM <= k <= _TOP)):
                raise SheafError(f"malformed exact sum slot {k!r}")
            if values.dtype != np.float64 or values.shape != (out._size,):
                raise SheafError(
                    f"exact sum slot {k!r} holds {values.dtype}{list(values.shape)}, expected float64[{out._size}]"
                )
            if k is None:
                out._special = values.copy()
            else:
                out._bins[k] = values.copy()
        out.weight, out.count = weight, count
        return out


class StackedSum:
    """Updates that arrive one at a time, added to an :class:`ExactSum` a stack at a time.

    Adding a stack of updates costs about as much as adding one (the cost is per call), so
    whoever receives updates singly — a pool worker, a deployed server — keeps a few pending
    and adds them together. Memory stays at one stack, however large the cohort.

    Args:
        like: the shapes of the updates.
        clients: the most updates kept pending.
        nbytes: the most bytes of pending updates.

    Example:
        >>> import numpy as np
        >>> like = Params({"w": np.zeros(1)})
        >>> stacked = StackedSum(like, clients=2)
        >>> for i, v in enumerate([1.0, 2.0, 4.0]):
        ...     stacked.add(Update(i, Params({"w": np.array([v])}), 1))
        >>> stacked.pending, stacked.result().total()["w"].tolist()
        (1, [7.0])
    """

    def __init__(self, like: Params, clients: int = 32, nbytes: int = 1 << 24) -> None:
        self.sum = ExactSum(like)
        self._limit = max(1, min(clients, nbytes // max(1, like.nbytes)))
        self._pending: list[Update] = []

    @property
    def pending(self) -> int:
        """Updates given but not yet added."""
        return len(self._pending)

    def add(self, update: Update) -> None:
        """Add ``num_examples * delta`` (now, or with the next stack).

        Raises:
            SheafError: as :meth:`ExactSum.add_stacked` (when the stack is added).
        """
        self._pending.append(update)
        if len(self._pending) >= self._limit:
            self._add_pending()

    def result(self) -> ExactSum:
        """The exact sum of every update given so far."""
        self._add_pending()
        return self.sum

    def _add_pending(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            self.sum.add_updates(pending)
