"""Screenshots of the dashboard for docs/dashboard.md: the quickstart, a private run, the heart example.

Runs the three (small, seed 0) into a temporary folder, serves the dashboard on loopback and
has Debian's headless Chromium (through Playwright) save one PNG per run page, plus the runs
table, into docs/images/. Needs ``apt-get install chromium`` and the test extra.

    python scripts/dashboard_screenshots.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

import sheaf
from sheaf.ui import Dashboard

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
RUNS = {
    "quickstart": [],
    "private": ["privacy.mode=central", "strategy.sampling=poisson", "clients=200", "fraction=0.1", "rounds=40",
                "privacy.noise_multiplier=0.7"],  # fmt: skip
    "heart": ["dataset=heart"],
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp())
    for name, overrides in RUNS.items():
        print(f"running {name}", file=sys.stderr)
        sheaf.simulate(overrides=[*overrides, f"name={name}", f"runs_dir={folder}"])
    with Dashboard(folder, port=0) as board, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(board.url)
        page.wait_for_selector("#runs-table tbody tr")
        page.check("input[data-run=quickstart]")
        page.check("input[data-run=heart]")
        page.wait_for_function("() => window.sheaf.charts.compare && window.sheaf.charts.compare.series.length === 3")
        page.screenshot(path=str(OUT / "dashboard-runs.png"), full_page=True)
        for name in RUNS:
            page.goto(board.url + "#/run/" + name)
            page.wait_for_function("() => window.sheaf.charts.accuracy && document.getElementById('clients-table')")
            # the heart page whole: its clients table names the hospitals, with their data
            page.screenshot(path=str(OUT / f"dashboard-{name}.png"), full_page=name == "heart")
            print(OUT / f"dashboard-{name}.png")
        browser.close()


if __name__ == "__main__":
    main()
