"""A client that skips its clipping step, for end-to-end tests of the sum-only private mean.

Module-level, so that pool workers and Ray actors can be sent the step.
"""

from __future__ import annotations

import dataclasses

from sheaf.core.params import Params
from sheaf.privacy.client_steps import DP_CLIP_STEP
from sheaf.task.base import FitInstructions, FitResult
from sheaf.task.client_steps import ClientContext, ClientStep, FitFn

#: The client that does not clip.
ROGUE = 3


def _clip_unless_rogue(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    if instructions.client_id != ROGUE:
        return DP_CLIP_STEP.run(fit, params, instructions, client)
    result = fit(params, instructions)
    # Sends its trained delta blown up 1e5 times, with the one example an honest clipping client claims.
    blown = Params({k: params[k] + (result.params[k] - params[k]) * 1e5 for k in params})
    return dataclasses.replace(result, params=blown, num_examples=1)


#: ``dp_clip`` as the rogue client runs it (the same name, so the round asks for it as usual).
ROGUE_CLIP = ClientStep("dp_clip", _clip_unless_rogue)
