"""A deployed round through SecAgg+ against a plain deployed round, as JSON.

    python benchmarks/secagg_deploy.py [--clients 20] [--processes 2] [--rows 100] [--rounds 4] [--repeats 2]

Runs :mod:`server_load`'s deployment — one real ``sheaf server`` process and client
processes on loopback, over real gRPC (plaintext: the protocol's cost, not TLS's), every
client in every round, a ``rows x 1000`` linear model whose local step is cheap — once
plain and once with ``secagg.enabled=true`` (and, with ``--ddp``, distributed DP),
interleaved ``--repeats`` times so both see the same machine. Prints one JSON object:
each mode's median seconds per round (the server's round loop: tasks out, results and —
secure — the five protocol stages, aggregation, the commit) and wire bytes per round, the
ratios secure / plain, and the load average before and after (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rows", type=int, default=100, help="model rows of 1000 (100: 101,000 parameters)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ddp", action="store_true", help="also distributed DP (Poisson sampling at rate 1)")
    args = parser.parse_args()
    os.environ["SHEAF_BENCH_ROWS"] = str(args.rows)
    import server_load  # after the rows are set: the task reads them on import

    modes = {"plain": [], "secure": ["secagg.enabled=true"]}
    if args.ddp:
        modes["secure_ddp"] = [
            "secagg.enabled=true", "secagg.dp=distributed", "sampling=poisson", "privacy.noise_multiplier=1",
            "privacy.clip=1",
        ]  # fmt: skip
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, object]]] = {mode: [] for mode in modes}
    for _ in range(args.repeats):
        for mode, sets in modes.items():
            runs[mode].append(server_load.run(args.clients, args.processes, args.rounds, True, sets))
    load_after = os.getloadavg()

    def median(mode: str, key: str) -> float:
        return float(statistics.median(float(r[key]) for r in runs[mode]))  # type: ignore[arg-type]

    def wire(mode: str, which: str) -> int:
        return int(statistics.median(r["wire_bytes_per_round"][which] for r in runs[mode]))  # type: ignore[index]

    out: dict[str, object] = {
        "clients": args.clients,
        "parameters": args.rows * 1000 + 1000,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "machine": runs["plain"][0]["machine"],
    }
    for mode in modes:
        out[mode] = {
            "median_seconds_per_round": round(median(mode, "median_seconds_per_round"), 3),
            "seconds_per_round_each_run": [r["seconds_per_round"] for r in runs[mode]],
            "bytes_received_per_round": wire(mode, "received_median"),
            "bytes_sent_per_round": wire(mode, "sent_median"),
        }
    plain = out["plain"]
    for mode in modes:
        if mode != "plain":
            mine = out[mode]
            out[f"{mode}_over_plain"] = {
                "seconds": round(mine["median_seconds_per_round"] / plain["median_seconds_per_round"], 2),  # type: ignore[index]
                "bytes_received": round(mine["bytes_received_per_round"] / plain["bytes_received_per_round"], 3),  # type: ignore[index]
                "bytes_sent": round(mine["bytes_sent_per_round"] / plain["bytes_sent_per_round"], 3),  # type: ignore[index]
            }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
