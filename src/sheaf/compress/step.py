"""Update compression as a strategy step: encode on the client, decode where the update arrives.

Both halves side by side, in sheaf's step contract (:mod:`sheaf.strategies.base`):

- **client half** — the client step ``compress`` (:data:`COMPRESS_STEP`), outermost around
  training and every other client step: it encodes the client's delta (plus, with error
  feedback, what its earlier encodings left out) and sends only the encoding
  (:class:`~sheaf.core.encoded.Encoded`), never the float delta. Error feedback's residual
  is the client's own state (group ``compress_residual``), so it survives between the
  client's rounds, in the run store in a simulation and on the client's disk in a
  deployment;
- **server half** — the step's codec (:class:`EncoderCodec`), declared in its client half.
  The round loop (and nothing else) asks the strategy to decode each update where it
  arrives (:meth:`~sheaf.strategies.base.Strategy.receive`), *before* the acceptance rule
  judges it: every bound — differential privacy's clip norm, the deployed operator's norm
  and weight limits, finiteness — applies to the decoded update exactly as to a plain one,
  and every aggregator (the weighted mean, Krum, the median, the private mean) sees plain
  deltas. An update that is not its encoder's (layout) or cannot be decoded is that
  client's recorded dropout.

The step itself is an :class:`~sheaf.strategies.base.UpdateStep` placed first in the chain
(:func:`with_compression`), so its client step is the outermost: **clip, then noise, then
compress**. Noise before compression makes compression post-processing of the private
release (local DP's guarantee holds whatever the encoder does); clipping before it bounds
what enters the encoder. With central DP clipped on the clients (``dp_clip``), the server
adds noise calibrated to the clip norm of what it *aggregates* — the decoded update — so
the client shrinks its encoding until the decoded update is within the norm
(:meth:`~sheaf.compress.encoders.Encoder.scaled`; the residual keeps the difference).

Stochastic rounding draws from the client's own seed for the round (the seed it trains
with), so a client encodes the same bits on every backend and in a deployment; it is not a
privacy mechanism, and the encoding is a function of the update either way.

Example:
    >>> from sheaf.compress.plan import compression_plan
    >>> from sheaf.core.config import load_config
    >>> from sheaf.strategies import fedavg
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> plan = compression_plan(load_config(overrides=["compression.encoder=q8"]), Params({"w": np.zeros(4)}))
    >>> strategy = with_compression(fedavg(), plan)
    >>> strategy.name, [s.name for s in strategy.client_steps], strategy.codec.name
    ('q8-fedavg', ['compress'], 'q8')

References:
    Suresh, Yu, Kumar, McMahan. Distributed Mean Estimation with Limited Communication.
    ICML 2017. Stich, Cordonnier, Jaggi. Sparsified SGD with Memory. NeurIPS 2018.
    Konečný, McMahan, Yu, Richtárik, Suresh, Bacon. Federated Learning: Strategies for
    Improving Communication Efficiency. arXiv:1610.05492, 2016.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sheaf.compress.download import compress_download
from sheaf.compress.encoders import Encoder
from sheaf.compress.plan import (
    FEEDBACK_OPTION,
    CompressionPlan,
    encoder_from_options,
    round_seeds,
)
from sheaf.core.encoded import Encoded, EncodedLayout
from sheaf.core.errors import StrategyError, TaskError
from sheaf.core.params import Params
from sheaf.core.rng import Purpose
from sheaf.core.update import Scalar, Update
from sheaf.privacy.client_steps import DP_CLIP_STEP
from sheaf.privacy.plan import CLIP_OPTION
from sheaf.quantize.randomness import SeededBits
from sheaf.strategies.base import (
    Broadcast,
    ClientHalf,
    EmptyState,
    RoundContext,
    Step,
    Strategy,
    UpdateStep,
    chain,
    init_empty,
)
from sheaf.task.base import FitInstructions, FitResult
from sheaf.task.client_steps import ClientContext, ClientStep, FitFn, merged_state

__all__ = [
    "COMPRESS_STEP",
    "RESIDUAL_STATE",
    "SEED_OPTION",
    "EncoderCodec",
    "compress_updates",
    "with_compression",
]

#: The per-round option carrying the round's public seed (the rotation's signs).
SEED_OPTION = "compress_seed"
#: The client-state group holding error feedback's residual.
RESIDUAL_STATE = "compress_residual"


def _residual(instructions: FitInstructions, length: int) -> npt.NDArray[np.float64]:
    stored = instructions.client_state.get(RESIDUAL_STATE)
    vector = None if stored is None else stored.get("residual")
    if vector is None or vector.shape != (length,):
        return np.zeros(length, np.float64)
    return vector.astype(np.float64)


def _within(
    encoder: Encoder, encoded: Encoded, sent: Params, like: Params, bound: float, seed: int
) -> tuple[Encoded, Params]:
    """``encoded`` shrunk until its decoding (as the server will cast it) has norm at most ``bound``."""
    for attempt in range(10):
        norm = sent.l2_norm()
        if norm <= bound:
            return encoded, sent
        # A margin that grows per attempt: re-rounding (fp16, bf16) may undo a tiny shrink.
        margin = min(0.5, 2.0 ** (-20 + 3 * attempt))
        encoded = encoder.scaled(encoded, bound * (1.0 - margin) / norm)
        sent = like.unflatten(encoder.decode(encoded, seed=seed))
    raise TaskError(f"cannot keep the {encoder.name} update within the clip norm {bound:g}")


def _compress(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    encoder = encoder_from_options(instructions.options, params.num_elements)
    if SEED_OPTION not in instructions.options:
        raise TaskError(f"compression needs option {SEED_OPTION!r} from the server")
    seed = int(instructions.options[SEED_OPTION])
    feedback = bool(instructions.options.get(FEEDBACK_OPTION, False))
    result = fit(params, instructions)
    delta = result.params.flatten(np.float64) - params.flatten(np.float64)
    # A client that did not train carries no weight: its residual waits for a round that counts.
    carried = feedback and result.num_examples > 0
    target = delta + _residual(instructions, delta.size) if carried else delta
    sequence = np.random.SeedSequence([instructions.seed, int(Purpose.COMPRESS)])
    encoded = encoder.encode(target, seed=seed, bits=SeededBits(np.random.Generator(np.random.PCG64(sequence))))
    sent = params.unflatten(encoder.decode(encoded, seed=seed))  # what the server will apply, in the model's dtype
    if DP_CLIP_STEP.name in instructions.client_steps:
        encoded, sent = _within(encoder, encoded, sent, params, float(instructions.options[CLIP_OPTION]), seed)
    state = result.client_state
    if carried:
        residual = (target - sent.flatten(np.float64)).astype(np.float32)
        state = merged_state(instructions, result, **{RESIDUAL_STATE: Params({"residual": residual})})
    # Only the encoding leaves: the server half decodes it.
    return FitResult(params, result.num_examples, dict(result.metrics), dict(result.extras), state, encoded)


#: The client half: encode the delta (with error feedback's residual), outermost.
COMPRESS_STEP = ClientStep("compress", _compress)


@dataclass(frozen=True)
class EncoderCodec:
    """The server half of compression: decodes one encoded update (the step's codec).

    Attributes:
        encoder: the clients' encoder.
    """

    encoder: Encoder

    @property
    def name(self) -> str:
        """The encoder's name."""
        return self.encoder.name

    @property
    def layout(self) -> EncodedLayout:
        """What every encoded update holds."""
        return self.encoder.layout

    def decode(self, encoded: Encoded, like: Params, options: Mapping[str, Scalar]) -> Params:
        """The delta, in ``like``'s shapes and dtypes (the round's seed from ``options``).

        Raises:
            ValueError: if the encoding cannot be decoded, or the round's seed is missing.
        """
        seed = options.get(SEED_OPTION)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"the round's option {SEED_OPTION!r} is missing")
        return like.unflatten(self.encoder.decode(encoded, seed=seed))


