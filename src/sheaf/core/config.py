"""The run configuration: typed, frozen, loaded from TOML and ``key=value`` overrides.

A run is described by one :class:`RunConfig`, grouped in sections (``data``, ``model``,
``train``, ``strategy``, ``evaluation``, ``engine``, ``attack``, ``personalization``, ``privacy``,
``secagg``, ``compression``, ``server`` for deployed runs, ``devices`` and ``asynchronous``
for simulated devices and FedBuff). Every key is checked: an unknown or misspelt key,
a value of the wrong type or out of range is a :class:`~sheaf.core.errors.ConfigError`
whose message names the key and what would be valid.

Overrides use dotted keys (``data.alpha=0.3``); a bare key that names exactly one setting
may drop its section (``alpha=0.3``, ``epochs=2``), and a section name set to a string sets
that section's ``name`` (``strategy=fedavg``). Values are parsed as TOML literals, so
``hidden=[64, 32]`` and ``federated=false`` work.

Example:
    >>> cfg = load_config(overrides=["rounds=5", "alpha=0.3", "strategy=fedavg"])
    >>> cfg.rounds, cfg.data.alpha, cfg.strategy.name
    (5, 0.3, 'fedavg')
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sheaf.core.checks import check_setting as _check
from sheaf.core.clock_config import AsyncConfig, DevicesConfig
from sheaf.core.errors import ConfigError
from sheaf.core.schedule import decayed_lr
from sheaf.core.toml import literal, read_file
from sheaf.core.update import MAX_EXAMPLES, Scalar

__all__ = [
    "ATTACKS",
    "ENCODERS",
    "PRIVACY_MODES",
    "SAMPLINGS",
    "SECAGG_DP",
    "AsyncConfig",
    "AttackConfig",
    "CompressionConfig",
    "DataConfig",
    "DevicesConfig",
    "EngineConfig",
    "EvalConfig",
    "ModelConfig",
    "PersonalizationConfig",
    "PrivacyConfig",
    "RunConfig",
    "SecAggConfig",
    "ServerConfig",
    "StrategyConfig",
    "TrainConfig",
    "apply_overrides",
    "chosen_dataset",
    "load_config",
    "merge_settings",
]


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and how it is split over clients.

    Attributes:
        dataset: a name from ``sheaf datasets``.
        partition: ``iid``, ``dirichlet`` (label skew), ``shards`` (k label shards per
            client), ``quantity`` (log-normal sizes, IID labels) or ``natural`` (one
            client per value of the dataset's natural key, e.g. hospital).
        clients: number of clients (for ``natural``: must match the number of groups, or 0
            to take it from the data).
        alpha: Dirichlet concentration for ``dirichlet``; smaller is more skewed.
        shards_per_client: label shards per client for ``shards``.
        sigma: log-normal sigma of client sizes for ``quantity``.
        min_samples: the fewest samples any client may hold.
        test_fraction: share of each client's samples kept as its local test split.
        central_test_fraction: share of the dataset held out as the central test set
            (datasets whose test set is the union of the clients' splits ignore it).
        preprocessing: for tabular datasets, ``local`` (each client fits the pipeline on
            its own training rows) or ``federated`` (one pipeline fitted from statistics
            merged over every client's training rows, then used by all).
    """

    dataset: str = "digits"
    partition: str = "dirichlet"
    clients: int = 20
    alpha: float = 0.5
    shards_per_client: int = 2
    sigma: float = 1.0
    min_samples: int = 2
    test_fraction: float = 0.2
    central_test_fraction: float = 0.2
    preprocessing: str = "local"

    def __post_init__(self) -> None:
        _check(self.clients >= 0, "data.clients", ">= 1 (or 0 for natural partitions)", self.clients)
        _check(self.alpha > 0, "data.alpha", "> 0 for Dirichlet partitioning", self.alpha)
        _check(self.shards_per_client >= 1, "data.shards_per_client", ">= 1", self.shards_per_client)
        _check(self.sigma >= 0, "data.sigma", ">= 0", self.sigma)
        _check(self.min_samples >= 1, "data.min_samples", ">= 1", self.min_samples)
        _check(0 <= self.test_fraction < 1, "data.test_fraction", "in [0, 1)", self.test_fraction)
        _check(
            0 < self.central_test_fraction < 1,
            "data.central_test_fraction",
            "in (0, 1)",
            self.central_test_fraction,
        )
        _check(
            self.preprocessing in ("local", "federated"),
            "data.preprocessing",
            "one of: local, federated",
            self.preprocessing,
        )


