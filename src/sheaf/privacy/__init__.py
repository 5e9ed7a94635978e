"""Differential privacy with a real accountant: clipping, noise, accounting, budgets.

Central DP-FedAvg (server or client clipping, fixed or adaptive clip norm) and local DP,
accounted with dp-accounting's RDP or PLD accountant every round; the inverse
(a noise multiplier for a target epsilon); data owners' own budgets and ledgers. See
``docs/privacy.md``.
"""

from sheaf.privacy.accountant import (
    ACCOUNTANTS,
    MECHANISM_KINDS,
    PLD_DISCRETIZATION,
    RoundMechanism,
    dp_event,
    epsilon,
    epsilon_of,
    make_accountant,
)
from sheaf.privacy.aggregation import PRIVACY, PrivateMeanState, privacy_report, private_mean, with_privacy
from sheaf.privacy.calibration import calibrate_noise_multiplier
from sheaf.privacy.client_steps import (
    BUDGET_STEP,
    DP_CLIP_STEP,
    LOCAL_DP_STEP,
    PRIVACY_STEPS,
    client_noise,
    privacy_client_steps,
)
from sheaf.privacy.clipping import clip_delta, clip_sent, update_clip, update_noise_multiplier
from sheaf.privacy.ledger import (
    LEDGER_KEY,
    BudgetExceeded,
    ClientPrivacy,
    PrivacyLedger,
    PrivateClientTask,
    client_privacy,
    simulated_client_privacy,
    with_client_privacy,
)
from sheaf.privacy.noise import (
    NOISE_SOURCES,
    KeyedNoise,
    NoiseSource,
    SecureNoise,
    SeededNoise,
    secure_uniform,
    server_noise,
)
from sheaf.privacy.plan import (
    BELOW_CLIP_METRIC,
    CLIP_OPTION,
    EVALUATION_OFF,
    PrivacyPlan,
    deployed_privacy_plan,
    mechanism_from_options,
    privacy_plan,
)

__all__ = [
    "ACCOUNTANTS",
    "BELOW_CLIP_METRIC",
    "BUDGET_STEP",
    "CLIP_OPTION",
    "DP_CLIP_STEP",
    "EVALUATION_OFF",
    "LEDGER_KEY",
    "LOCAL_DP_STEP",
    "MECHANISM_KINDS",
    "NOISE_SOURCES",
    "PLD_DISCRETIZATION",
    "PRIVACY",
    "PRIVACY_STEPS",
    "BudgetExceeded",
    "ClientPrivacy",
    "KeyedNoise",
    "NoiseSource",
    "PrivacyLedger",
    "PrivacyPlan",
    "PrivateClientTask",
    "PrivateMeanState",
    "RoundMechanism",
    "SecureNoise",
    "SeededNoise",
    "calibrate_noise_multiplier",
    "client_noise",
    "client_privacy",
    "clip_delta",
    "clip_sent",
    "deployed_privacy_plan",
    "dp_event",
    "epsilon",
    "epsilon_of",
    "make_accountant",
    "mechanism_from_options",
    "privacy_client_steps",
    "privacy_plan",
    "privacy_report",
    "private_mean",
    "secure_uniform",
    "server_noise",
    "simulated_client_privacy",
    "update_clip",
    "update_noise_multiplier",
    "with_client_privacy",
    "with_privacy",
]
