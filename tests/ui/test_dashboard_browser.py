"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright.

One browser for the module; runs made once. The pages must load, the charts must hold the
run's own numbers (read back from the page's chart objects, and drawn: the canvas is not
blank), rounds must arrive while a run is going, and strings from the stores must show as
text. Screenshots go to the pytest temporary folder (printed with ``-s``).

Skipped, saying why, where Chromium or Playwright is missing (``.ci/run`` installs both).
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sheaf.core.config import RunConfig
from sheaf.run.simulate import simulate
from sheaf.run.store import RunStore
from tests.ui.tasks import HOSTILE_METRIC, HOSTILE_REASON, CountingTask

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip("Chromium not installed: apt-get install chromium (see .ci/run)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright not installed: pip install playwright")
pytest.importorskip("uvicorn", reason="the dashboard's extra is not installed: pip install 'sheaf[ui]'")

from sheaf.ui.server import Dashboard  # noqa: E402

#: Flags that keep Chromium off the network it cannot reach here (and quiet about it).
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    base = [f"runs_dir={folder}", "seed=0"]
    simulate(overrides=[*base, "name=quick", "rounds=6", "clients=10", "evaluation.interval=2"])
    simulate(
        overrides=[
            *base,
            "name=private",
            "rounds=5",
            "clients=20",
            "privacy.mode=central",
            "privacy.noise_multiplier=0.3",
        ]
    )
    simulate(overrides=[*base, "name=heart", "dataset=heart", "partition=natural", "clients=4", "rounds=4"])
    simulate(
        overrides=[*base, "name=hostile", "rounds=3", "clients=5", "partition=iid", "fraction=1", "backend=inline"],
        task=CountingTask(failing=1, hostile=True),
    )
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def board(runs: Path) -> Iterator[Dashboard]:
    with Dashboard(runs, port=0, refresh=0.2) as served:
        yield served


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.set_default_timeout(
        120_000
    )  # waits end when their condition holds; 30 s (the default) is short on a busy machine
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    yield page
    page.close()
    assert not errors, errors


def history(runs: Path, name: str) -> Any:
    with RunStore.open(runs / f"{name}.sqlite", readonly=True) as store:
        return store.history()


def chart_data(page: Any, chart: str) -> list[list[float | None]]:
    data: list[list[float | None]] = page.evaluate(
        f"() => window.sheaf.charts[{chart!r}].data.map((s) => Array.from(s))"
    )
    return data


def drawn(page: Any, chart: str) -> int:
    """How many pixels of the chart's canvas are painted (0 for a blank chart)."""
    return int(
        page.evaluate(
            f"""() => {{ const c = document.querySelector('#chart-{chart} canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }}"""
        )
    )


def same(values: list[float | None], expected: list[float]) -> bool:
    return len(values) == len(expected) and all(
        v is not None and math.isclose(v, e, rel_tol=1e-9) for v, e in zip(values, expected, strict=True)
    )


def open_run(page: Any, board: Dashboard, name: str) -> None:
    page.goto(board.url + "#/run/" + name)
    page.wait_for_function(
        "() => window.sheaf.charts.accuracy !== undefined && document.getElementById('clients-table') !== null"
    )


def test_runs_table_lists_every_run_with_its_status_and_figures(
    page: Any, board: Dashboard, runs: Path, shots: Path
) -> None:
    page.goto(board.url)
    page.wait_for_selector("#runs-table tbody tr")

    rows = page.locator("#runs-table tbody tr")
    assert rows.count() == 4
    quick = page.locator("#runs-table tbody tr", has_text="quick")
    assert quick.locator(".badge").inner_text() == "finished"
    assert f"{history(runs, 'quick').final_central['accuracy']:.4f}" in quick.inner_text()
    page.fill("#filter", "heart")
    page.wait_for_function("() => document.querySelectorAll('#runs-table tbody tr').length === 1")
    page.fill("#filter", "")
    page.locator("#runs-table th", has_text="central acc").click()
    page.screenshot(path=str(shots / "runs.png"), full_page=True)


