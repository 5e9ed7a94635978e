"""Download compression: the model moves by encoded deltas, so clients can be sent those instead.

A client that took part in round ``h`` holds the model it was sent then, ``P_{h-1}``; in
round ``t`` it needs ``P_{t-1}``. Sending it the *quantised* difference would leave it with
a model the server does not have, and the error would compound. Instead the server's own
model moves by what a client can rebuild exactly: the last server step
(:func:`compress_download`) encodes the round's delta ``D_t`` (plus its own error-feedback
residual ``e``), and the model moves by the *decoded* encoding:

    P_t = P_{t-1} + decode(encode(D_t + e)),   e <- D_t + e - decode(encode(D_t + e)).

A client holding ``P_h`` that is sent the encodings of every round after ``h`` adds their
decodings in order — the same float operations the server did — and holds ``P_t`` **bit
for bit** (:func:`apply_catch_up`; tested for every gap). Rounds that were skipped add
nothing. The server keeps the last ``K`` encodings, ``K`` the most whose bytes are still
fewer than the model's (:func:`catch_up_rounds`); a client further behind, or new, is
sent the model itself. So a client that missed rounds still gets the correct model, and a
download never costs more than the model.

The residual makes the encoding's error a delay, not a loss (as for the clients' top-k);
the model's trajectory changes by it, which the benchmark measures. Simulated clients
train from ``P_{t-1}`` directly — what they would rebuild — and the round loop counts what
each would have been sent (:mod:`sheaf.run.traffic`).

Example:
    >>> import numpy as np
    >>> from sheaf.core.config import load_config
    >>> from sheaf.compress.plan import compression_plan
    >>> from sheaf.strategies import RoundContext
    >>> like = Params({"w": np.zeros(1000, np.float32)})
    >>> plan = compression_plan(load_config(overrides=["compression.download=q8"]), like)
    >>> step, encoder = compress_download(plan), plan.downloader()
    >>> state, models = step.init(like), [like]
    >>> for round in (1, 2, 3):
    ...     delta = Params({"w": np.random.default_rng(round).normal(size=1000).astype(np.float32)})
    ...     moved, state = step.apply(delta, state, RoundContext(round, models[-1], 0, 10))
    ...     models.append(models[-1] + moved)
    >>> catch_up_rounds(plan), apply_catch_up(models[1], encoder, catch_up(state, 1)).array_equal(models[3])
    (3, True)

References:
    Tang, Yu, Lian, Zhang, Liu. DoubleSqueeze: Parallel Stochastic Gradient Descent with
    Double-pass Error-Compensated Compression. ICML 2019. Caldas, Konečný, McMahan,
    Talwalkar. Expanding the Reach of Federated Learning by Reducing Client Resource
    Requirements. arXiv:1812.07210, 2018.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from sheaf.compress.encoders import Encoder
from sheaf.compress.plan import CompressionPlan, round_seeds
from sheaf.core.encoded import Encoded, layout_bytes
from sheaf.core.errors import StrategyError
from sheaf.core.params import Params
from sheaf.core.rng import Purpose, stream
from sheaf.quantize.randomness import SeededBits
from sheaf.strategies.base import ClientHalf, RoundContext, ServerStep

__all__ = ["CatchUp", "DownloadState", "apply_catch_up", "catch_up", "catch_up_rounds", "compress_download"]


class DownloadState(NamedTuple):
    """The state of :func:`compress_download`.

    Attributes:
        residual: what the server's encodings have left out so far (float64, one per parameter).
        rounds: the rounds whose encodings are held, oldest first.
        seeds: their rotation seeds.
        held: the held encodings, each array stacked over those rounds.
        released: the last round whose encoding is no longer held (0: none yet).
    """

    residual: npt.NDArray[np.float64]
    rounds: npt.NDArray[np.int64]
    seeds: npt.NDArray[np.int64]
    held: dict[str, npt.NDArray[Any]]
    released: int


#: One round's encoded delta as a client is sent it: ``(round, rotation seed, encoding)``.
CatchUp = tuple[int, int, Encoded]


def catch_up_rounds(plan: CompressionPlan) -> int:
    """``K``: the most round deltas whose encodings take fewer bytes than the model."""
    encoder = plan.downloader()
    if encoder is None:
        return 0
    return max(0, math.ceil(plan.model_bytes / layout_bytes(encoder.layout)) - 1)


def compress_download(plan: CompressionPlan) -> ServerStep[DownloadState]:
    """The server step that moves the model by encoded deltas (see the module docstring); last in its chain.

    Raises:
        StrategyError: if the plan does not compress downloads.
    """
    encoder = plan.downloader()
    if encoder is None:
        raise StrategyError("compress_download needs a download encoder (compression.download is none)")
    keep = catch_up_rounds(plan)

    def init(params: Params) -> DownloadState:
        held = {name: np.zeros((0, *shape), dtype) for name, dtype, shape in encoder.layout}
        return DownloadState(np.zeros(params.num_elements), np.zeros(0, np.int64), np.zeros(0, np.int64), held, 0)

    def apply(delta: Params, state: DownloadState, ctx: RoundContext) -> tuple[Params, DownloadState]:
        target = delta.flatten(np.float64) + state.residual
        _, seed = round_seeds(ctx.seed, ctx.round)
        bits = SeededBits(stream(ctx.seed, Purpose.COMPRESS, round=ctx.round, client=0))  # the server's own stream
        encoded = encoder.encode(target, seed=seed, bits=bits)
        moved = ctx.params.unflatten(encoder.decode(encoded, seed=seed))
        rounds = np.append(state.rounds, ctx.round)
        seeds = np.append(state.seeds, seed)
        held = {name: np.concatenate([state.held[name], encoded[name][None]]) for name in state.held}
        released = state.released
        if rounds.size > keep:
            drop = rounds.size - keep
            released = int(rounds[drop - 1])
            rounds, seeds = rounds[drop:], seeds[drop:]
            held = {name: stack[drop:] for name, stack in held.items()}
        residual = target - moved.flatten(np.float64)
        return moved, DownloadState(residual, rounds, seeds, held, released)

    half = ClientHalf(downlink=encoder.layout)
    return ServerStep(init, apply, f"download_{plan.download}", client=half)


def catch_up(state: DownloadState, held_round: int) -> list[CatchUp] | None:
    """What a client holding the model sent in round ``held_round`` needs: the encodings of
    every later round, oldest first — or None if some are no longer held (send the model).

    ``held_round`` 0 is the initial model.
    """
    if held_round < state.released:
        return None
    return [
        (int(r), int(s), Encoded({name: stack[i] for name, stack in state.held.items()}))
        for i, (r, s) in enumerate(zip(state.rounds, state.seeds, strict=True))
        if r > held_round
    ]


def apply_catch_up(params: Params, encoder: Encoder, deltas: list[CatchUp] | None) -> Params:
    """The model after adding each round's decoded delta to ``params``, in order (the client's side).

    Raises:
        StrategyError: if ``deltas`` is None (the server must send the model instead).
    """
    if deltas is None:
        raise StrategyError("the deltas since that round are no longer held; the client must be sent the model")
    for _, seed, encoded in deltas:
        params = params + params.unflatten(encoder.decode(encoded, seed=seed))
    return params
