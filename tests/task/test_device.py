"""The device setting: resolved per machine, one clear line where there is no GPU, GPU runs where one is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sheaf.backends.inline import InlineBackend
from sheaf.backends.pool import PoolBackend, default_workers
from sheaf.backends.vectorized import VectorizedBackend
from sheaf.core.errors import ConfigError
from sheaf.run.simulate import simulate
from sheaf.run.store import RunStore
from sheaf.task.device import resolve_device, use_device, worker_devices
from sheaf.task.torch_task import TorchTask
from tests.backends.tasks import SMALL, digits, image_cnn, image_digits, mlp_task

needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU here (the GPU path runs where torch sees one)"
)


def test_the_setting_is_checked_where_it_is_read() -> None:
    with pytest.raises(ConfigError, match=r"^engine.device must be auto, cpu, cuda or cuda:N, got 'gpu'$"):
        simulate(overrides=["engine.device=gpu"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("setting", ["cuda", "cuda:0"])
def test_asking_for_a_gpu_on_a_machine_without_one_is_one_clear_line(setting: str, runs_dir: str) -> None:
    with pytest.raises(ConfigError) as caught:
        simulate(overrides=[f"engine.device={setting}", "rounds=1", runs_dir])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"engine.device={setting} but torch {torch.__version__} sees no CUDA GPU here")
    assert message.endswith("use engine.device=cpu or auto")


def test_auto_is_the_gpu_where_torch_sees_one_else_the_cpu_and_is_recorded(runs_dir: str) -> None:
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    result = simulate(overrides=["rounds=1", "clients=4", "engine.device=auto", runs_dir])
    use_device("cpu")
    with RunStore.open(result.run_path, readonly=True) as store:
        assert store.meta["device"] == resolve_device("auto")


def test_workers_are_dealt_over_the_gpus_and_several_share_one() -> None:
    assert worker_devices("cuda", 5, gpus=2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices("cuda:1", 3, gpus=4) == ["cuda:1"] * 3
    assert worker_devices("cpu", 2) == ["cpu", "cpu"]
    assert default_workers(1, "cpu") >= 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto is the GPU here")
def test_auto_computes_the_cpu_settings_bits_on_a_machine_without_a_gpu(tmp_path: Path) -> None:
    runs = [
        simulate(overrides=[*SMALL, f"runs_dir={tmp_path}", f"engine.device={d}"], task=mlp_task(), federation=digits())
        for d in ("auto", "cpu")
    ]
    assert runs[0].params.array_equal(runs[1].params)
    assert list(runs[0].history) == list(runs[1].history)


@needs_gpu
def test_torchtask_on_the_gpu_trains_close_to_the_cpu(tmp_path: Path) -> None:
    runs = {
        device: simulate(
            overrides=[*SMALL, f"runs_dir={tmp_path}", f"engine.device={device}"],
            task=TorchTask(image_cnn),
            federation=image_digits(),
            backend=InlineBackend(),
        )
        for device in ("cpu", "cuda")
    }
    use_device("cpu")
    for name, value in runs["cpu"].params.items():
        np.testing.assert_allclose(runs["cuda"].params[name], value, rtol=1e-3, atol=1e-4)


@needs_gpu
def test_the_pool_on_gpus_gives_the_inline_gpu_model_bit_for_bit(tmp_path: Path) -> None:
    def run(backend: object) -> object:
        return simulate(
            overrides=[*SMALL, f"runs_dir={tmp_path}", "engine.device=cuda"],
            task=TorchTask(image_cnn),
            federation=image_digits(),
            backend=backend,  # type: ignore[arg-type]
        )

    inline, pool = run(InlineBackend()), run(PoolBackend(workers=2))
    use_device("cpu")
    assert inline.params.array_equal(pool.params)  # type: ignore[attr-defined]


@needs_gpu
def test_the_vectorized_backend_trains_a_cohort_on_the_gpu_close_to_inline(tmp_path: Path) -> None:
    runs = [
        simulate(
            overrides=[*SMALL, f"runs_dir={tmp_path}", "engine.device=cuda"],
            task=mlp_task(),
            federation=digits(),
            backend=backend,
        )
        for backend in (InlineBackend(), VectorizedBackend())
    ]
    use_device("cpu")
    for name, value in runs[0].params.items():
        np.testing.assert_allclose(runs[1].params[name], value, rtol=1e-4, atol=1e-5)
