"""The figures the docs publish are what the code produces: read from the page, recomputed.

Each test reads a documented table row for seed 0 and reruns that configuration (the
cheap ones: seconds). A change that moves a published figure fails here until the page is
regenerated with the command the page names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import sheaf
from sheaf.data.sources import FASHION_MNIST_DIR
from sheaf.run.baseline import pooled_baseline

ROOT = Path(__file__).resolve().parents[1]


def table_row(page: Path, first_cell: str) -> list[str]:
    """The cells of the first markdown table row of ``page`` whose first cell is ``first_cell``."""
    for line in page.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"{page.relative_to(ROOT)} has no table row starting with {first_cell!r}")


def test_the_quickstart_page_gives_seed_0s_accuracies(tmp_path: Path) -> None:
    page = ROOT / "docs" / "quickstart.md"
    _, central, worst10, *_ = table_row(page, "0")
    documented_json = re.search(r'"central_accuracy": ([0-9.]+)', page.read_text())
    assert documented_json is not None and documented_json.group(1) == central

    summary = sheaf.simulate(overrides=["seed=0", f"runs_dir={tmp_path}"]).summary()

    assert f"{summary['central_accuracy']:.3f}" == central
    assert f"{summary['federated_accuracy']['p10']:.3f}" == worst10


def test_the_heart_page_gives_seed_0s_accuracies(tmp_path: Path) -> None:
    page = ROOT / "examples" / "heart" / "README.md"
    _, federated, local, pooled = table_row(page, "0")
    toml = ROOT / "examples" / "heart" / "heart.toml"
    got = {}
    for mode in ("federated", "local"):
        config = sheaf.load_config(toml, ["seed=0", f"preprocessing={mode}", f"runs_dir={tmp_path}"])
        got[mode] = f"{sheaf.simulate(config).summary()['central_accuracy']:.3f}"
    got["pooled"] = f"{pooled_baseline(config).metrics['accuracy']:.3f}"

    assert got == {"federated": federated, "local": local, "pooled": pooled}


#: The row of examples/fashion-mnist/README.md this test recomputes (the full run takes many
#: minutes; its first rounds are the same rounds as the full run's, and seconds here).
FMNIST_ROW = "first 2 rounds (`--set rounds=2`): watched accuracy at rounds 1, 2; test accuracy after round 2"


@pytest.mark.e2e
@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist",
)
def test_the_fashion_mnist_page_gives_the_examples_first_rounds(tmp_path: Path) -> None:
    _, documented = table_row(ROOT / "examples" / "fashion-mnist" / "README.md", FMNIST_ROW)
    # The example's toml as run.py loads it; inline gives the pool's model bit for bit, and
    # the clients' own evaluation does not touch the model.
    config = sheaf.load_config(
        ROOT / "examples" / "fashion-mnist" / "fashion_mnist.toml",
        ["rounds=2", "evaluation.monitor=2000", "evaluation.federated=false", "backend=inline", f"runs_dir={tmp_path}"],
    )

    result = sheaf.simulate(config)

    watched = ", ".join(f"{record.monitor['accuracy']:.4f}" for record in result.history)
    assert f"{watched}; {result.summary()['central_accuracy']:.4f}" == documented


@pytest.mark.parametrize("threads_before", [1, 2])
def test_the_pooled_baseline_trains_with_the_runs_threads_whatever_the_process_had(threads_before: int) -> None:
    # The thread count changes the weights (DESIGN.md): a baseline run after something that
    # left torch at 2 threads gave chem97's pooled 0.371 where its README, made at 1, says 0.376.
    torch.set_num_threads(threads_before)
    config = sheaf.load_config(overrides=["dataset=heart", "rounds=2", "threads=1"])

    pooled_baseline(config)

    assert torch.get_num_threads() == 1
