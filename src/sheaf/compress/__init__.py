"""Update compression: encoders as the client and server halves of one strategy step.

Clients encode their updates — fp16, bf16, stochastic uniform quantisation to 8, 4 or 2
bits (optionally after a randomised Hadamard rotation; :mod:`sheaf.quantize`, the
quantiser secure aggregation uses), or top-k with error feedback kept in their own
state — and the server decodes each where it arrives, before the acceptance rule judges
it. Optionally the model moves by encoded deltas, so that clients can be sent the deltas
they missed instead of the model. ``[compression]`` in the config; see
``docs/compression.md``.
"""

from sheaf.compress.download import (
    CatchUp,
    DownloadState,
    apply_catch_up,
    catch_up,
    catch_up_rounds,
    compress_download,
)
from sheaf.compress.encoders import QUANTIZERS, Encoder, LevelEncoder, build_encoder
from sheaf.compress.floats import BFloat16Encoder, Float16Encoder, from_bfloat16, to_bfloat16
from sheaf.compress.plan import (
    ENCODER_OPTION,
    FEEDBACK_OPTION,
    K_OPTION,
    ROTATE_OPTION,
    CompressionPlan,
    compression_plan,
    encoder_from_options,
    round_seeds,
)
from sheaf.compress.step import (
    COMPRESS_STEP,
    RESIDUAL_STATE,
    SEED_OPTION,
    EncoderCodec,
    compress_updates,
    with_compression,
)
from sheaf.compress.topk import TopKEncoder, top_k_count

__all__ = [
    "COMPRESS_STEP",
    "ENCODER_OPTION",
    "FEEDBACK_OPTION",
    "K_OPTION",
    "QUANTIZERS",
    "RESIDUAL_STATE",
    "ROTATE_OPTION",
    "SEED_OPTION",
    "BFloat16Encoder",
    "CatchUp",
    "CompressionPlan",
    "DownloadState",
    "Encoder",
    "EncoderCodec",
    "Float16Encoder",
    "LevelEncoder",
    "TopKEncoder",
    "apply_catch_up",
    "build_encoder",
    "catch_up",
    "catch_up_rounds",
    "compress_download",
    "compress_updates",
    "compression_plan",
    "encoder_from_options",
    "from_bfloat16",
    "round_seeds",
    "to_bfloat16",
    "top_k_count",
    "with_compression",
]
