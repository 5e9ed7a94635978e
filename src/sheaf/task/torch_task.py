"""TorchTask: a ready-made Task for a torch model, with a standard or custom training loop.

The task holds a *model factory*, not a model, so it can be sent to worker processes; each
process builds one model and reuses it for every client, only copying parameters in and
out. Training follows the round's :class:`~sheaf.task.base.FitInstructions` (epochs,
batch size, optimiser, lr; a strategy's ``options["proximal_mu"]`` adds FedProx's
proximal term, towards the starting params or ``payload["proximal_anchor"]`` (Ditto),
``payload["gradient_correction"]`` is added to every gradient (SCAFFOLD),
``options["local_steps"]`` trains that many mini-batches instead of whole epochs); the
standard loop reports ``train_loss`` and ``steps`` (optimiser steps taken, which FedNova
and SCAFFOLD use); all randomness — the mini-batch order and torch's own RNG for
layers such as dropout — comes from the instructions' seed, so a client trains identically
wherever it runs.

Example:
    >>> import numpy as np, torch
    >>> from sheaf.core.config import TrainConfig
    >>> from sheaf.data.dataset import Split
    >>> task = TorchTask(lambda: torch.nn.Linear(4, 3))
    >>> params = task.init_params(seed=0)
    >>> data = Split(np.random.default_rng(0).random((32, 4), dtype=np.float32), np.arange(32) % 3)
    >>> result = task.fit(params, data, FitInstructions(1, 0, TrainConfig(), seed=1))
    >>> result.num_examples, sorted(result.params)
    (32, ['bias', 'weight'])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from sheaf.core.config import TrainConfig
from sheaf.core.errors import TaskError
from sheaf.core.params import Params
from sheaf.data.dataset import Split
from sheaf.task import optim
from sheaf.task.base import EvalResult, FitInstructions, FitResult
from sheaf.task.client_steps import GRADIENT_CORRECTION, LOCAL_STEPS, PROXIMAL_ANCHOR
from sheaf.task.device import process_device

__all__ = ["MetricFn", "OptimizerFn", "TorchTask", "TrainFn", "accuracy"]

#: A metric over a whole split: (model outputs, targets) -> number.
MetricFn = Callable[[torch.Tensor, torch.Tensor], float]

#: A custom training loop: (model with the global params loaded, training split,
#: instructions, generator seeded for this client and round) -> metrics to share.
TrainFn = Callable[[nn.Module, Split, FitInstructions, np.random.Generator], Mapping[str, float]]

#: Builds a torch optimiser for the standard loop: (trainable parameters, settings).
OptimizerFn = Callable[[list[nn.Parameter], TrainConfig], torch.optim.Optimizer]


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of rows whose arg-max output equals the target."""
    if len(targets) == 0:
        return float("nan")
    return float((outputs.argmax(dim=1) == targets).double().mean())


@contextmanager
def _seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed torch's CPU generator (and ``device``'s, on a GPU) for a block and restore them after.

    ``torch.manual_seed``/``fork_rng`` also visit every accelerator module, costing ~1.7 ms
    per call here — more than a client's whole round on a small model.
    """
    generators = [torch.default_generator]
    if device is not None and device.type == "cuda":
        generators.append(torch.cuda.default_generators[device.index or 0])
    saved = [generator.get_state() for generator in generators]
    for generator in generators:
        generator.manual_seed(seed)
    try:
        yield
    finally:
        for generator, state in zip(generators, saved, strict=True):
            generator.set_state(state)


@torch.no_grad()
def _add_proximal_gradient(params: list[nn.Parameter], anchors: list[torch.Tensor], mu: float) -> None:
    """FedProx: the gradient of ``(mu / 2) * ||w - w_global||^2`` is ``mu * (w - w_global)``.

    Added to each parameter's data gradient after ``backward`` (same value as putting the
    term in the loss, without a second autograd graph). A backend that trains differently
    must add it the same way, in this order, to give the same model.
    """
    for param, anchor in zip(params, anchors, strict=True):
        if param.grad is not None:
            param.grad.add_(param.detach() - anchor, alpha=mu)


@torch.no_grad()
def _add_correction(params: list[nn.Parameter], corrections: list[torch.Tensor]) -> None:
    """SCAFFOLD and kin: add ``payload["gradient_correction"]`` to each gradient, after the proximal term."""
    for param, correction in zip(params, corrections, strict=True):
        if param.grad is not None:
            param.grad.add_(correction)


def _payload_tensors(
    named: list[tuple[str, nn.Parameter]], instructions: FitInstructions, key: str
) -> list[torch.Tensor]:
    """The payload group ``key`` as one tensor per trained parameter (empty if not sent)."""
    group = instructions.payload.get(key)
    if group is None:
        return []
    missing = [name for name, _ in named if name not in group]
    if missing:
        raise TaskError(f"payload {key!r} lacks tensors {missing}")
    return [_tensor(group[name]).to(param.device, param.dtype).reshape(param.shape) for name, param in named]


def _batch_orders(n: int, cfg: TrainConfig, local_steps: int, generator: np.random.Generator) -> Iterator[torch.Tensor]:
    """Mini-batches: ``cfg.epochs`` shuffled passes, or exactly ``local_steps`` batches if > 0."""
    taken, epoch = 0, 0
    while local_steps > 0 or epoch < cfg.epochs:
        order = torch.from_numpy(generator.permutation(n))
        epoch += 1
        for start in range(0, n, cfg.batch_size):
            if 0 < local_steps == taken:
                return
            taken += 1
            yield order[start : start + cfg.batch_size]


def _float_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's floating-point tensors (parameters and float buffers): what travels as params."""
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if v.is_floating_point()}


