"""Where torch computes: the ``engine.device`` setting, resolved on this machine, per process.

``engine.device`` is ``auto`` (a CUDA GPU if torch sees one, else the CPU), ``cpu``,
``cuda`` (every GPU torch sees: a pool spreads its workers over them) or ``cuda:N`` (that
GPU). :func:`resolve_device` turns the setting into what this machine has, once per run
(recorded in the run store as ``device``), and fails with one line where it has no such
GPU. Like torch's thread count, the device is a property of the *process*: backends set
it with :func:`use_device` (through :func:`~sheaf.task.base.prepare_worker`) in every
process that runs clients, and :class:`~sheaf.task.torch_task.TorchTask` computes there —
a task that wraps a TorchTask needs to pass nothing on.

Params always travel as NumPy arrays, so strategies, the wire and the run store never see
a device; only where the arithmetic happens changes (and with it the last bits: a GPU
adds in other orders than a CPU, as two thread counts do).

Example:
    >>> resolve_device("cpu"), worker_devices("cuda", 3, gpus=2), worker_devices("cuda:1", 2, gpus=2)
    ('cpu', ['cuda:0', 'cuda:1', 'cuda:0'], ['cuda:1', 'cuda:1'])
"""

from __future__ import annotations

import re
import sys

from sheaf.core.errors import ConfigError

__all__ = ["DEVICE_PATTERN", "cuda_count", "process_device", "resolve_device", "use_device", "worker_devices"]

#: What ``engine.device`` may say.
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")

_current = "cpu"  # this process's device (set by use_device)


def cuda_count() -> int:
    """How many CUDA GPUs torch sees here (0 without torch loaded, a CPU build, or no GPU)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return 0
    return int(torch.cuda.device_count())


def resolve_device(setting: str) -> str:
    """What ``setting`` means on this machine: ``cpu``, ``cuda`` (every GPU) or ``cuda:N``.

    ``auto`` looks for a GPU only where torch is already loaded (a TorchTask's run): a run
    of a task without torch computes on the CPU, and ``import sheaf`` stays light.

    Raises:
        ConfigError: if the setting is malformed, or names a GPU this machine does not have.
    """
    if not DEVICE_PATTERN.fullmatch(setting):
        raise ConfigError(f"engine.device must be auto, cpu, cuda or cuda:N, got {setting!r}")
    if setting == "cpu":
        return "cpu"
    if setting == "auto":
        return "cuda" if cuda_count() else "cpu"
    import torch  # asked for a GPU: torch decides

    count = cuda_count()
    if count == 0:
        build = torch.__version__
        why = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA GPU visible"
        raise ConfigError(
            f"engine.device={setting} but torch {build} sees no CUDA GPU here ({why}); use engine.device=cpu or auto"
        )
    if ":" in setting and int(setting.split(":")[1]) >= count:
        raise ConfigError(
            f"engine.device={setting} but torch sees {count} CUDA GPU(s) here (cuda:0 to cuda:{count - 1})"
        )
    return setting


def worker_devices(device: str, workers: int, *, gpus: int | None = None) -> list[str]:
    """The device of each of ``workers`` processes: ``cuda`` deals them over the GPUs in turn."""
    if device != "cuda":
        return [device] * workers
    count = cuda_count() if gpus is None else gpus
    return [f"cuda:{i % max(count, 1)}" for i in range(workers)]


def use_device(device: str) -> None:
    """Make ``device`` this process's device (for TorchTask); ``cuda`` means ``cuda:0``.

    On a GPU, cuDNN is told to pick deterministic algorithms, so the same work gives the
    same bits in every process.
    """
    global _current
    _current = "cuda:0" if device == "cuda" else device
    if _current != "cpu":
        import torch

        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def process_device() -> str:
    """This process's device (``cpu`` unless :func:`use_device` said otherwise)."""
    return _current