def compress_updates(plan: CompressionPlan) -> UpdateStep[EmptyState]:
    """The compression step of ``plan`` (see the module docstring): first in its chain.

    Raises:
        StrategyError: if the plan compresses no uploads.
    """
    encoder = plan.upload()
    if encoder is None:
        raise StrategyError("compress_updates needs an upload encoder (compression.encoder is none)")

    def apply(updates: Sequence[Update], state: EmptyState, ctx: RoundContext) -> tuple[list[Update], EmptyState]:
        # Each update was decoded where it arrived (Strategy.receive), before it was judged.
        return list(updates), state

    def announce(state: EmptyState, ctx: RoundContext) -> Broadcast:
        upload, _ = round_seeds(ctx.seed, ctx.round)
        return Broadcast({SEED_OPTION: upload}, {})

    half = ClientHalf(steps=(COMPRESS_STEP,), options=plan.client_options(), codec=EncoderCodec(encoder))
    return UpdateStep(init_empty, apply, "compress", client=half, configure=announce)


def with_compression(strategy: Strategy, plan: CompressionPlan) -> Strategy:
    """``strategy`` with its clients' updates encoded, and its model moving by encoded deltas
    when ``plan`` compresses downloads.

    The compression step goes first (its client step outermost: clip, then noise, then
    compress); the strategy's own steps follow unchanged and see decoded updates; the
    download step, if any, goes last (it encodes the delta the model moves by).
    """
    steps: list[Step] = [*strategy.update_steps, strategy.aggregator, *strategy.server_steps]
    name = strategy.name
    if plan.encoder != "none":
        steps.insert(0, compress_updates(plan))
        name = f"{plan.encoder}-{name}"
    if plan.download != "none":
        steps.append(compress_download(plan))
        name = f"{name}+{plan.download}down"
    return chain(*steps, name=name)