@dataclass(frozen=True)
class ModelConfig:
    """The built-in model, used when no custom ``task`` is given.

    Attributes:
        name: ``mlp``, ``logreg`` (multinomial logistic regression), ``cnn`` (two 5x5
            convolutions for images) or ``char_lstm`` (characters in, the next out).
        hidden: hidden layer widths of the MLP; the LSTM's layer widths for ``char_lstm``.
    """

    name: str = "mlp"
    hidden: tuple[int, ...] = (64,)

    def __post_init__(self) -> None:
        _check(all(h >= 1 for h in self.hidden), "model.hidden", "a list of widths >= 1", self.hidden)


@dataclass(frozen=True)
class TrainConfig:
    """Local training on each client.

    Attributes:
        epochs: passes over the client's training split per round.
        batch_size: mini-batch size.
        lr: learning rate of the client optimiser.
        optimizer: ``sgd`` or ``adam``.
        momentum: SGD momentum.
        weight_decay: L2 penalty of the client optimiser.
        lr_decay: the learning rate's decay per round: clients train in round ``t`` with
            ``lr * lr_decay ** (t - 1)`` (1: a constant rate). The server applies it when it
            sends a round's settings (:meth:`for_round`), so every backend and deployed
            client trains with the same rate.
    """

    epochs: int = 2
    batch_size: int = 10
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_decay: float = 1.0

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "train.epochs", ">= 1", self.epochs)
        _check(self.batch_size >= 1, "train.batch_size", ">= 1", self.batch_size)
        _check(self.lr > 0, "train.lr", "> 0", self.lr)
        _check(self.optimizer in ("sgd", "adam"), "train.optimizer", "one of: sgd, adam", self.optimizer)
        _check(0 <= self.momentum < 1, "train.momentum", "in [0, 1)", self.momentum)
        _check(self.weight_decay >= 0, "train.weight_decay", ">= 0", self.weight_decay)
        _check(0 < self.lr_decay <= 1, "train.lr_decay", "in (0, 1] (1: a constant learning rate)", self.lr_decay)

    def for_round(self, round: int) -> TrainConfig:
        """The settings clients train with in ``round`` (1-based): the decayed learning rate.

        Example:
            >>> TrainConfig(lr=0.1, lr_decay=0.5).for_round(3).lr
            0.025
        """
        return dataclasses.replace(self, lr=decayed_lr(self.lr, self.lr_decay, round), lr_decay=1.0)


#: How a round's clients are drawn (``strategy.sampling``).
SAMPLINGS = ("fixed", "poisson")