def _write(tensors: Mapping[str, torch.Tensor], params: Params) -> None:
    """Copy ``params`` into a model's tensors (checked: the same names and shapes)."""
    if len(params) != len(tensors) or set(params) != set(tensors):
        raise TaskError(f"params {list(params)} do not match the model's tensors {list(tensors)}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            if tuple(tensor.shape) != params[name].shape:
                raise TaskError(f"param {name!r} has shape {params[name].shape}, model expects {tuple(tensor.shape)}")
            if tensor.device.type == "cpu":
                tensor.detach().numpy()[...] = params[name]
            else:
                tensor.detach().copy_(_tensor(np.asarray(params[name])))


def _layout(batch: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``batch`` itself, or a fresh channels-last copy: always the same strides, whatever the input's
    (torch picks kernels, and with them the rounding, from strides)."""
    if not channels_last:
        return batch
    out = torch.empty(batch.shape, dtype=batch.dtype, memory_format=torch.channels_last)
    return out.copy_(batch)


def _tensor(array: npt.NDArray[Any]) -> torch.Tensor:
    # torch warns about read-only NumPy buffers; copy only in that case.
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class TorchTask:
    """A :class:`~sheaf.task.base.Task` for a torch ``nn.Module``.

    Args:
        model_fn: builds the model (called once per process; must be picklable, e.g. a
            module-level function or ``functools.partial``, to run in worker processes).
        loss_fn: ``(outputs, targets) -> mean loss``; default cross-entropy.
        metrics: name -> :data:`MetricFn`, computed on evaluation; default accuracy.
        train_fn: your own training loop instead of the standard one (see :data:`TrainFn`).
        optimizer_fn: ``(parameters, train config) -> torch.optim.Optimizer`` to use a torch
            optimiser in the standard loop; default sheaf's lean SGD/Adam
            (:mod:`sheaf.task.optim`), which does the same arithmetic with less overhead.
        eval_batch_size: rows per evaluation batch; None: 256 for convolutional models
            on image batches (their activations then stay in the CPU's cache), 4096 otherwise.

    Only floating-point tensors of the model's ``state_dict`` (parameters and float
    buffers, e.g. batch-norm statistics) travel as params.

    The model and the batches live on this process's device (``engine.device``, set by the
    backends: :mod:`sheaf.task.device`); params come and go as NumPy arrays.

    Evaluation runs under ``torch.inference_mode``. A model with 2-d convolutions is
    evaluated on image batches by a second instance of it in torch's channels-last memory
    format, several times faster on CPUs than the training layout (training itself is
    untouched). Its outputs differ from the training layout's in the last float bits, and
    are the same in every process with the same thread count.
    """

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        *,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        metrics: Mapping[str, MetricFn] | None = None,
        train_fn: TrainFn | None = None,
        optimizer_fn: OptimizerFn | None = None,
        eval_batch_size: int | None = None,
    ) -> None:
        self.model_fn = model_fn
        self.loss_fn = loss_fn if loss_fn is not None else nn.functional.cross_entropy
        self.metrics = dict(metrics) if metrics is not None else {"accuracy": accuracy}
        self.train_fn = train_fn
        self.optimizer_fn = optimizer_fn
        self.eval_batch_size = eval_batch_size
        self._model: nn.Module | None = None
        self._tensors: dict[str, torch.Tensor] = {}
        self._eval_model: nn.Module | None = None  # the channels-last instance, where it applies
        self._eval_tensors: dict[str, torch.Tensor] = {}
        self._channels_last: bool | None = None  # None: not decided yet in this process

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"], state["_tensors"] = None, {}
        state["_eval_model"], state["_eval_tensors"], state["_channels_last"] = None, {}, None
        return state

    # Worker set-up and the one reused model -------------------------------------
    def setup_worker(self, threads: int) -> None:
        """Fix torch's intra-op threads: results depend on it (see DESIGN.md)."""
        torch.set_num_threads(threads)

    @property
    def device(self) -> torch.device:
        """Where this process computes (:func:`sheaf.task.device.process_device`)."""
        return torch.device(process_device())

    @property
    def model(self) -> nn.Module:
        """This process's model instance (built on first use, on this process's device)."""
        device = self.device
        if self._model is None:
            with _seeded(0):
                model = self.model_fn()
            if not isinstance(model, nn.Module):
                raise TaskError(f"model_fn must return a torch.nn.Module, got {type(model).__name__}")
            self._model = model
            self._tensors = _float_tensors(model)
        if next(iter(self._tensors.values()), torch.empty(0)).device != device:
            self._model.to(device)
            self._tensors = _float_tensors(self._model)
        return self._model

    def _load(self, params: Params) -> nn.Module:
        model = self.model
        _write(self._tensors, params)
        return model

    def _load_for_evaluation(self, params: Params, data: Split) -> tuple[nn.Module, bool]:
        """The model to evaluate ``data`` with, ``params`` loaded, and whether it is channels-last."""
        model = self._load(params)
        if self._channels_last is None:
            self._channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
        if not self._channels_last or data.x.ndim != 4 or self.device.type != "cpu":
            return model, False  # on a GPU, cuDNN chooses its layouts itself
        if self._eval_model is None:
            with _seeded(0):
                fresh = self.model_fn()
            self._eval_model = fresh.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self._eval_tensors = _float_tensors(self._eval_model)
        _write(self._eval_tensors, params)
        return self._eval_model, True

    def _extract(self) -> Params:
        return Params({k: v.detach().cpu().numpy().copy() for k, v in self._tensors.items()})

    # Task protocol ----------------------------------------------------------------
    def init_params(self, seed: int) -> Params:
        """Fresh parameters: the model built under ``torch.manual_seed(seed)``."""
        with _seeded(seed):
            fresh = self.model_fn()
        return Params({k: v.detach().numpy().copy() for k, v in fresh.state_dict().items() if v.is_floating_point()})

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        """Train on ``data`` from ``params`` as the instructions say."""
        model = self._load(params)
        generator = np.random.default_rng(instructions.seed)
        with _seeded(instructions.seed, self.device):
            model.train()
            if self.train_fn is not None:
                metrics = dict(self.train_fn(model, data, instructions, generator))
            else:
                metrics = self._standard_loop(model, data, instructions, generator)
        return FitResult(self._extract(), len(data), metrics)

    def _standard_loop(
        self, model: nn.Module, data: Split, instructions: FitInstructions, generator: np.random.Generator
    ) -> dict[str, float]:
        cfg = instructions.train
        if len(data) == 0:
            return {"train_loss": float("nan"), "steps": 0.0}
        device = self.device
        x, y = _tensor(data.x).to(device), _tensor(data.y).to(device)  # the same tensors on the CPU
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        params = [p for _, p in named]
        custom = self.optimizer_fn(params, cfg) if self.optimizer_fn is not None else None
        state = optim.init_state(params, cfg.optimizer)
        mu = float(instructions.options.get("proximal_mu", 0.0))
        anchors: list[torch.Tensor] = []
        if mu > 0:
            anchors = _payload_tensors(named, instructions, PROXIMAL_ANCHOR) or [p.detach().clone() for p in params]
        corrections = _payload_tensors(named, instructions, GRADIENT_CORRECTION)
        local_steps = int(instructions.options.get(LOCAL_STEPS, 0))
        total, seen, steps = 0.0, 0, 0
        on_gpu = torch.zeros((), dtype=torch.float64, device=device) if device.type != "cpu" else None
        for batch in _batch_orders(len(data), cfg, local_steps, generator):
            for param in params:
                param.grad = None
            loss = self.loss_fn(model(x[batch]), y[batch])
            loss.backward()  # type: ignore[no-untyped-call]
            if mu > 0:
                _add_proximal_gradient(params, anchors, mu)
            if corrections:
                _add_correction(params, corrections)
            if custom is not None:
                custom.step()
            else:
                optim.step(
                    params,
                    [p.grad for p in params],
                    state,
                    optimizer=cfg.optimizer,
                    lr=cfg.lr,
                    momentum=cfg.momentum,
                    weight_decay=cfg.weight_decay,
                )
            if on_gpu is None:
                total += float(loss.detach()) * len(batch)
            else:  # no wait for the GPU at every step
                on_gpu += loss.detach().double() * len(batch)
            seen += len(batch)
            steps += 1
        if on_gpu is not None:
            total = float(on_gpu)
        return {"train_loss": total / seen if seen else float("nan"), "steps": float(steps)}

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        """Mean loss and the task's metrics of ``params`` on ``data``."""
        model, channels_last = self._load_for_evaluation(params, data)
        if len(data) == 0:
            return EvalResult(float("nan"), 0, {name: float("nan") for name in self.metrics})
        x, y = _tensor(data.x).to(self.device), _tensor(data.y).to(self.device)
        try:
            outputs = self._outputs(model, x, channels_last)
        except RuntimeError:
            if not channels_last:
                raise
            # e.g. a .view() the channels-last layout cannot give: the training layout, from now on
            self._channels_last = False
            outputs = self._outputs(self._load(params), x, False)
        with torch.inference_mode():
            loss = float(self.loss_fn(outputs, y))
            metrics = {name: fn(outputs, y) for name, fn in self.metrics.items()}
        return EvalResult(loss, len(data), metrics)

    def _outputs(self, model: nn.Module, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """The model's outputs for every row of ``x``, batch by batch."""
        size = self.eval_batch_size or (256 if channels_last else 4096)
        model.eval()
        with torch.inference_mode():
            return torch.cat([model(_layout(x[i : i + size], channels_last)) for i in range(0, len(x), size)])
