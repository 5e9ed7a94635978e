"""Write one CSV per hospital from the bundled UCI Heart Disease file, as each would hold it.

Run from the repository root:

    python examples/heart/split_csv.py                 # -> examples/heart/hospitals/*.csv
    python examples/heart/split_csv.py --out DIR

Each file keeps the source's header and its hospital's lines *verbatim, in file order* —
so a deployed client reading ``0-cleveland.csv`` holds exactly the rows the simulation
gives client 0 (the natural partition keeps file order), and the same seed gives the same
model. The file name's number is the client id (Cleveland 0, Hungary 1, Switzerland 2,
VA Long Beach 3: the natural partition's order).
"""

from __future__ import annotations

import argparse
import csv
import io
from importlib import resources
from pathlib import Path

HOSPITALS = ("Cleveland", "Hungary", "Switzerland", "VA Long Beach")


def split(out: Path) -> list[Path]:
    """Write ``<id>-<hospital>.csv`` files into ``out``; return their paths."""
    text = resources.files("sheaf.data").joinpath("files/heart_disease_uci.csv").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    column = next(csv.reader([header])).index("dataset")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for client_id, hospital in enumerate(HOSPITALS):
        mine = [line for line in rows if next(csv.reader(io.StringIO(line)))[column] == hospital]
        path = out / f"{client_id}-{hospital.lower().replace(' ', '-')}.csv"
        path.write_text(header + "".join(mine), encoding="utf-8")
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("hospitals"), help="output folder")
    args = parser.parse_args()
    for path in split(args.out):
        print(path)


if __name__ == "__main__":
    main()
