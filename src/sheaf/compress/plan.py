"""A run's compression, resolved from ``[compression]`` and the model: encoders, options, sizes.

The plan is made where the run is assembled, once the model is known (its length fixes
every encoder's layout, hence every encoded update's size). It says what clients are
told (fixed options; the round's seed comes from the step each round), builds both
encoders, and describes itself for the run store: the encoder, the bytes of one encoded
update against one float32 update, and their ratio.

A client rebuilds its encoder from the options it receives (:func:`encoder_from_options`)
and refuses options it cannot use, with one line.

Example:
    >>> import numpy as np
    >>> from sheaf.core.config import load_config
    >>> from sheaf.core.params import Params
    >>> like = Params({"w": np.zeros(28938, np.float32)})
    >>> plan = compression_plan(load_config(overrides=["compression.encoder=q4", "rotate=true"]), like)
    >>> plan.describe()["upload_bytes"], round(plan.describe()["upload_ratio"], 2)
    (15080, 7.68)
    >>> sorted(plan.client_options())
    ['compress_encoder', 'compress_feedback', 'compress_k', 'compress_rotate']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sheaf.compress.encoders import Encoder, build_encoder
from sheaf.core.config import ENCODERS, RunConfig
from sheaf.core.encoded import layout_bytes
from sheaf.core.errors import TaskError
from sheaf.core.params import Params
from sheaf.core.rng import Purpose, stream
from sheaf.core.update import Scalar

__all__ = [
    "ENCODER_OPTION",
    "FEEDBACK_OPTION",
    "K_OPTION",
    "ROTATE_OPTION",
    "CompressionPlan",
    "compression_plan",
    "encoder_from_options",
    "round_seeds",
]

#: The options every client of a compressed run receives.
ENCODER_OPTION = "compress_encoder"
ROTATE_OPTION = "compress_rotate"
K_OPTION = "compress_k"
FEEDBACK_OPTION = "compress_feedback"


@dataclass(frozen=True)
class CompressionPlan:
    """What a run's clients upload and download (see the module docstring).

    Attributes:
        encoder: the upload encoder's name (``none``: plain float32 deltas).
        rotate: quantisers rotate first.
        k: ``topk``'s share of coordinates.
        error_feedback: clients keep what their encoding left out for their next update.
        download: the encoder the server's model moves by (``none``: clients get the model).
        length: the model's parameters.
        model_bytes: one model (or one plain update) in bytes.
    """

    encoder: str
    rotate: bool
    k: float
    error_feedback: bool
    download: str
    length: int
    model_bytes: int

    def upload(self) -> Encoder | None:
        """The clients' encoder (None: plain deltas)."""
        return (
            None if self.encoder == "none" else build_encoder(self.encoder, self.length, rotate=self.rotate, k=self.k)
        )

    def downloader(self) -> Encoder | None:
        """The encoder of the server's round deltas (None: clients are sent the model)."""
        return (
            None if self.download == "none" else build_encoder(self.download, self.length, rotate=self.rotate, k=self.k)
        )

    def client_options(self) -> dict[str, Scalar]:
        """The fixed options every client of the run receives."""
        return {
            ENCODER_OPTION: self.encoder,
            ROTATE_OPTION: self.rotate,
            K_OPTION: self.k,
            FEEDBACK_OPTION: self.error_feedback,
        }

    def describe(self) -> dict[str, Any]:
        """What the run store records: the encoders, and one update's bytes against a plain one's."""
        upload = self.upload()
        download = self.downloader()
        sent = layout_bytes(upload.layout) if upload is not None else self.model_bytes
        out: dict[str, Any] = {
            "encoder": upload.name if upload is not None else "none",
            "error_feedback": self.error_feedback,
            "upload_bytes": sent,
            "plain_bytes": self.model_bytes,
            "upload_ratio": self.model_bytes / sent,
        }
        if download is not None:
            out.update(download=download.name, download_delta_bytes=layout_bytes(download.layout))
        return out


def compression_plan(config: RunConfig, like: Params) -> CompressionPlan | None:
    """The plan for ``config``'s ``[compression]`` and the model ``like`` (None if it is off)."""
    settings = config.compression
    if settings.encoder == "none" and settings.download == "none":
        return None
    feedback = settings.error_feedback == "on" or (settings.error_feedback == "auto" and settings.encoder == "topk")
    return CompressionPlan(
        settings.encoder,
        settings.rotate,
        settings.k,
        feedback,
        settings.download,
        like.num_elements,
        like.nbytes,
    )


def encoder_from_options(options: Mapping[str, Scalar], length: int) -> Encoder:
    """The encoder the server's options name, for a model of ``length`` parameters (a client).

    Raises:
        TaskError: if the options are missing or unusable.
    """
    name = options.get(ENCODER_OPTION)
    rotate = options.get(ROTATE_OPTION, False)
    k = options.get(K_OPTION, 0.1)
    if not isinstance(name, str) or name not in ENCODERS or name == "none":
        raise TaskError(f"compression needs option {ENCODER_OPTION!r} naming an encoder from the server, got {name!r}")
    if not isinstance(rotate, bool) or isinstance(k, bool) or not isinstance(k, int | float):
        raise TaskError(f"the server's compression options are unusable: rotate={rotate!r}, k={k!r}")
    try:
        return build_encoder(name, length, rotate=rotate, k=float(k))
    except ValueError as exc:
        raise TaskError(f"the server's compression options are unusable: {exc}") from None


def round_seeds(seed: int, round: int) -> tuple[int, int]:
    """``(upload seed, download seed)`` of a round: its rotations' public seeds, from the run seed.

    Example:
        >>> round_seeds(0, 3) == round_seeds(0, 3) != round_seeds(0, 4)
        True
    """
    upload, download = stream(seed, Purpose.COMPRESS, round=round).integers(0, 2**62, size=2)
    return int(upload), int(download)
