"""The vectorized backend's kernel: TorchTask's standard loop for many clients at once.

Every client's parameters are stacked along a leading dimension, and one call of
``torch.func.vmap`` over ``torch.func.functional_call`` runs the forward pass of all of
them; ``torch.autograd.grad`` of the summed per-client losses gives each client exactly the
gradient of its own loss. The rest is TorchTask's loop, step for step:

- each client's mini-batch order comes from ``np.random.default_rng(seed).permutation(n)``
  per epoch, with the seed its instructions carry;
- FedProx adds ``mu * (w - w_global)`` to the data gradient, then the optimiser step of
  :mod:`sheaf.task.optim` (the same functions, on stacked tensors) updates the weights;
- clients are sorted by their number of steps, so the clients still training at any step
  are a prefix of the stack and work on views of it;
- a client whose last batch of an epoch is short has its batch padded with rows of weight
  0, and its loss is the mean over its real rows — for the losses whose per-sample values
  torch gives (``reduction="none"``: cross-entropy, NLL, MSE, L1, Huber, binary
  cross-entropy). With any other ``loss_fn``, clients with short batches train in groups
  of equal batch size instead (no padding, so the loss keeps its meaning);
- ``train_loss`` is the mean of the batch losses weighted by batch size, ``steps`` the
  optimiser steps taken.

The results agree with TorchTask's to float32 rounding: batched matrix products add in
another order than one client's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.func import functional_call, vmap

from sheaf.core.config import TrainConfig
from sheaf.core.params import Params
from sheaf.task import optim
from sheaf.task.torch_task import TorchTask

__all__ = ["ChunkResult", "VectorTrainer", "static_reason"]

#: A step's data: stacked ``(x, y, row weights or None)`` for one vmap call, or one
#: ``(x, y)`` per client for client-after-client steps.
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | list[tuple[torch.Tensor, torch.Tensor]]

#: Options of a cohort the kernel implements; any other makes the backend fall back.
KNOWN_OPTIONS = frozenset({"proximal_mu"})

#: Losses whose mean reduction is the mean of ``reduction="none"`` values (padded batches).
PER_SAMPLE: frozenset[Callable[..., torch.Tensor]] = frozenset(
    {
        nn.functional.cross_entropy,
        nn.functional.nll_loss,
        nn.functional.mse_loss,
        nn.functional.l1_loss,
        nn.functional.smooth_l1_loss,
        nn.functional.huber_loss,
        nn.functional.binary_cross_entropy,
        nn.functional.binary_cross_entropy_with_logits,
    }
)


def static_reason(task: object) -> str | None:
    """Why ``task`` cannot be trained by the kernel (None: it can, as far as can be seen)."""
    if not isinstance(task, TorchTask):
        return f"the task is a {type(task).__name__}, not a TorchTask"
    for method in ("fit", "_standard_loop", "_load", "_extract"):
        if getattr(type(task), method) is not getattr(TorchTask, method):
            return f"the task's class overrides TorchTask.{method}"
    if task.train_fn is not None:
        return "the task has its own train_fn"
    if task.optimizer_fn is not None:
        return "the task uses its own optimizer_fn"
    model = task.model
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        return f"the model has buffers ({', '.join(buffers[:3])}), e.g. batch-norm statistics"
    floats = [k for k, v in model.state_dict(keep_vars=True).items() if v.is_floating_point()]
    if floats != [name for name, _ in model.named_parameters()]:
        return "the model's parameters are tied or mixed with other float tensors"
    return None


@dataclass
class ChunkResult:
    """What training a chunk of clients produced (rows in the order they were given).

    Attributes:
        params: name -> trained tensors stacked along dim 0.
        train_loss: mean training loss per client.
        steps: optimiser steps per client.
    """

    params: dict[str, torch.Tensor]
    train_loss: npt.NDArray[np.float64]
    steps: npt.NDArray[np.int64]


def _schedule(
    sizes: Sequence[int], seeds: Sequence[int], epochs: int, batch: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Row indices ``(clients, steps, batch)`` (-1: none) and batch sizes ``(clients, steps)``."""
    batches = [math.ceil(n / batch) for n in sizes]
    steps = max(epochs * b for b in batches)
    index = np.full((len(sizes), steps, batch), -1, dtype=np.int64)
    for row, (n, seed, per_epoch) in enumerate(zip(sizes, seeds, batches, strict=True)):
        padded = np.full((epochs, per_epoch * batch), -1, dtype=np.int64)
        if n == 1:  # a permutation of one row needs no draw
            padded[:, 0] = 0
        else:
            generator = np.random.default_rng(seed)
            for epoch in range(epochs):
                padded[epoch, :n] = generator.permutation(n)
        index[row, : epochs * per_epoch] = padded.reshape(epochs * per_epoch, batch)
    return index, (index >= 0).sum(axis=2)


