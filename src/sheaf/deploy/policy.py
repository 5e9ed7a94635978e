"""The data owner's policy: what a deployed client agrees to do with its data.

A server is another organisation's process, and every byte it sends is a request, never an
order. What is at stake on the client — which rows it keeps for its own test split, how
small a training set and a mini-batch may be, which strategies and client steps it runs,
whether differential privacy is required and with which budget, noise and delta, which
metrics leave it, how many rounds it trains — is decided here, by the data owner, in a
TOML file (``sheaf client --policy policy.toml``) and ``--set section.key=value``
overrides. A task outside the policy is refused with one line that the server records as
this client's refusal; nothing of the data leaves with it.

The defaults suit a client that joins a run it was invited to: its own 20% test split,
no update from fewer than 20 examples or from mini-batches smaller than 8, at most 1,000
rounds of a run, a built-in model of at most 1 GiB, only the training loss and accuracy
shared, and no raw evaluation results from a differentially private run. Differential
privacy is not required by default (the operator chooses whether a run is private); a
hospital sets ``privacy.require`` and ``privacy.budget`` (``examples/heart/policy.toml``).

Example:
    >>> policy = ClientPolicy.from_dict({"privacy": {"require": "local", "budget": 3.0}})
    >>> policy.privacy.require, policy.privacy.budget, policy.data.min_train_examples
    ('local', 3.0, 20)
    >>> ClientPolicy.from_dict({"data": {"test_fraction": 1.5}})
    Traceback (most recent call last):
    ...
    sheaf.core.errors.ConfigError: policy data.test_fraction must be in [0, 1), got 1.5
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sheaf.core.errors import ConfigError
from sheaf.core.toml import literal, read_file

__all__ = [
    "DP_REQUIREMENTS",
    "EVALUATION_SHARING",
    "ClientPolicy",
    "DataPolicy",
    "PrivacyPolicy",
    "SecAggPolicy",
    "SharingPolicy",
    "TrainingPolicy",
    "load_policy",
]

#: What a client may require of a run's differential privacy (``privacy.require``).
DP_REQUIREMENTS = ("none", "central", "local")
#: When a client releases its raw evaluation results (``sharing.evaluation``).
EVALUATION_SHARING = ("always", "never", "unless-private")


def _check(condition: bool, key: str, requirement: str, value: object) -> None:
    if not condition:
        raise ConfigError(f"policy {key} must be {requirement}, got {value!r}")


@dataclass(frozen=True)
class DataPolicy:
    """How the client treats its own rows.

    Attributes:
        dataset: the catalog dataset its file holds ("": whatever the run says).
        test_fraction: the share of its rows it keeps as its own test split (never trained on).
        split_seed: which rows those are; the split depends only on (this seed, the client
            id, the row count). Set it to a simulation's seed to reproduce its split.
        min_train_examples: no update leaves from fewer training examples than this.
        min_batch_size: no update leaves from mini-batches smaller than this.
    """

    dataset: str = ""
    test_fraction: float = 0.2
    split_seed: int = 0
    min_train_examples: int = 20
    min_batch_size: int = 8

    def __post_init__(self) -> None:
        _check(0 <= self.test_fraction < 1, "data.test_fraction", "in [0, 1)", self.test_fraction)
        _check(self.split_seed >= 0, "data.split_seed", ">= 0", self.split_seed)
        _check(self.min_train_examples >= 1, "data.min_train_examples", ">= 1", self.min_train_examples)
        _check(self.min_batch_size >= 1, "data.min_batch_size", ">= 1", self.min_batch_size)


@dataclass(frozen=True)
class TrainingPolicy:
    """What the client agrees to run.

    Attributes:
        max_rounds: it trains in no round numbered past this (0: no limit).
        strategies: the strategies it takes part in (empty: any).
        client_steps: the client steps it runs (``"*"``: every step it holds).
        model: the built-in model it agrees to build ("": whatever the run says).
        hidden: that model's layer widths (empty: whatever the run says).
        max_model_mb: the largest built-in model it builds, in MiB (its tasks are bounded
            by its own model's size).
        threads: torch threads it trains with.
    """

    max_rounds: int = 1000
    strategies: tuple[str, ...] = ()
    client_steps: tuple[str, ...] = ("*",)
    model: str = ""
    hidden: tuple[int, ...] = ()
    max_model_mb: float = 1024.0
    threads: int = 1

    def __post_init__(self) -> None:
        _check(self.max_rounds >= 0, "training.max_rounds", ">= 0 (0: no limit)", self.max_rounds)
        _check(self.max_model_mb > 0, "training.max_model_mb", "> 0", self.max_model_mb)
        _check(all(h >= 1 for h in self.hidden), "training.hidden", "a list of widths >= 1", self.hidden)
        _check(self.threads >= 1, "training.threads", ">= 1", self.threads)

    def allows_step(self, name: str) -> bool:
        """Whether the policy lets the client run the client step ``name``."""
        return "*" in self.client_steps or name in self.client_steps


@dataclass(frozen=True)
class PrivacyPolicy:
    """The client's own differential privacy: its requirement, budget, delta and noise.

    Attributes:
        require: ``none``; ``central`` (train only in rounds the server declares
            differentially private, or in which the client noises its update itself); or
            ``local`` (always clip and noise its own update with ``clip`` and
            ``noise_multiplier``, whatever the server asks).
        budget: its epsilon limit over every round it takes part in, across runs (0: none).
        delta: the delta its epsilon is measured at.
        accountant: ``rdp`` or ``pld``.
        noise_multiplier: z of its own local noise (``require = "local"``).
        clip: the L2 norm it clips its update to (``require = "local"``).
    """

    require: str = "none"
    budget: float = 0.0
    delta: float = 1e-5
    accountant: str = "rdp"
    noise_multiplier: float = 1.0
    clip: float = 1.0

    def __post_init__(self) -> None:
        _check(self.require in DP_REQUIREMENTS, "privacy.require", f"one of {list(DP_REQUIREMENTS)}", self.require)
        _check(self.budget >= 0, "privacy.budget", "an epsilon >= 0 (0: no limit)", self.budget)
        _check(0 < self.delta < 1, "privacy.delta", "in (0, 1)", self.delta)
        _check(self.accountant in ("rdp", "pld"), "privacy.accountant", "one of ['rdp', 'pld']", self.accountant)
        _check(self.noise_multiplier > 0, "privacy.noise_multiplier", "> 0", self.noise_multiplier)
        _check(self.clip > 0, "privacy.clip", "> 0", self.clip)

    @property
    def private(self) -> bool:
        """Whether the client treats every run it joins as private."""
        return self.require != "none" or self.budget > 0


@dataclass(frozen=True)
class SecAggPolicy:
    """Whether and how the client takes part in secure aggregation (SecAgg+).

    A server's protocol setup is a request: the client refuses one whose sum could hold
    fewer inputs than ``min_survivors``, or whose secrets fewer than ``min_threshold`` of
    its neighbours could rebuild (a low threshold lets fewer colluders with the server
    unmask it). Under its ``[privacy]`` requirement or budget it takes part only in rounds
    with distributed noise, and charges its ledger for the noise of ``T - 1`` other
    survivors, the fewest a sum it helps unmask can hold (it refuses to unmask fewer).

    Attributes:
        accept: whether it takes part in secure aggregation at all.
        min_survivors: the fewest inputs a sum holding its own may have (T; at least 3).
        min_threshold: the smallest share of its neighbours that must rebuild its secrets.
    """

    accept: bool = True
    min_survivors: int = 3
    min_threshold: float = 0.5

    def __post_init__(self) -> None:
        _check(self.min_survivors >= 3, "secagg.min_survivors", ">= 3", self.min_survivors)
        _check(0 < self.min_threshold < 1, "secagg.min_threshold", "in (0, 1)", self.min_threshold)


@dataclass(frozen=True)
class SharingPolicy:
    """What the client lets leave besides its update.

    Attributes:
        metrics: the names of its task's metrics it shares (training and evaluation);
            metrics the client steps it agreed to run report are part of those steps.
        evaluation: when it releases raw evaluation results (loss, metrics, test-set
            size): ``always``, ``never``, or ``unless-private`` (not in a run the server
            declares private, nor when its own policy asks for differential privacy).
    """

    metrics: tuple[str, ...] = ("train_loss", "accuracy")
    evaluation: str = "unless-private"

    def __post_init__(self) -> None:
        _check(
            self.evaluation in EVALUATION_SHARING,
            "sharing.evaluation",
            f"one of {list(EVALUATION_SHARING)}",
            self.evaluation,
        )


@dataclass(frozen=True)
class ClientPolicy:
    """A data owner's whole policy (see the module docstring)."""

    data: DataPolicy = field(default_factory=DataPolicy)
    training: TrainingPolicy = field(default_factory=TrainingPolicy)
    privacy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    sharing: SharingPolicy = field(default_factory=SharingPolicy)
    secagg: SecAggPolicy = field(default_factory=SecAggPolicy)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ClientPolicy:
        """Build and check a policy from nested sections.

        Raises:
            ConfigError: on an unknown section or key, a wrong type or a value out of range.
        """
        sections: dict[str, Any] = {}
        for name, value in raw.items():
            if name not in _SECTIONS:
                raise ConfigError(f"unknown policy section {name!r}; sections: {', '.join(_SECTIONS)}")
            if not isinstance(value, Mapping):
                raise ConfigError(f"policy section {name!r} must be a table of settings, got {value!r}")
            sections[name] = _section(_SECTIONS[name], value, name)
        return cls(**sections)

    def to_dict(self) -> dict[str, Any]:
        """The policy as nested plain values (what ``--policy`` files hold)."""
        return dataclasses.asdict(self)


_SECTIONS: dict[str, type[Any]] = {
    "data": DataPolicy,
    "training": TrainingPolicy,
    "privacy": PrivacyPolicy,
    "sharing": SharingPolicy,
    "secagg": SecAggPolicy,
}


def _value(value: Any, annotation: Any, key: str) -> Any:
    if typing.get_origin(annotation) is tuple:
        item = typing.get_args(annotation)[0]
        if isinstance(value, list | tuple):
            return tuple(_value(v, item, key) for v in value)
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is str and isinstance(value, str):
        return value
    name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"policy {key} must be of type {name}, got {value!r}")


def _section(cls: type[Any], raw: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        if key not in hints:
            raise ConfigError(f"unknown policy key {prefix}.{key}; keys of [{prefix}]: {', '.join(hints)}")
        values[key] = _value(value, hints[key], f"{prefix}.{key}")
    return cls(**values)


def load_policy(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ClientPolicy:
    """A client's policy from a TOML file (or the defaults) and ``section.key=value`` overrides.

    Raises:
        ConfigError: if the file is missing or not valid TOML, or a setting is invalid.
    """
    raw = {} if path is None else read_file(path, "policy file")
    for item in overrides:
        key, sep, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name or "." in name:
            raise ConfigError(f"policy override {item!r} must look like section.key=value, e.g. privacy.budget=3")
        if section not in _SECTIONS:
            raise ConfigError(f"unknown policy section {section!r}; sections: {', '.join(_SECTIONS)}")
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"policy section {section!r} must be a table of settings, got {table!r}")
        table[name] = literal(text.strip())
    return ClientPolicy.from_dict(raw)
