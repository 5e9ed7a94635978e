"""Every decoder of outside input keeps one rule on hostile input: it returns or raises a SheafError.

A few thousand generated inputs in the suite (``tests/fuzz.py`` makes them: valid encodings
mutated, structured nonsense, random bytes); ``benchmarks/fuzz_decoders.py`` runs 100,000
and more. Memory must not follow what an input *declares*: decoding the wire's worst inputs
holds no more than a few megabytes at once.
"""

from __future__ import annotations

import tracemalloc

import pytest

from tests.fuzz import DECODERS, fuzz


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_only_sheaf_errors_escape_a_decoder(name: str) -> None:
    outcome = fuzz(DECODERS[name], count=400, seed=12)

    assert outcome.escaped == []
    assert outcome.inputs == 400 and outcome.refused > 0


@pytest.mark.parametrize("name", ["wire.ResultReader", "wire.TaskReader", "chunks.TensorAssembler"])
def test_what_an_input_declares_is_not_allocated(name: str) -> None:
    tracemalloc.start()
    try:
        fuzz(DECODERS[name], count=300, seed=5)  # declared sizes up to 2**63 bytes
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