class VectorTrainer:
    """Trains and evaluates many clients of one TorchTask at once (see the module docstring).

    Args:
        task: a TorchTask that :func:`static_reason` accepts.
        batched: run the forward and backward passes of all clients as one ``vmap`` call;
            False runs them client after client inside each (still stacked) step, for
            models whose layers ``vmap`` batches into slower kernels (convolutions become
            grouped convolutions, slower on CPUs than the same convolutions in turn).
        device: where the stacked clients train (``cpu``, ``cuda:N``); data and params
            come and go as NumPy arrays.
    """

    def __init__(self, task: TorchTask, batched: bool = True, device: str = "cpu") -> None:
        self.task = task
        self.batched = batched
        self.device = torch.device(device)
        self.model: nn.Module = task.model_fn().to(self.device)
        self.model.train()
        self.names = [name for name, _ in self.model.named_parameters()]
        self.trainable = [name for name, p in self.model.named_parameters() if p.requires_grad]
        self._frozen = {name: p.detach() for name, p in self.model.named_parameters() if not p.requires_grad}
        loss_fn = task.loss_fn
        self.padded = loss_fn in PER_SAMPLE

        def client_loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return loss_fn(functional_call(self.model, {**params, **self._frozen}, (x,), tie_weights=False), y)

        def padded_loss(
            params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, w: torch.Tensor
        ) -> torch.Tensor:
            values = loss_fn(
                functional_call(self.model, {**params, **self._frozen}, (x,), tie_weights=False), y, reduction="none"
            )  # type: ignore[call-arg]
            per_row = values.reshape(values.shape[0], -1).mean(dim=1) if values.dim() > 1 else values
            return (per_row * w).sum() / w.sum()

        self._single = client_loss
        self._losses: Callable[..., torch.Tensor] = vmap(
            padded_loss if self.padded else client_loss, randomness="error"
        )

    def load(self, params: Params) -> None:
        """Copy global params into the trainer's own model (for evaluation)."""
        with torch.no_grad():
            for name, tensor in self.model.named_parameters():
                tensor.copy_(_tensor(params[name]))

    def activation_bytes(self, sample: npt.NDArray[Any]) -> int:
        """Bytes of module outputs in one sample's forward pass (to size chunks)."""
        total = 0

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            nonlocal total
            if isinstance(output, torch.Tensor):
                total += output.numel() * output.element_size()

        handles = [m.register_forward_hook(hook) for m in self.model.modules()]
        try:
            with torch.no_grad():
                self.model(_tensor(sample[:1]).to(self.device))
        finally:
            for handle in handles:
                handle.remove()
        return total

    def train(
        self,
        params: Params,
        x: npt.NDArray[Any],
        y: npt.NDArray[Any],
        starts: Sequence[int],
        sizes: Sequence[int],
        seeds: Sequence[int],
        cfg: TrainConfig,
        mu: float,
    ) -> ChunkResult:
        """Train clients from the global params.

        Args:
            params: the global params.
            x: features of all rows (the federation's array; only the clients' rows are read).
            y: labels of all rows.
            starts: each client's first training row in ``x``.
            sizes: each client's number of training rows (> 0), sorted so that the number of
                steps never increases along the list.
            seeds: each client's seed for this round (its batch order).
            cfg: the training settings.
            mu: FedProx's proximal strength (0: none).
        """
        count = len(sizes)
        local, batch_np = _schedule(sizes, seeds, cfg.epochs, cfg.batch_size)
        first = np.asarray(starts, dtype=np.int64)[:, None, None]
        rows = np.where(local >= 0, local + first, first)  # padding: the client's first row, weight 0
        device = self.device
        weights = torch.from_numpy((local >= 0).astype(np.float32)).to(device)
        # Gather batches as TorchTask does (indexing a tensor view of the data), so that they
        # keep the data's strides, from which torch picks its kernels.
        source = (torch.from_numpy(x), torch.from_numpy(y)) if x.flags.writeable and y.flags.writeable else None

        def gather(picked: npt.NDArray[np.int64]) -> tuple[torch.Tensor, torch.Tensor]:
            if source is not None:
                index = torch.from_numpy(picked)
                xb, yb = source[0][index], source[1][index]
            else:
                xb, yb = torch.from_numpy(np.take(x, picked, axis=0)), torch.from_numpy(np.take(y, picked, axis=0))
            return xb.to(device), yb.to(device)  # themselves on the CPU

        anchors = {name: torch.from_numpy(np.array(params[name])).to(device) for name in self.names}
        stacked = {name: anchors[name].expand(count, *anchors[name].shape).clone() for name in self.names}
        buffers: dict[str, list[torch.Tensor | None]] = {
            "first": [None] * len(self.trainable),
            "second": [None] * len(self.trainable),
        }
        total = np.zeros(count)
        seen = np.zeros(count, dtype=np.int64)
        for step in range(local.shape[1]):
            sizes_now = batch_np[:, step]
            active = int(np.count_nonzero(sizes_now))
            if not self.batched:  # one group; each client's own batch, unpadded
                groups = [(np.arange(active), 0)]
            elif self.padded:  # one batch for all, as wide as the widest real one
                groups = [(np.arange(active), int(sizes_now[:active].max()))]
            else:
                groups = [
                    (np.flatnonzero(sizes_now[:active] == b), int(b)) for b in np.unique(sizes_now[:active])[::-1]
                ]
            for members, width in groups:
                batch: Batch
                if not self.batched:
                    batch = [gather(rows[m, step, : sizes_now[m]]) for m in members]
                else:
                    xb, yb = gather(rows[members, step, :width])
                    batch = (xb, yb, weights[members, step, :width] if self.padded else None)
                losses = self._step(stacked, anchors, buffers, batch, members, step, cfg, mu)
                real = sizes_now[members]
                total[members] += losses * real
                seen[members] += real
        steps = (batch_np > 0).sum(axis=1)
        return ChunkResult(stacked, total / seen, steps)

    def _step(
        self,
        stacked: dict[str, torch.Tensor],
        anchors: dict[str, torch.Tensor],
        buffers: dict[str, list[torch.Tensor | None]],
        batch: Batch,
        rows: npt.NDArray[np.int64],
        step: int,
        cfg: TrainConfig,
        mu: float,
    ) -> npt.NDArray[np.float64]:
        """One optimiser step for the clients in ``rows`` of the stack, on their batches."""
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        contiguous = hi - lo == len(rows)
        picked = torch.from_numpy(rows).to(self.device)

        def take(tensor: torch.Tensor) -> torch.Tensor:
            return tensor[lo:hi] if contiguous else tensor.index_select(0, picked)

        weights = {name: take(stacked[name]) for name in self.trainable}
        if isinstance(batch, list):  # client after client, then one stacked optimiser step
            per_client = []
            values = []
            for row, (xb, yb) in enumerate(batch):
                own = {name: w[row].detach().requires_grad_(True) for name, w in weights.items()}
                loss = self._single(own, xb, yb)
                per_client.append(torch.autograd.grad(loss, list(own.values())))
                values.append(loss.detach())
            grads = [torch.stack([g[i] for g in per_client]) for i in range(len(self.trainable))]
            losses = torch.stack(values)
        else:
            leaves = {name: w.detach().requires_grad_(True) for name, w in weights.items()}
            xb, yb, wb = batch
            losses = self._losses(leaves, xb, yb) if wb is None else self._losses(leaves, xb, yb, wb)
            grads = list(torch.autograd.grad(losses.sum(), list(leaves.values())))
        with torch.no_grad():
            if mu > 0:
                for grad, name in zip(grads, self.trainable, strict=True):
                    grad.add_(weights[name] - anchors[name], alpha=mu)
            # Buffers are created by the first step, as torch.optim and TorchTask's loop do.
            state = optim.OptimizerState(
                step,
                [None if step == 0 or b is None else take(b) for b in buffers["first"]],
                [None if step == 0 or b is None else take(b) for b in buffers["second"]],
            )
            optim.step(
                list(weights.values()),
                grads,
                state,
                optimizer=cfg.optimizer,
                lr=cfg.lr,
                momentum=cfg.momentum,
                weight_decay=cfg.weight_decay,
            )
            if not contiguous:
                for name, weight in weights.items():
                    stacked[name].index_copy_(0, picked, weight)
            for kind, new in (("first", state.first), ("second", state.second)):
                for i, buffer in enumerate(new):
                    if buffer is None or (contiguous and step > 0):
                        continue  # none, or a view already updated in place
                    if buffers[kind][i] is None:
                        buffers[kind][i] = torch.zeros_like(stacked[self.trainable[i]])
                    full = buffers[kind][i]
                    assert full is not None
                    full.index_copy_(0, picked, buffer)
        result: npt.NDArray[np.float64] = losses.detach().double().cpu().numpy()
        return result

    def outputs(self, x: npt.NDArray[Any]) -> torch.Tensor:
        """The model's outputs in evaluation mode, in batches of the task's eval batch size (on the CPU)."""
        step = self.task.eval_batch_size or 4096
        tensor = _tensor(x).to(self.device)
        self.model.eval()
        try:
            with torch.no_grad():
                return torch.cat([self.model(tensor[i : i + step]) for i in range(0, len(tensor), step)]).cpu()
        finally:
            self.model.train()


def _dtype(dtype: np.dtype[Any]) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def _tensor(array: npt.NDArray[Any]) -> torch.Tensor:
    return torch.from_numpy(array if array.flags.writeable else array.copy())