@dataclass(frozen=True)
class StrategyConfig:
    """How the server picks clients and aggregates their updates.

    Attributes:
        name: a strategy from ``sheaf.strategies.available_strategies()``.
        fraction: share of clients sampled each round, in (0, 1].
        min_clients: the fewest clients sampled per round, and the fewest successful
            updates a round needs to be aggregated.
        sampling: ``fixed`` (a uniform subset of ``max(min_clients, ceil(fraction * N))``
            clients) or ``poisson`` (every client independently with probability
            ``fraction``: what the privacy accountant's amplification by sampling assumes).
        options: the strategy's own hyperparameters (any other key of the section).
    """

    name: str = "fedavg"
    fraction: float = 0.5
    min_clients: int = 2
    sampling: str = "fixed"
    options: Mapping[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(0 < self.fraction <= 1, "strategy.fraction", "in (0, 1]", self.fraction)
        _check(self.min_clients >= 1, "strategy.min_clients", ">= 1", self.min_clients)
        _check(self.sampling in SAMPLINGS, "strategy.sampling", f"one of: {', '.join(SAMPLINGS)}", self.sampling)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation of the global model.

    Attributes:
        interval: federated evaluation on the clients' local test splits every this many
            rounds, and always after the last round.
        federated: ``"auto"`` (the default): on, unless the run is differentially private
            (each client's raw test loss, accuracy and test-set size would leave it outside
            the privacy mechanism); ``true`` or ``false`` to choose (``true`` under
            differential privacy is refused: see ``docs/privacy.md``).
        max_clients: federated evaluation uses at most this many clients: a fixed sample,
            drawn once from the run seed, of the clients with a local test split (0: all).
            Keeps evaluation bounded in federations of a million clients.
        monitor: if > 0, central evaluations (every ``central_interval`` rounds) use a fixed
            subset of this many evenly spaced rows of the central test set
            (``RoundRecord.monitor``), to watch progress cheaply, and the whole central test
            set only after the last round (``RoundRecord.central``, the figure every
            headline shows); 0: the whole set each time.
        central_interval: central evaluation (on the server's test set, or its ``monitor``
            subset) every this many rounds, and always after the last round.
        shard_rows: central evaluation cuts the central test set into shards of this many
            rows, evaluated in parallel where the backend has workers and combined
            exactly, so the result is the same on every backend (0: one shard, in the
            run's own process; see ``sheaf.evaluation.central``).
    """

    interval: int = 5
    federated: bool | str = "auto"
    max_clients: int = 10_000
    monitor: int = 0
    central_interval: int = 1
    shard_rows: int = 1000

    def __post_init__(self) -> None:
        _check(self.interval >= 1, "evaluation.interval", ">= 1", self.interval)
        _check(
            isinstance(self.federated, bool) or self.federated == "auto",
            "evaluation.federated",
            "true, false or auto (on unless the run is differentially private)",
            self.federated,
        )
        _check(self.max_clients >= 0, "evaluation.max_clients", ">= 0 (0: all clients)", self.max_clients)
        _check(self.monitor >= 0, "evaluation.monitor", ">= 0 (0: the whole central test set each time)", self.monitor)
        _check(self.central_interval >= 1, "evaluation.central_interval", ">= 1", self.central_interval)
        _check(self.shard_rows >= 0, "evaluation.shard_rows", ">= 0 (0: one shard)", self.shard_rows)


@dataclass(frozen=True)
class EngineConfig:
    """How the simulation backends run client work.

    Attributes:
        workers: worker processes of the ``pool`` backend (Ray actors of ``ray``); 0 uses
            one per available core, divided by ``threads``.
        memory_mb: the ``vectorized`` backend trains as many clients at once as fit in this
            many MiB (parameters, gradients, optimiser state, batch activations).
        ray_address: the Ray cluster the ``ray`` backend joins; empty starts a local one.
        client_timeout: seconds one client may train or evaluate in a ``pool`` worker or
            Ray actor before the worker is killed, replaced and the client counted as a
            dropout; 0 waits as long as it takes.
        device: where TorchTask computes: ``cpu`` (the default, so that a config gives
            the same model on every machine), ``auto`` (a CUDA GPU if torch sees one, else
            the CPU), ``cuda`` (every GPU: the pool deals its workers over them) or
            ``cuda:N``. Results depend on it, as on ``threads`` (see
            ``sheaf.task.device``); the device a run used is recorded with it.
    """

    workers: int = 0
    memory_mb: int = 1024
    ray_address: str = ""
    client_timeout: float = 0.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        _check(
            isinstance(self.device, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
            "engine.device",
            "auto, cpu, cuda or cuda:N",
            self.device,
        )
        _check(self.workers >= 0, "engine.workers", ">= 0 (0: one per core)", self.workers)
        _check(self.memory_mb >= 1, "engine.memory_mb", ">= 1", self.memory_mb)
        _check(self.client_timeout >= 0, "engine.client_timeout", ">= 0 (0: no limit)", self.client_timeout)


#: Simulated attacks a malicious client can mount (``attack.name``).
ATTACKS = ("none", "sign_flip", "scale", "gaussian", "label_flip")


@dataclass(frozen=True)
class AttackConfig:
    """Simulated malicious clients, to evaluate defences (simulation only).

    Attributes:
        name: ``none``; ``sign_flip`` (send ``-scale`` times the honest update); ``scale``
            (send ``scale`` times it); ``gaussian`` (send Gaussian noise of standard
            deviation ``noise_std`` instead); ``label_flip`` (train on labels
            ``num_classes - 1 - y``).
        malicious_fraction: share of the clients that are malicious.
        per_round: false (default): ``malicious_fraction`` of ALL clients are malicious,
            chosen once from the seed, so a round holds however many of them were sampled;
            true: exactly ``round(malicious_fraction * cohort)`` of EACH round's sampled
            clients are malicious, chosen from (seed, round) — the setting in which robust
            aggregators state their guarantee (f attackers among the n updates of a round).
        scale: the factor of ``sign_flip`` and ``scale``.
        noise_std: the standard deviation of ``gaussian``.
    """

    name: str = "none"
    malicious_fraction: float = 0.2
    per_round: bool = False
    scale: float = 10.0
    noise_std: float = 1.0

    def __post_init__(self) -> None:
        _check(self.name in ATTACKS, "attack.name", f"one of: {', '.join(ATTACKS)}", self.name)
        _check(0 <= self.malicious_fraction <= 1, "attack.malicious_fraction", "in [0, 1]", self.malicious_fraction)
        _check(self.scale > 0, "attack.scale", "> 0", self.scale)
        _check(self.noise_std > 0, "attack.noise_std", "> 0", self.noise_std)


@dataclass(frozen=True)
class PersonalizationConfig:
    """Personalised evaluation: each client's model after local fine-tuning.

    Attributes:
        finetune_steps: k; on federated-evaluation rounds every client also evaluates the
            global model after k mini-batch steps on its own training split, reported
            beside the global model's figures (0: off, unless the strategy keeps personal
            layers, e.g. FedPer, which is then evaluated with each client's own layers).
        finetune_lr: learning rate of the fine-tuning steps (0: ``train.lr``).
    """

    finetune_steps: int = 0
    finetune_lr: float = 0.0

    def __post_init__(self) -> None:
        _check(self.finetune_steps >= 0, "personalization.finetune_steps", ">= 0", self.finetune_steps)
        _check(self.finetune_lr >= 0, "personalization.finetune_lr", ">= 0 (0: train.lr)", self.finetune_lr)


#: Where differential privacy is applied (``privacy.mode``).
PRIVACY_MODES = ("none", "central", "local")


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential privacy of the clients (client-level: a client's whole data is the unit).

    See ``docs/privacy.md``. ``central`` is DP-FedAvg (McMahan et al. 2018): updates are
    clipped to L2 norm ``clip`` (by the server, or by the clients with ``clipping =
    "client"``), averaged with a fixed denominator and noised on the server; ``local``: every
    client clips and noises its own update before it leaves.

    Attributes:
        mode: ``none``, ``central`` or ``local``.
        clipping: ``server`` or ``client`` (central mode; local mode always clips on the client).
        clip: the L2 clip norm C (the starting value with adaptive clipping).
        noise_multiplier: z; the noise's standard deviation is ``z * C`` on the sum of the
            clipped updates (central) or on each update (local).
        target_epsilon: if > 0, choose z so that ``rounds`` rounds spend this epsilon at
            ``delta`` (overrides ``noise_multiplier``).
        delta: the delta epsilon is reported at.
        accountant: ``rdp`` or ``pld`` (dp-accounting's Rényi DP or privacy-loss-distribution
            accountant).
        adaptive_clip: let C track the ``target_quantile`` of update norms (Andrew et al. 2021).
        target_quantile: the quantile adaptive clipping aims at.
        clip_lr: the learning rate of adaptive clipping's geometric update.
        count_stddev: noise on the count of unclipped updates (0: the larger of expected cohort / 20 and the noise multiplier).
        noise: ``seeded`` (reproducible from the run seed: simulation) or ``secure`` (from
            the operating system's cryptographic generator: deployment).
        client_budget: the epsilon limit of every client (0: none); a client past it refuses.
        client_budgets: epsilon limits of single clients, ``{client id = epsilon}``.
    """

    mode: str = "none"
    clipping: str = "server"
    clip: float = 1.0
    noise_multiplier: float = 1.0
    target_epsilon: float = 0.0
    delta: float = 1e-5
    accountant: str = "rdp"
    adaptive_clip: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    count_stddev: float = 0.0
    noise: str = "seeded"
    client_budget: float = 0.0
    client_budgets: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.mode in PRIVACY_MODES, "privacy.mode", f"one of: {', '.join(PRIVACY_MODES)}", self.mode)
        _check(self.clipping in ("server", "client"), "privacy.clipping", "one of: server, client", self.clipping)
        _check(self.clip > 0, "privacy.clip", "> 0", self.clip)
        _check(self.noise_multiplier >= 0, "privacy.noise_multiplier", ">= 0", self.noise_multiplier)
        _check(
            self.target_epsilon >= 0, "privacy.target_epsilon", ">= 0 (0: use noise_multiplier)", self.target_epsilon
        )
        _check(0 < self.delta < 1, "privacy.delta", "in (0, 1)", self.delta)
        _check(self.accountant in ("rdp", "pld"), "privacy.accountant", "one of: rdp, pld", self.accountant)
        _check(0 < self.target_quantile < 1, "privacy.target_quantile", "in (0, 1)", self.target_quantile)
        _check(self.clip_lr > 0, "privacy.clip_lr", "> 0", self.clip_lr)
        _check(
            self.count_stddev >= 0,
            "privacy.count_stddev",
            ">= 0 (0: the larger of expected cohort / 20 and the noise multiplier)",
            self.count_stddev,
        )
        _check(self.noise in ("seeded", "secure"), "privacy.noise", "one of: seeded, secure", self.noise)
        _check(self.client_budget >= 0, "privacy.client_budget", ">= 0 (0: no limit)", self.client_budget)
        _check(
            isinstance(self.client_budgets, Mapping),
            "privacy.client_budgets",
            "a table {id = epsilon}",
            self.client_budgets,
        )
        for key, value in self.client_budgets.items():
            _check(str(key).isdigit(), "privacy.client_budgets", "keyed by client ids (whole numbers >= 0)", key)
            _check(
                not isinstance(value, bool) and isinstance(value, int | float) and value > 0,
                f"privacy.client_budgets.{key}",
                "an epsilon > 0",
                value,
            )


#: Differential privacy under secure aggregation (``secagg.dp``).
SECAGG_DP = ("none", "distributed")


@dataclass(frozen=True)
class SecAggConfig:
    """Secure aggregation (SecAgg+): the server learns only the sum of the updates.

    See ``docs/secure-aggregation.md``. Clients quantise their update into the ring
    Z_{2^bits}, mask it, and the server unmasks only the sum of the clients that got
    through; with ``dp = "distributed"`` each client also adds its share of discrete
    Gaussian noise, so the server never holds an un-noised sum (the noise, clip, delta and
    target epsilon are ``[privacy]``'s ``noise_multiplier``, ``target_epsilon``, ``clip``,
    ``delta`` and ``noise``; ``privacy.mode`` stays ``none``).

    Attributes:
        enabled: run every round through secure aggregation.
        dp: ``none`` or ``distributed`` (the clients add the noise: distributed discrete Gaussian).
        bits: the ring is Z_{2^bits} (up to 32): what each coordinate costs on the wire.
        norm_bound: without ``dp``, each update is clipped to this L2 norm before it is
            weighted, so that the sum cannot wrap around the ring (with ``dp``: ``privacy.clip``).
        max_weight: without ``dp``, a client's weight (its examples) is capped at this.
        threshold: a client's secrets are shared among its k neighbours with threshold
            ``ceil(threshold * k)``; a round needs one client more than that at every stage.
        max_dropout: the dropout rate the neighbour graph is planned for (k is chosen so
            that a round at this rate fails with probability below 2**-20).
        degree: neighbours per client (0: chosen from ``max_dropout``; the cohort size
            minus one is SecAgg's complete graph).
        dropout: simulation only: every client drops out during the protocol with this
            probability, at a stage drawn uniformly (keys, shares, masked input,
            signature, unmasking).
        stand_in: simulation only: replace the cryptographic protocol by its exact
            stand-in (the same survivors, aborts and sum, bit for bit; much faster).
    """

    enabled: bool = False
    dp: str = "none"
    bits: int = 32
    norm_bound: float = 10.0
    max_weight: int = 1000
    threshold: float = 0.5
    max_dropout: float = 0.1
    degree: int = 0
    dropout: float = 0.0
    stand_in: bool = False

    def __post_init__(self) -> None:
        _check(self.dp in SECAGG_DP, "secagg.dp", f"one of: {', '.join(SECAGG_DP)}", self.dp)
        _check(8 <= self.bits <= 32, "secagg.bits", "in 8..32", self.bits)
        _check(self.norm_bound > 0, "secagg.norm_bound", "> 0", self.norm_bound)
        _check(1 <= self.max_weight <= MAX_EXAMPLES, "secagg.max_weight", f"in 1..{MAX_EXAMPLES}", self.max_weight)
        _check(0 < self.threshold < 1, "secagg.threshold", "in (0, 1)", self.threshold)
        _check(0 <= self.max_dropout < 1, "secagg.max_dropout", "in [0, 1)", self.max_dropout)
        _check(
            self.degree == 0 or (self.degree >= 2 and self.degree % 2 == 0),
            "secagg.degree",
            "0 (automatic) or an even number >= 2",
            self.degree,
        )
        _check(0 <= self.dropout < 1, "secagg.dropout", "in [0, 1)", self.dropout)


#: Update encoders (``compression.encoder``, ``compression.download``).
ENCODERS = ("none", "fp16", "bf16", "q8", "q4", "q2", "topk")


@dataclass(frozen=True)
class CompressionConfig:
    """Update compression: what clients upload, and what they download (``docs/compression.md``).

    Attributes:
        encoder: how each client encodes its update: ``none`` (float32 deltas), ``fp16`` or
            ``bf16`` (half-precision floats), ``q8``, ``q4``, ``q2`` (stochastic uniform
            quantisation to 8, 4 or 2 bits, one float32 range per 512 coordinates), or
            ``topk`` (the ``k`` largest coordinates and a bitmap of where they are).
        rotate: rotate each update with the round's randomised Hadamard transform before
            quantising it (``q8``, ``q4``, ``q2``; Suresh et al. 2017).
        k: ``topk``: the share of coordinates each client sends, in (0, 1].
        error_feedback: ``auto`` (on for ``topk``, off for the unbiased encoders), ``on`` or
            ``off``: each client keeps what its encoding left out and adds it to its next
            update (Stich et al. 2018); kept in the client's own state.
        download: how the server's model moves, so that clients can be sent the quantised
            round deltas they missed instead of the whole model (simulation): ``none``, or
            an encoder name; the server keeps what its own encoding left out (error feedback).
    """

    encoder: str = "none"
    rotate: bool = False
    k: float = 0.1
    error_feedback: str = "auto"
    download: str = "none"

    def __post_init__(self) -> None:
        _check(self.encoder in ENCODERS, "compression.encoder", f"one of: {', '.join(ENCODERS)}", self.encoder)
        _check(0 < self.k <= 1, "compression.k", "in (0, 1]", self.k)
        _check(
            self.error_feedback in ("auto", "on", "off"),
            "compression.error_feedback",
            "one of: auto, on, off",
            self.error_feedback,
        )
        _check(self.download in ENCODERS, "compression.download", f"one of: {', '.join(ENCODERS)}", self.download)
        _check(
            not self.rotate or self.encoder in ("q8", "q4", "q2") or self.download in ("q8", "q4", "q2"),
            "compression.rotate",
            "set only with a quantising encoder (q8, q4, q2)",
            self.rotate,
        )

    @property
    def enabled(self) -> bool:
        """Whether updates are encoded (``encoder`` is not ``none``)."""
        return self.encoder != "none"


@dataclass(frozen=True)
class ServerConfig:
    """How a deployed server (``sheaf server``) runs its rounds; simulations ignore it.

    Attributes:
        round_timeout: seconds a round (or an evaluation) waits for its clients' results;
            a client that has not answered by then has dropped out of it.
        heartbeat_interval: seconds between a connected client's heartbeats.
        heartbeat_timeout: a client silent for this long is taken as gone: its pending work
            counts as a dropout at once rather than at the round timeout.
        max_update_mb: the largest update (delta and extras) accepted, in MiB; 0 accepts
            up to twice the model's size.
        max_update_norm: reject an update whose delta has a larger L2 norm; 0: no bound.
        max_examples: the most examples a client may claim for an update (its weight in
            FedAvg), unless its key's line in the authorised-clients file declares its own;
            a larger claim is refused.
        max_norm_ratio: reject an update whose delta is longer than this many times the
            median length of the updates aggregated in the previous round (before any
            round was aggregated: than this many times the model's own scale; 0: off).
            With ``max_examples`` it bounds what one client can move the model by,
            whatever it claims; honest updates stay well within it. The relative bound is
            not applied under central differential privacy, whose clip norm bounds every
            update: a bound learnt from earlier rounds' raw updates would make who counts
            depend on who took part before.
        min_clients_wait: seconds a round whose cohort has fewer than
            ``strategy.min_clients`` clients connected waits for them to (re)join before
            it runs anyway (and is skipped if they are still missing); 0: no wait.
    """

    round_timeout: float = 300.0
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 30.0
    max_update_mb: float = 0.0
    max_update_norm: float = 0.0
    max_examples: int = 100_000
    max_norm_ratio: float = 10.0
    min_clients_wait: float = 600.0

    def __post_init__(self) -> None:
        _check(self.round_timeout > 0, "server.round_timeout", "> 0 seconds", self.round_timeout)
        _check(self.heartbeat_interval > 0, "server.heartbeat_interval", "> 0 seconds", self.heartbeat_interval)
        _check(
            self.heartbeat_timeout > self.heartbeat_interval,
            "server.heartbeat_timeout",
            f"longer than server.heartbeat_interval ({self.heartbeat_interval})",
            self.heartbeat_timeout,
        )
        _check(self.max_update_mb >= 0, "server.max_update_mb", ">= 0 (0: twice the model size)", self.max_update_mb)
        _check(self.max_update_norm >= 0, "server.max_update_norm", ">= 0 (0: no bound)", self.max_update_norm)
        _check(
            isinstance(self.max_examples, int) and 1 <= self.max_examples <= MAX_EXAMPLES,
            "server.max_examples",
            f"a whole number from 1 to {MAX_EXAMPLES}",
            self.max_examples,
        )
        _check(
            self.max_norm_ratio == 0 or self.max_norm_ratio >= 1,
            "server.max_norm_ratio",
            ">= 1 (0: off)",
            self.max_norm_ratio,
        )
        _check(
            math.isfinite(self.min_clients_wait) and self.min_clients_wait >= 0,
            "server.min_clients_wait",
            ">= 0 seconds (0: no wait)",
            self.min_clients_wait,
        )


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; the same config and seed give the same model.

    The defaults are the quickstart: digits over 20 clients (Dirichlet 0.5), half of them
    per round, FedAvg, 60 rounds of 2 local epochs (SGD, lr 0.05, momentum 0.9, batch 10).

    Attributes:
        seed: the root of every random stream in the run.
        rounds: number of federated rounds.
        backend: where client work runs: ``auto`` (vectorized where the task allows and
            the model is small, else pool, else inline), ``inline``, ``pool``,
            ``vectorized`` or ``ray`` (see ``docs/backends.md``).
        threads: torch threads per worker; fixed so results are reproducible.
        task: optional ``module:attr`` naming a custom Task (or a factory taking the
            dataset's :class:`~sheaf.data.DatasetInfo`); empty uses the built-in model.
        name: run name; the run is stored at ``runs_dir/name.sqlite``. Empty: derived
            from the dataset, strategy and time.
        runs_dir: folder for run stores.
        keep_params: keep the global params of only the last this many rounds (0: all).
        devices: simulated devices and the virtual clock (:class:`DevicesConfig`).
        asynchronous: FedBuff's buffered asynchronous aggregation (:class:`AsyncConfig`).
    """

    seed: int = 0
    rounds: int = 60
    backend: str = "auto"
    threads: int = 1
    task: str = ""
    name: str = ""
    runs_dir: str = "runs"
    keep_params: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    personalization: PersonalizationConfig = field(default_factory=PersonalizationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    asynchronous: AsyncConfig = field(default_factory=AsyncConfig)

    def __post_init__(self) -> None:
        _check(self.seed >= 0, "seed", ">= 0", self.seed)
        _check(self.rounds >= 1, "rounds", ">= 1", self.rounds)
        _check(self.threads >= 1, "threads", ">= 1", self.threads)
        _check(self.keep_params >= 0, "keep_params", ">= 0", self.keep_params)

    @property
    def federated_evaluation(self) -> bool:
        """Whether clients evaluate the global model on their local test splits:
        ``evaluation.federated``, where ``auto`` means on unless ``privacy.mode`` is set."""
        chosen = self.evaluation.federated
        return chosen if isinstance(chosen, bool) else self.privacy.mode == "none"

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (JSON/TOML-ready); strategy options sit in their section."""
        out = dataclasses.asdict(self)
        strategy = out["strategy"]
        strategy.update(strategy.pop("options"))
        out["model"]["hidden"] = list(self.model.hidden)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunConfig:
        """Build and validate a config from a nested mapping.

        Raises:
            ConfigError: on an unknown key, a wrong type or a value out of range.
        """
        return _build(cls, raw, "")

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with top-level fields replaced (sections are replaced whole)."""
        return dataclasses.replace(self, **changes)


_SECTIONS: dict[str, type[Any]] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "strategy": StrategyConfig,
    "evaluation": EvalConfig,
    "engine": EngineConfig,
    "attack": AttackConfig,
    "personalization": PersonalizationConfig,
    "privacy": PrivacyConfig,
    "secagg": SecAggConfig,
    "compression": CompressionConfig,
    "server": ServerConfig,
    "devices": DevicesConfig,
    "asynchronous": AsyncConfig,
}

T = TypeVar("T")


def _unknown_key(key: str, valid: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint} valid keys here: {', '.join(sorted(valid))}")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        item = typing.get_args(annotation)[0]
        if isinstance(value, list | tuple):
            return tuple(_coerce(v, item, key) for v in value)
        if isinstance(value, int) and not isinstance(value, bool):
            return (_coerce(value, item, key),)
    elif origin in (Mapping, dict) or origin is types.UnionType:
        return value
    raise ConfigError(f"{key} must be of type {getattr(annotation, '__name__', annotation)}, got {value!r}")


def _build(cls: type[T], raw: Mapping[str, Any], prefix: str) -> T:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table of settings, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in names or key == "options":
            if cls is StrategyConfig:
                extras[key] = value
                continue
            raise _unknown_key(full, [n for n in names if n != "options"])
        annotation = hints[key]
        if key in _SECTIONS and cls is RunConfig:
            kwargs[key] = _build(_SECTIONS[key], value, f"{key}.")
        else:
            kwargs[key] = _coerce(value, annotation, full)
    if cls is StrategyConfig:
        for key, value in extras.items():
            if not isinstance(value, bool | int | float | str):
                raise ConfigError(f"strategy.{key} must be a number, boolean or string, got {value!r}")
        kwargs["options"] = extras
    return cls(**kwargs)


def _resolve_key(key: str, value: Any) -> tuple[str, ...]:
    parts = tuple(key.split("."))
    if len(parts) > 2 or not all(parts):
        raise ConfigError(f"config key {key!r} must be 'name' or 'section.name'")
    top = [f.name for f in dataclasses.fields(RunConfig) if f.name not in _SECTIONS]
    if len(parts) == 2:
        if parts[0] not in _SECTIONS:
            raise _unknown_key(parts[0], list(_SECTIONS))
        return parts
    (name,) = parts
    if name in top:
        return parts
    if name in _SECTIONS and not isinstance(value, Mapping):
        return (name, "name")
    owners = [
        section
        for section, cls in _SECTIONS.items()
        if name in {f.name for f in dataclasses.fields(cls)} - {"options", "name"}
    ]
    if len(owners) == 1:
        return (owners[0], name)
    if len(owners) > 1:
        raise ConfigError(f"config key {name!r} is ambiguous; write one of: {', '.join(f'{o}.{name}' for o in owners)}")
    valid = top + [f"{s}.{f.name}" for s, c in _SECTIONS.items() for f in dataclasses.fields(c) if f.name != "options"]
    close = difflib.get_close_matches(name, [v.rsplit(".", 1)[-1] for v in valid], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown config key {name!r}{hint} run 'sheaf simulate --help' for the valid keys")


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a nested config mapping (returns a new dict).

    Raises:
        ConfigError: if an override is not of the form ``key=value`` or names no setting.
    """
    out: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value, e.g. rounds=10")
        value = literal(text.strip())
        path = _resolve_key(key.strip(), value)
        if len(path) == 1:
            out[path[0]] = value
        else:
            section = out.setdefault(path[0], {})
            if not isinstance(section, dict):
                raise ConfigError(f"{path[0]} must be a table of settings, got {section!r}")
            section[path[1]] = value
    return out


#: The settings of a section that belong to the section itself, not to the strategy it
#: names: they carry over when ``top`` names another strategy; the others do not.
_SECTION_OWN = {"strategy": ("fraction", "min_clients", "sampling")}


def merge_settings(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top``'s settings over ``base``'s, section by section (a new nested dict).

    Where ``top`` names another strategy than ``base``, ``base``'s hyperparameters of its
    strategy are dropped (they mean nothing, or something else, to the other one); its
    ``fraction``, ``min_clients`` and ``sampling`` stay.

    Example:
        >>> merge_settings({"rounds": 50, "train": {"lr": 0.01, "epochs": 1}}, {"train": {"lr": 0.1}})
        {'rounds': 50, 'train': {'lr': 0.1, 'epochs': 1}}
        >>> merge_settings({"strategy": {"name": "fedavgm", "momentum": 0.9, "fraction": 0.1}},
        ...                {"strategy": {"name": "fedavg"}})
        {'strategy': {'fraction': 0.1, 'name': 'fedavg'}}
    """
    out: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            section: dict[str, Any] = out[key]
            if key in _SECTION_OWN and "name" in value and value["name"] != section.get("name", value["name"]):
                section = {k: v for k, v in section.items() if k in _SECTION_OWN[key]}
            out[key] = {**section, **value}
        else:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def chosen_dataset(raw: Mapping[str, Any]) -> str:
    """The dataset a nested config mapping names (the default one if it names none)."""
    data = raw.get("data")
    name = data.get("dataset") if isinstance(data, Mapping) else None
    return name if isinstance(name, str) else DataConfig.dataset


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    defaults: Callable[[str], Mapping[str, Any]] | None = None,
) -> RunConfig:
    """Load a config from a TOML file (or the defaults) and apply overrides.

    Settings come, lowest first, from :class:`RunConfig`'s defaults, the chosen dataset's
    own defaults (``defaults(dataset)``, e.g. heart's smaller model and learning rate), the
    file, and the overrides: whatever the user sets wins.

    Args:
        path: a TOML file, or None for the defaults (the quickstart).
        overrides: ``key=value`` strings, applied in order.
        defaults: the dataset's recommended settings, by dataset name (None: none).

    Raises:
        ConfigError: if the file is missing or not valid TOML, or any setting is invalid.
    """
    raw = {} if path is None else read_file(path, "config file")
    chosen = apply_overrides(raw, overrides)
    if defaults is not None:
        chosen = merge_settings(defaults(chosen_dataset(chosen)), chosen)
    return RunConfig.from_dict(chosen)
