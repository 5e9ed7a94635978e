"""What a client is told about the run: both halves, the server's and the client's, side by side.

A deployed server holds the whole run config — its own paths, the run seed, how cohorts are
sampled, the clients' simulated settings — and a client needs almost none of it. The
server sends each client a :class:`RunDescription` when it joins, built from the config by
:meth:`RunDescription.of`, and nothing else about the run:

=============  ==========================================================================
field          what the client does with it
=============  ==========================================================================
``dataset``    reads its own file as that catalog dataset (columns, labels, preprocessing)
               and sizes the built-in model from it
``model``      builds this built-in model (``hidden`` its widths) if it brings no task of
``hidden``     its own, within its own size limit and the model its policy agrees to
``rounds``     logs it; its policy bounds the rounds it trains in
``strategy``   takes part only if its policy agrees to the strategy
``privacy``    ``none``, ``central`` or ``local``: whether its evaluation results may leave
=============  ==========================================================================

Per-round training settings (epochs, batch size, learning rate, options, this client's
own training seed) come with each task, and are checked against the client's policy then.

The client reads the description with :meth:`RunDescription.from_proto`, which checks every
field's form and size (a server is not trusted to send sane values); a description it
cannot use ends its part in the run with one line.

Example:
    >>> from sheaf.core.config import load_config
    >>> sent = RunDescription.of(load_config(overrides=["privacy.mode=central"])).to_proto()
    >>> got = RunDescription.from_proto(sent)
    >>> got.dataset, got.model, got.hidden, got.rounds, got.strategy, got.privacy
    ('digits', 'mlp', (64,), 60, 'fedavg', 'central')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sheaf.core.config import PRIVACY_MODES, RunConfig
from sheaf.core.errors import SheafError
from sheaf.deploy._proto import federation_pb2 as pb

__all__ = ["DescriptionError", "RunDescription"]

#: A name the client may use as a catalog lookup or in a log line: no paths, no markup.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")
#: The most layers, and the widest layer, a description may ask of a built-in model; the
#: client's own size limit (policy ``training.max_model_mb``) decides before anything is built.
_MAX_LAYERS = 16
_MAX_WIDTH = 1 << 20
_MAX_ROUNDS = 10**9


class DescriptionError(SheafError):
    """The server described the run in a form no client can use."""


@dataclass(frozen=True)
class RunDescription:
    """The run as a client sees it (see the module docstring).

    Attributes:
        dataset: the catalog dataset the clients' files hold.
        model: the built-in model's name (``mlp``, ``logreg``, ``cnn``, ``char_lstm``).
        hidden: the built-in model's layer widths.
        rounds: the rounds the run will have.
        strategy: the strategy's configured name.
        privacy: ``none``, ``central`` or ``local``.
    """

    dataset: str
    model: str
    hidden: tuple[int, ...]
    rounds: int
    strategy: str
    privacy: str

    @classmethod
    def of(cls, config: RunConfig) -> RunDescription:
        """The server's half: what the clients of ``config``'s run are told."""
        return cls(
            config.data.dataset,
            config.model.name,
            tuple(config.model.hidden),
            config.rounds,
            config.strategy.name,
            config.privacy.mode,
        )

    def to_proto(self) -> pb.RunDescription:
        """The message a join reply carries."""
        return pb.RunDescription(
            dataset=self.dataset,
            model=self.model,
            hidden=list(self.hidden),
            rounds=self.rounds,
            strategy=self.strategy,
            privacy=self.privacy,
        )

    @classmethod
    def from_proto(cls, message: pb.RunDescription) -> RunDescription:
        """The client's half: the description a server sent, every field checked.

        Raises:
            DescriptionError: if a field is missing, malformed or out of range.
        """
        for what, value in (("dataset", message.dataset), ("model", message.model), ("strategy", message.strategy)):
            if not _NAME.fullmatch(value):
                raise DescriptionError(
                    f"the server describes the run's {what} as {value[:40]!r}: not a name "
                    "(1 to 100 letters, digits, '_', '.', '+', '-')"
                )
        hidden = tuple(int(width) for width in message.hidden[: _MAX_LAYERS + 1])
        if len(hidden) > _MAX_LAYERS or any(not 1 <= width <= _MAX_WIDTH for width in hidden):
            raise DescriptionError(
                f"the server asks for a model of layer widths {list(hidden)[:_MAX_LAYERS]}: at most {_MAX_LAYERS} "
                f"layers of 1 to {_MAX_WIDTH} units"
            )
        if not 1 <= message.rounds <= _MAX_ROUNDS:
            raise DescriptionError(f"the server describes a run of {message.rounds} rounds")
        if message.privacy not in PRIVACY_MODES:
            raise DescriptionError(
                f"the server describes the run's privacy as {message.privacy[:40]!r}, not one of {list(PRIVACY_MODES)}"
            )
        return cls(message.dataset, message.model, hidden, int(message.rounds), message.strategy, message.privacy)

    @property
    def private(self) -> bool:
        """Whether the server declares the run differentially private."""
        return self.privacy != "none"
