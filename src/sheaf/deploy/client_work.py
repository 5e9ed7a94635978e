"""What a deployed client does with a task: check it against its own policy, run it, send what may leave.

Every byte of a task is the server's request; the client decides (:mod:`sheaf.deploy.policy`):

- **Before a tensor byte is taken** (:meth:`ClientWork.header_problem`): the task must be
  addressed to this client, its model must be exactly this client's own model (names,
  dtypes, shapes — the client knows its task), and its payload at most the model's size.
  So a task can never make the client allocate more than about twice its own model,
  whatever its header declares.
- **A training task** is refused — a failure result with one line saying why, which the
  server records as this client's refusal; nothing of the data leaves — if its round is
  past ``training.max_rounds`` or not after the last round this client trained in (a
  byte-identical repeat of the last task is answered with the result already sent), if
  the strategy or a client step is not one the policy agrees to, if its mini-batches are
  smaller than ``data.min_batch_size``, if the client holds fewer than
  ``data.min_train_examples`` training rows (or ``local_steps`` would use fewer), or if
  the privacy the policy requires does not hold (below).
- **Privacy is the client's own**: with ``privacy.require = "local"`` it always clips and
  noises its own update (secure noise, its own clip norm and noise multiplier), outermost,
  whatever the server asks, and charges that; a server asking for local noise gets it
  with the parameters the client then charges; a round the server declares centrally
  private is charged as declared. The charge is measured at the client's own delta with
  its own accountant, refused past its own budget, and written to its ledger on disk
  (:mod:`sheaf.deploy.client_ledger`) before the update leaves. A run without
  differential privacy is refused by a client whose policy requires it or has a budget.
- **Secure aggregation** (a fit whose task carries a ``SecAggSetup``): the client checks
  the setup against its ``[secagg]`` policy (its own id in the cohort, at least
  ``min_survivors`` per sum, a threshold of at least ``min_threshold`` of its neighbours,
  a ring that fits its model), draws its rounding and noise from its own CSPRNG, and under
  a DP requirement takes part only with distributed noise, charging its ledger for the
  ``T - 1`` other shares a sum it helps unmask holds at least. Its ring vector stays here
  as the protocol's input; its result carries only its keys (:meth:`ClientWork.protocol_step`
  answers the server's later messages).
- **Evaluation** releases raw results (loss, metrics, test-set size) only as
  ``sharing.evaluation`` allows: by default not in a private run.
- **Metrics** of the client's task leave only if ``sharing.metrics`` names them; the
  metrics of the client steps it agreed to run are part of those steps.

Example:
    >>> PRIVACY_STEP_NAMES
    ('privacy_budget', 'dp_clip', 'local_dp')
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from sheaf.backends.base import RoundWork
from sheaf.backends.client_runner import ClientRunner
from sheaf.compress.step import COMPRESS_STEP
from sheaf.core.errors import ClientFailure, SecAggError, SheafError, TaskError
from sheaf.core.params import Params
from sheaf.core.tensor import ALLOWED_DTYPES
from sheaf.core.update import Scalar, Update
from sheaf.data.dataset import ClientData, Split
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.client_ledger import ClientLedger
from sheaf.deploy.client_state import ClientStateFile
from sheaf.deploy.description import RunDescription
from sheaf.deploy.logs import log_event
from sheaf.deploy.policy import ClientPolicy
from sheaf.deploy.secagg_exchange import max_server_bytes
from sheaf.deploy.wire import ReceivedTask, encode_result
from sheaf.privacy.accountant import RoundMechanism
from sheaf.privacy.client_steps import PRIVACY_STEPS
from sheaf.privacy.plan import CLIP_OPTION, mechanism_from_options
from sheaf.quantize.quantizer import Quantizer
from sheaf.secagg.accounting import rounded_sensitivity
from sheaf.secagg.client import ClientStage, ClientState, client_step, start_client
from sheaf.secagg.messages import (
    AdvertiseKeys,
    ConsistencySignature,
    MaskedInput,
    ShareKeys,
    UnmaskShares,
    decode_message,
    encode_message,
)
from sheaf.secagg.setup import ProtocolSetup
from sheaf.secagg.step import INPUT_GROUP, SECAGG_ENCODE
from sheaf.task.base import EvalResult, FitInstructions, FitResult, Task, prepare_worker
from sheaf.task.client_steps import LOCAL_STEPS, ClientStep, resolve_steps

__all__ = ["PRIVACY_STEP_NAMES", "ClientWork", "task_digest"]

_log = logging.getLogger("sheaf.client")

#: Client steps the client's ``[privacy]`` policy governs (not ``training.client_steps``):
#: it keeps its own budget, and clips and noises as its policy says, with sheaf's own steps.
PRIVACY_STEP_NAMES = tuple(step.name for step in PRIVACY_STEPS)
#: The client step of personalised evaluation: an evaluation, sent as a fit task.
_PERSONALIZED = "finetune_evaluate"
#: Payload tensors beyond the model's own size (small strategy broadcasts, e.g. a round number).
_PAYLOAD_SLACK = 1 << 20
_MAX_GROUPS = 16
#: The largest secure-aggregation cohort a client takes part in.
MAX_COHORT = 1 << 16


def task_digest(header: bytes) -> str:
    """Identifies a task: the digest of its header (which carries its tensors' digest)."""
    return hashlib.sha256(header).hexdigest()


class _Refusal(Exception):
    """The client's policy refuses the task; the message says why."""


class _MetricsSeen:
    """The client's task, noting the names of the metrics it reports while training."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.names: set[str] = set()

    def setup_worker(self, threads: int) -> None:
        prepare_worker(self.task, threads)

    def init_params(self, seed: int) -> Params:
        return self.task.init_params(seed)

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        result = self.task.fit(params, data, instructions)
        self.names.update(result.metrics)
        return result

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return self.task.evaluate(params, data)


def _number(options: Mapping[str, Scalar], key: str, *, positive: bool) -> float:
    value = options.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise _Refusal(f"the server asks for local noise without a usable {key} ({value!r})")
    if positive and value == 0:
        raise _Refusal(f"the server asks for local noise with {key} 0")
    return float(value)


@dataclass
class ClientWork:
    """A client's part in one run: its policy, data, task and ledgers, and what it answered.

    Attributes:
        run_id: the run (validated before it names any file).
        client_id: this client's id in the run.
        description: what the server said about the run.
        policy: the data owner's policy.
        task: the client's own task.
        data: its data, split by its own policy.
        steps: the client steps it holds, by name.
        states: its persistent strategy state for this run.
        ledger: its durable ledger of rounds trained and privacy spent.
    """

    run_id: str
    client_id: int
    description: RunDescription
    policy: ClientPolicy
    task: Task
    data: ClientData
    steps: Mapping[str, ClientStep]
    states: ClientStateFile
    ledger: ClientLedger
    _watched: _MetricsSeen = field(init=False)
    _runner: ClientRunner = field(init=False)
    _model: dict[str, tuple[str, tuple[int, ...]]] = field(init=False)
    _model_bytes: int = field(init=False)
    _last: tuple[str, list[bytes]] | None = field(default=None, init=False)
    _private: bool = field(default=False, init=False)
    _withheld_logged: bool = field(default=False, init=False)
    #: the secure-aggregation protocol of the last fit, once its keys went out with the result
    protocol: tuple[int, ClientState] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._watched = _MetricsSeen(self.task)
        self._runner = ClientRunner(self._watched, seed=0)  # every task brings its own seed
        model = self.task.init_params(0)
        self._model = {name: (array.dtype.name, tuple(array.shape)) for name, array in model.items()}
        self._model_bytes = model.nbytes
        self._private = self.description.private or self.policy.privacy.private

    # Before the tensors ---------------------------------------------------------------------
    @property
    def task_limit(self) -> int:
        """The most tensor bytes a task may bring: the model, and a payload of at most its size."""
        return 2 * self._model_bytes + _PAYLOAD_SLACK

    def header_problem(self, header: pb.Task) -> str | None:
        """Why the client will not take a task with this header (None: it may), before any
        tensor byte is allocated."""
        if header.client_id != self.client_id:
            return f"the task is addressed to client {header.client_id}, not to this client ({self.client_id})"
        model: set[str] = set()
        payload, groups = 0, set()
        for spec in header.tensors:
            shape = tuple(int(d) for d in spec.shape[:33])
            if len(shape) > 32 or any(not 0 <= d <= self.task_limit for d in shape):
                return f"tensor {spec.name[:60]!r} has an impossible shape {list(shape)[:8]}"
            if spec.group == "":
                expected = self._model.get(spec.name)
                if expected is None:
                    return f"the task's model has a tensor {spec.name[:60]!r} this client's model does not have"
                if (spec.dtype, shape) != expected:
                    return (
                        f"the task's tensor {spec.name!r} is {spec.dtype[:20]} {list(shape)}, this client's model "
                        f"has {expected[0]} {list(expected[1])}"
                    )
                model.add(spec.name)
                continue
            if header.kind != pb.FIT:
                return "an evaluation task carries the model and nothing else"
            if spec.dtype not in ALLOWED_DTYPES:
                return f"payload tensor {spec.name[:60]!r} has dtype {spec.dtype[:20]!r}"
            groups.add(spec.group)
            payload += math.prod(shape) * np.dtype(spec.dtype).itemsize
        if model != set(self._model):
            return f"the task's model lacks {sorted(set(self._model) - model)[:5]} of this client's model"
        if len(groups) > _MAX_GROUPS or payload > self._model_bytes + _PAYLOAD_SLACK:
            return f"the task's payload ({payload} bytes in {len(groups)} groups) is larger than this client's model"
        return None

    # Answers --------------------------------------------------------------------------------
    def answer(self, task: ReceivedTask, digest: str) -> list[bytes]:
        """The result messages for ``task`` (a refusal or failure is a result too)."""
        update_id = uuid.uuid4().hex
        try:
            if task.kind == "evaluate":
                return self._evaluate(task, update_id)
            if _PERSONALIZED in task.client_steps:
                return self._personalized(task, update_id)
            return self._fit(task, digest, update_id)
        except _Refusal as refusal:
            log_event(_log, logging.WARNING, "task_refused", kind=task.kind, round=task.round, reason=str(refusal))
            return encode_result(
                task.task_id, update_id, task.kind, task.round, failure=f"{task.kind} refused: {refusal}"
            )
        except SheafError as exc:  # e.g. a result whose tensors cannot travel, a state file that fails
            return encode_result(task.task_id, update_id, task.kind, task.round, failure=f"{task.kind} failed: {exc}")

    def _evaluation_refusal(self) -> str | None:
        sharing = self.policy.sharing.evaluation
        if sharing == "never":
            return "this client's policy releases no evaluation results (sharing.evaluation=never)"
        if sharing == "unless-private" and self._private:
            return (
                "the run is differentially private and this client's policy releases no raw evaluation results "
                "from private runs (sharing.evaluation=unless-private)"
            )
        return None

    def _shared(self, metrics: Mapping[str, float]) -> dict[str, float]:
        allowed = set(self.policy.sharing.metrics)
        return {name: value for name, value in metrics.items() if name in allowed}

    def _evaluate(self, task: ReceivedTask, update_id: str) -> list[bytes]:
        refusal = self._evaluation_refusal()
        if refusal is not None:
            raise _Refusal(refusal)
        if len(self.data.test) == 0:
            return encode_result(task.task_id, update_id, "evaluate", task.round, loss=float("nan"))
        evaluation = self._runner.evaluate(self.data, task.params)
        if isinstance(evaluation, ClientFailure):
            return encode_result(task.task_id, update_id, "evaluate", task.round, failure=evaluation.reason)
        return encode_result(
            task.task_id,
            update_id,
            "evaluate",
            task.round,
            num_examples=evaluation.num_examples,
            metrics=self._shared(evaluation.metrics),
            loss=evaluation.loss,
        )

    def _resolved(self, names: tuple[str, ...]) -> tuple[ClientStep, ...]:
        own = {step.name: step for step in PRIVACY_STEPS}
        return tuple(own[n] if n in own else resolve_steps([n], self.steps)[0] for n in names)

    def _agreed_steps(self, names: tuple[str, ...]) -> None:
        training = self.policy.training
        refused = [n for n in names if n not in PRIVACY_STEP_NAMES and not training.allows_step(n)]
        if refused:
            raise _Refusal(f"client step(s) {refused} are not among those its policy runs (training.client_steps)")
        try:
            resolve_steps([n for n in names if n not in PRIVACY_STEP_NAMES], self.steps)
        except TaskError as exc:
            raise _Refusal(str(exc)) from None

    def _personalized(self, task: ReceivedTask, update_id: str) -> list[bytes]:
        refusal = self._evaluation_refusal()
        if refusal is not None:
            raise _Refusal(refusal)
        names = tuple(n for n in task.client_steps if n not in PRIVACY_STEP_NAMES)
        self._agreed_steps(names)
        work = RoundWork(task.round, task.params, task.train, task.options, task.payload, self._resolved(names))
        state = self.states.state_for(task.round, task.aggregated_round)
        reply = self._runner.fit(self.data, work, state, seed=task.seed)
        if reply.update is None:
            failure = reply.failure or ClientFailure(self.client_id, "fit failed")
            return encode_result(task.task_id, update_id, "fit", task.round, failure=failure.reason)
        # Only the evaluation's figures leave: no update, no extras (the fine-tuned model stays here).
        shared = {f"eval_{n}" for n in (*self.policy.sharing.metrics, "loss", "examples")}
        metrics = {name: value for name, value in reply.update.metrics.items() if name in shared}
        return encode_result(
            task.task_id, update_id, "fit", task.round, num_examples=0, metrics=metrics, delta=task.params.zeros_like()
        )

    def _fit_refusal(self, task: ReceivedTask) -> None:
        data, training = self.policy.data, self.policy.training
        if training.max_rounds and task.round > training.max_rounds:
            raise _Refusal(f"round {task.round} is past the {training.max_rounds} its policy trains in")
        if training.strategies and self.description.strategy not in training.strategies:
            raise _Refusal(
                f"strategy {self.description.strategy!r} is not among {list(training.strategies)} "
                "its policy takes part in (training.strategies)"
            )
        self._agreed_steps(task.client_steps)
        if task.train.batch_size < data.min_batch_size:
            raise _Refusal(
                f"mini-batches of {task.train.batch_size} are smaller than its policy allows (data.min_batch_size="
                f"{data.min_batch_size})"
            )
        if len(self.data.train) < data.min_train_examples:
            raise _Refusal(
                f"it holds {len(self.data.train)} training examples, fewer than its policy needs for an update "
                f"(data.min_train_examples={data.min_train_examples})"
            )
        steps = task.options.get(LOCAL_STEPS)
        if isinstance(steps, int | float) and not isinstance(steps, bool):
            used = min(len(self.data.train), max(steps, 0) * task.train.batch_size)
            if used < data.min_train_examples:
                raise _Refusal(
                    f"{steps} local steps of {task.train.batch_size} examples use fewer than its policy needs for an "
                    f"update (data.min_train_examples={data.min_train_examples})"
                )

    def _privacy(self, task: ReceivedTask) -> tuple[tuple[str, ...], dict[str, Scalar], RoundMechanism | None]:
        """The steps the client runs, with the options they read, and the mechanism it charges."""
        names, options, mechanism = self._privacy_steps(task)
        # Compression encodes what leaves, so it stays outermost whatever privacy puts around
        # training: clip, then noise, then compress (its own noise never sees an encoding).
        if COMPRESS_STEP.name in names:
            names = (COMPRESS_STEP.name, *(name for name in names if name != COMPRESS_STEP.name))
        return names, options, mechanism

    def _privacy_steps(self, task: ReceivedTask) -> tuple[tuple[str, ...], dict[str, Scalar], RoundMechanism | None]:
        asked = task.client_steps
        inner = tuple(name for name in asked if name not in PRIVACY_STEP_NAMES)
        options: dict[str, Scalar] = dict(task.options)
        own = self.policy.privacy
        if any(name in PRIVACY_STEP_NAMES for name in asked) or "dp_mode" in options:
            self._private = True
        if own.require == "local":
            # Its own noise, outermost: nothing an inner step computes leaves un-noised.
            options.update({CLIP_OPTION: own.clip, "dp_noise_multiplier": own.noise_multiplier, "dp_noise": "secure"})
            return ("local_dp", *inner), options, RoundMechanism("local", own.noise_multiplier)
        if "local_dp" in asked:
            z, _ = _number(options, "dp_noise_multiplier", positive=False), _number(options, CLIP_OPTION, positive=True)
            options["dp_noise"] = "secure"
            names = ("local_dp", *inner)
            if z > 0:
                return names, options, RoundMechanism("local", z)
            if not own.private:  # clipping without noise: nothing to account, nothing required
                return names, options, None
            raise _Refusal("the server asks for local noise with noise multiplier 0")
        if options.get("dp_mode") == "central":
            try:
                mechanism = mechanism_from_options(options)
            except TaskError as exc:
                raise _Refusal(str(exc)) from None
            names = ("dp_clip", *inner) if "dp_clip" in asked else inner
            if mechanism.kind != "local" and mechanism.noise_multiplier > 0:
                return names, options, mechanism
            if own.private:
                raise _Refusal(
                    f"the server declares a central release of kind {mechanism.kind!r} with noise multiplier "
                    f"{mechanism.noise_multiplier:g}, yet asks this client to add no noise"
                )
            return names, options, None
        if own.private:
            wants = f"privacy.require={own.require}" if own.require != "none" else f"a budget of {own.budget:g}"
            raise _Refusal(f"the round is not differentially private and its policy asks for {wants}")
        return inner, options, None

    def _fit(self, task: ReceivedTask, digest: str, update_id: str) -> list[bytes]:
        last = self.ledger.last_trained(self.run_id)
        if task.round <= last:
            if self._last is not None and self._last[0] == digest:
                log_event(_log, logging.INFO, "answer_repeated", round=task.round)
                return self._last[1]  # the same task again (a server that restarted): the same answer
            raise _Refusal(f"round {task.round} is not after round {last}, the last this client trained in")
        self._fit_refusal(task)
        setup = self._secure_setup(task)
        if setup is None:
            names, options, mechanism = self._privacy(task)
        else:
            names, options, mechanism = self._secure_privacy(task, setup)
        charged = None
        if mechanism is not None:
            own = self.policy.privacy
            charged = self.ledger.charged(self.run_id, mechanism, task.round)
            spent = charged.epsilon(own.delta, own.accountant)
            if own.budget and spent > own.budget:
                raise _Refusal(
                    f"taking part in round {task.round} would bring its epsilon to {spent:.4g} (delta {own.delta:g}), "
                    f"past its limit {own.budget:g}; spent so far {self.ledger.epsilon(own.delta, own.accountant):.4g}"
                )
        work = RoundWork(task.round, task.params, task.train, options, task.payload, self._resolved(names))
        state = self.states.state_for(task.round, task.aggregated_round)
        self._watched.names.clear()
        reply = self._runner.fit(self.data, work, state, seed=task.seed)
        if reply.update is None:
            failure = reply.failure or ClientFailure(self.client_id, "fit failed")
            return encode_result(task.task_id, update_id, "fit", task.round, failure=failure.reason)
        update = self._withhold(reply.update)
        advert = b""
        protocol: tuple[int, ClientState] | None = None
        if setup is not None:
            # Its ring vector stays here, as the protocol's input: only masked, it leaves later.
            ring = update.extras.get(INPUT_GROUP, Params({})).get("input")
            if ring is None:
                raise TaskError("secure aggregation's client step produced no input")
            try:
                started, keys = start_client(setup, self.client_id, ring.astype(np.uint32))
            except SecAggError as exc:
                raise TaskError(f"secure aggregation cannot start: {exc}") from None
            advert, protocol = encode_message(keys), (task.round, started)
        messages = encode_result(
            task.task_id,
            update_id,
            "fit",
            task.round,
            num_examples=update.num_examples,
            metrics=update.metrics,
            # secure: nothing but its keys; compressed: the update as its encoder made it
            delta=None if protocol is not None or update.encoded is not None else update.delta,
            extras=None if protocol is not None else update.extras,
            encoded=None if protocol is not None else update.encoded,
            secagg=advert,
        )
        # Durable before anything leaves: a crash or a silent server cannot make it forget the release.
        self.ledger.record(self.run_id, task.round, charged)
        if reply.state is not None:
            self.states.set_pending(task.round, reply.state)
        self._last = (digest, messages)
        if protocol is not None:
            self.protocol = protocol
        return messages

    # Secure aggregation -----------------------------------------------------------------------
    def _secure_setup(self, task: ReceivedTask) -> ProtocolSetup | None:
        """The task's secure-aggregation instance, once its policy agrees to it (None: none asked)."""
        asked = SECAGG_ENCODE.name in task.client_steps
        if task.secagg is None and not asked:
            return None
        own = self.policy.secagg
        if not own.accept:
            raise _Refusal("its policy takes no part in secure aggregation (secagg.accept=false)")
        if task.secagg is None or not asked or task.client_steps[0] != SECAGG_ENCODE.name:
            raise _Refusal(
                "a secure-aggregation round needs both the protocol's setup and the client step "
                f"{SECAGG_ENCODE.name!r}, outermost"
            )
        message = task.secagg
        if len(message.clients) > MAX_COHORT:
            raise _Refusal(f"the protocol's cohort of {len(message.clients)} clients is larger than {MAX_COHORT}")
        try:
            setup = ProtocolSetup(
                bytes(message.instance),
                tuple(int(c) for c in message.clients),
                int(message.degree),
                int(message.threshold),
                int(message.min_survivors),
                int(message.bits),
                int(message.length),
                int(message.graph_seed),
            )
        except SecAggError as exc:
            raise _Refusal(f"the protocol's setup is unusable: {exc}") from None
        if self.client_id not in setup.clients:
            raise _Refusal("the protocol's cohort does not hold this client")
        if setup.min_survivors < own.min_survivors:
            raise _Refusal(
                f"a sum of {setup.min_survivors} inputs could be unmasked; its policy needs at least "
                f"{own.min_survivors} (secagg.min_survivors)"
            )
        if setup.threshold < math.ceil(own.min_threshold * setup.degree):
            raise _Refusal(
                f"{setup.threshold} of its {setup.degree} neighbours could rebuild its secrets; its policy needs "
                f"{math.ceil(own.min_threshold * setup.degree)} (secagg.min_threshold={own.min_threshold:g})"
            )
        quantizer = self._quantizer(task.options)
        if (setup.bits, setup.length) != (quantizer.bits, quantizer.ring_length):
            raise _Refusal(
                f"the protocol's ring (Z_2^{setup.bits}, {setup.length} elements) does not fit this client's model "
                f"encoded as asked (Z_2^{quantizer.bits}, {quantizer.ring_length} elements)"
            )
        return setup

    def _quantizer(self, options: Mapping[str, Scalar]) -> Quantizer:
        try:
            return Quantizer(
                sum(math.prod(shape) for _, shape in self._model.values()),
                int(options["secagg_bits"]),
                float(options["secagg_scale"]),
                float(options["secagg_clip"]),
                int(options["secagg_max_weight"]),
                bool(options["secagg_weighted"]),
            )
        except (KeyError, TypeError, ValueError, SheafError) as exc:
            raise _Refusal(f"the server's secure-aggregation options are unusable: {exc}") from None

    def _secure_privacy(
        self, task: ReceivedTask, setup: ProtocolSetup
    ) -> tuple[tuple[str, ...], dict[str, Scalar], RoundMechanism | None]:
        """The steps and options of a secure round, and what it charges (distributed noise)."""
        own = self.policy.privacy
        variance = task.options.get("secagg_variance", 0)
        if isinstance(variance, bool) or not isinstance(variance, int | float) or not 0 <= variance < 2**62:
            raise _Refusal(f"the server asks for a noise variance of {variance!r}")
        if variance == 0:  # plain secure aggregation (or central DP on the unmasked sum)
            names, options, mechanism = self._privacy(task)
            # Encoding stays outermost, as in simulation: a clip of central DP acts on the delta it encodes.
            names = (SECAGG_ENCODE.name, *(n for n in names if n != SECAGG_ENCODE.name))
        else:
            if own.require == "local":
                raise _Refusal(
                    "its policy noises its own update fully (privacy.require=local), which a distributed noise share "
                    "does not; set privacy.require=central to take part in distributed DP"
                )
            self._private = True
            names, options = task.client_steps, dict(task.options)
            mechanism = RoundMechanism("local", self._distributed_z(task.options, setup, float(variance)))
        # Its rounding and noise come from the operating system's CSPRNG, whatever the server says.
        options["secagg_noise"] = "secure"
        return names, options, mechanism

    def _distributed_z(self, options: Mapping[str, Scalar], setup: ProtocolSetup, variance: float) -> float:
        """The Gaussian noise multiplier whose RDP bounds this round's, for the client's ledger.

        A sum it helps unmask holds at least T inputs (it refuses fewer), so at least T - 1
        noise shares besides its own; Kairouz, Liu and Steinke's Proposition 14 (third
        bound) gives RDP ``α/2 (Δ₂/sqrt(mσ²) + τ sqrt(d))²``: that of the Gaussian mechanism
        with ``z = 1 / (Δ₂/sqrt(mσ²) + τ sqrt(d))``. It is charged as local noise is: no
        amplification by sampling (the server knows who took part), and for replacing the
        client's data (sensitivity 2Δ₂: the ledger takes ``z / 2``), the relation its other
        charges use.
        """
        quantizer = self._quantizer(options)
        padded = quantizer.padded
        l2, _ = rounded_sensitivity(quantizer.scale * quantizer.clip, padded)
        shares = setup.min_survivors - 1
        tau = 10 * sum(math.exp(-2 * math.pi**2 * variance * k / (k + 1)) for k in range(1, shares))
        return 1.0 / (l2 / math.sqrt(shares * variance) + tau * math.sqrt(padded))

    def protocol_step(self, state: ClientState, data: bytes, want: int) -> tuple[ClientState, bytes | None]:
        """The client's reply to server message ``want`` (None: it refuses to go on; the state says why)."""
        limit = max_server_bytes(state.setup, want)
        if len(data) > limit:
            reason = f"the server's message {want} has {len(data)} bytes, more than the {limit} this protocol allows"
            return dataclasses.replace(state, stage=ClientStage.ABORTED, reason=reason, input=None), None
        try:
            message = decode_message(data)
        except SecAggError as exc:
            return dataclasses.replace(state, stage=ClientStage.ABORTED, reason=str(exc), input=None), None
        if isinstance(message, AdvertiseKeys | ShareKeys | MaskedInput | ConsistencySignature | UnmaskShares):
            reason = f"the server sent a client's message ({type(message).__name__})"
            return dataclasses.replace(state, stage=ClientStage.ABORTED, reason=reason, input=None), None
        state, reply = client_step(state, message)
        return state, None if reply is None else encode_message(reply)

    def _withhold(self, update: Update) -> Update:
        """The update without the task's metrics its policy does not share."""
        withheld = self._watched.names - set(self.policy.sharing.metrics)
        kept = {name: value for name, value in update.metrics.items() if name not in withheld}
        if withheld & set(update.metrics) and not self._withheld_logged:
            self._withheld_logged = True
            log_event(_log, logging.INFO, "metrics_withheld", names=sorted(withheld)[:20], policy="sharing.metrics")
        return dataclasses.replace(update, metrics=kept)
