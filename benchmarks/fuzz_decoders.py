"""Fuzz every decoder of outside input, 100,000+ inputs, as JSON.

    python benchmarks/fuzz_decoders.py [--per-decoder 12000] [--seed 0]

Runs each decoder of :mod:`tests.fuzz` (the wire's result and task readers, the tensor
assembler, tensor records, worker messages, state trees, exact sums from workers, client
state files, request authentication) on ``--per-decoder`` generated inputs: valid
encodings mutated, structured nonsense, random bytes. The rule: only ``SheafError``
escapes, nothing hangs, memory stays flat. Prints one JSON object:

- per decoder: ``inputs``, ``refused`` (a SheafError), ``escaped`` (anything else: the
  rule says 0) with up to five examples, ``slowest_input_seconds``, ``seconds``, and
  ``traced_peak_mb`` (tracemalloc's peak for the decoder's whole run: what decoding the
  worst input held at once);
- totals, the process's peak resident memory (``VmHWM``) and its resident memory before and
  after the run.

A decoder that takes longer than ``--hang-seconds`` on one batch of inputs aborts the run
with every thread's traceback (faulthandler). Not part of the test suite (the suite runs a
few thousand inputs: ``tests/test_fuzz.py``); run it after changing a decoder.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fuzz holds the generators the suite uses too

from tests.fuzz import DECODERS, fuzz  # noqa: E402


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run(per_decoder: int, seed: int, hang_seconds: float, batch: int = 1000) -> dict[str, object]:
    results: dict[str, object] = {}
    rss_before = _status_mb("VmRSS")
    started = time.perf_counter()
    for index, (name, maker) in enumerate(DECODERS.items()):
        tracemalloc.start()
        inputs = refused = 0
        escaped: list[str] = []
        slowest = 0.0
        began = time.perf_counter()
        for first in range(0, per_decoder, batch):
            faulthandler.dump_traceback_later(hang_seconds, exit=True)
            outcome = fuzz(maker, min(batch, per_decoder - first), seed=seed * 1_000_003 + index * 10_007 + first)
            faulthandler.cancel_dump_traceback_later()
            inputs, refused = inputs + outcome.inputs, refused + outcome.refused
            escaped += outcome.escaped
            slowest = max(slowest, outcome.slowest)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        results[name] = {
            "inputs": inputs,
            "refused": refused,
            "returned": inputs - refused - len(escaped),
            "escaped": len(escaped),
            "escaped_examples": sorted(set(escaped))[:5],
            "slowest_input_seconds": round(slowest, 4),
            "seconds": round(time.perf_counter() - began, 1),
            "traced_peak_mb": round(peak / 2**20, 2),
        }
    totals = {
        key: sum(int(r[key]) for r in results.values() if isinstance(r, dict))
        for key in ("inputs", "refused", "escaped")
    }
    return {
        "decoders": results,
        "total": totals,
        "seconds": round(time.perf_counter() - started, 1),
        "rss_mb_before": rss_before,
        "rss_mb_after": _status_mb("VmRSS"),
        "peak_rss_mb": _status_mb("VmHWM"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-decoder", type=int, default=12_000, help="inputs per decoder (9 decoders)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-seconds", type=float, default=120.0, help="abort if one batch of 1,000 takes longer")
    args = parser.parse_args()
    report = run(args.per_decoder, args.seed, args.hang_seconds)
    print(json.dumps(report))
    total = report["total"]
    if isinstance(total, dict) and total["escaped"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