def test_a_runs_charts_hold_its_numbers_and_its_clients_their_names(
    page: Any, board: Dashboard, runs: Path, shots: Path
) -> None:
    records = history(runs, "heart")

    open_run(page, board, "heart")

    accuracy = chart_data(page, "accuracy")
    assert accuracy[0] == [r.round for r in records]
    assert same(accuracy[1], [r.central["accuracy"] for r in records])
    evaluated = [r for r in records if r.federated]
    p10 = [v for v in accuracy[3] if v is not None]
    assert same(p10, [r.federated["accuracy"]["p10"] for r in evaluated])
    assert same(chart_data(page, "loss")[1], [r.central["loss"] for r in records])
    assert same(chart_data(page, "seconds")[1], [r.seconds for r in records])
    traffic = chart_data(page, "bytes")  # beside seconds: each round's training traffic, in KiB
    assert same(traffic[1], [r.traffic["download_bytes"] / 1024 for r in records])
    assert same(traffic[2], [r.traffic["upload_bytes"] / 1024 for r in records])
    for chart in ("accuracy", "loss", "jain", "seconds", "bytes"):
        assert drawn(page, chart) > 500, chart
    names = page.locator("#clients-table tbody td.name").all_inner_texts()
    assert sorted(names) == ["Cleveland", "Hungary", "Switzerland", "VA Long Beach"]
    # the config on the page is TOML that gives the same run again
    config = tomllib.loads(page.locator("#config").inner_text())
    with RunStore.open(runs / "heart.sqlite", readonly=True) as store:
        assert RunConfig.from_dict(config).to_dict() == store.config
    page.locator("#clients-table th", has_text="accuracy").click()  # sortable
    page.screenshot(path=str(shots / "heart.png"), full_page=True)


def test_a_private_run_shows_epsilon_by_round_and_accuracy_against_epsilon(
    page: Any, board: Dashboard, runs: Path, shots: Path
) -> None:
    records = history(runs, "private")

    open_run(page, board, "private")

    assert same(chart_data(page, "epsilon")[1], [r.privacy["epsilon"] for r in records])
    epsilon, accuracy = chart_data(page, "acc_vs_eps")
    assert same(epsilon, sorted(r.privacy["epsilon"] for r in records))
    assert same(accuracy, [r.central["accuracy"] for r in sorted(records, key=lambda r: r.privacy["epsilon"])])
    assert drawn(page, "epsilon") > 500 and drawn(page, "acc_vs_eps") > 500
    assert page.locator("#card-epsilon").inner_text().endswith(f"{records[-1].privacy['epsilon']:.3g}")
    page.screenshot(path=str(shots / "private.png"), full_page=True)


def test_strings_from_a_store_show_as_text_never_as_markup(page: Any, board: Dashboard) -> None:
    open_run(page, board, "hostile")
    page.wait_for_selector("#dropouts-table")

    assert HOSTILE_REASON in page.locator("#dropout-reasons").inner_text()
    assert HOSTILE_METRIC in page.locator("#clients-table thead").inner_text()
    assert HOSTILE_METRIC in page.locator("#charts").inner_text()  # a chart of the task's own metric
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("img[src=x], #dropouts script, #dropouts b").count() == 0


def test_a_tasks_own_metrics_get_charts_like_the_built_in_ones(page: Any, board: Dashboard, runs: Path) -> None:
    records = history(runs, "hostile")

    open_run(page, board, "hostile")

    titles = page.locator("#charts h3").all_inner_texts()
    assert {"central f1", "clients' f1", "fit grad_norm"} <= set(titles)
    for key, expected in (
        ("central:f1", [r.central["f1"] for r in records]),
        ("fit:grad_norm", [r.fit["grad_norm"] for r in records]),
    ):
        chart = str(page.get_attribute(f'[data-metric="{key}"]', "id")).removeprefix("chart-")
        assert same(chart_data(page, chart)[1], expected), key


def test_several_runs_on_one_chart(page: Any, board: Dashboard, runs: Path) -> None:
    page.goto(board.url)
    page.wait_for_selector("#runs-table tbody tr")

    page.check("input[data-run=quick]")
    page.check("input[data-run=heart]")
    page.wait_for_function(
        "() => window.sheaf.charts.compare !== undefined && window.sheaf.charts.compare.series.length === 3"
    )

    rounds, quick, heart = chart_data(page, "compare")
    assert rounds == [1, 2, 3, 4, 5, 6]
    assert same([v for v in quick if v is not None], [r.central["accuracy"] for r in history(runs, "quick")])
    assert same([v for v in heart if v is not None], [r.central["accuracy"] for r in history(runs, "heart")])


def test_rounds_arrive_while_a_run_is_going(page: Any, board: Dashboard, runs: Path, shots: Path) -> None:
    overrides = [
        f"runs_dir={runs}",
        "name=live",
        "rounds=12",
        "clients=4",
        "partition=iid",
        "fraction=1",
        "backend=inline",
    ]
    going = threading.Thread(target=simulate, kwargs={"overrides": overrides, "task": CountingTask(pause=0.08)})
    going.start()
    try:
        while not (runs / "live.sqlite").exists():
            time.sleep(0.02)
        open_run(page, board, "live")
        seen = set()
        status = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen.add(page.evaluate("() => window.sheaf.charts.accuracy.data[0].length"))
            status.add(page.locator("#run-head .badge").inner_text())
            if 12 in seen and "finished" in status:
                break
            time.sleep(0.05)
    finally:
        going.join()
    assert "running" in status and "finished" in status
    assert len(seen) >= 3 and max(seen) == 12, seen  # several updates, not one page load
    page.screenshot(path=str(shots / "live.png"), full_page=True)
    print(f"screenshots: {shots}")
    assert os.listdir(shots)
