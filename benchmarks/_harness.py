"""What the digits accuracy benchmarks share (``privacy.py`` and ``secagg.py``).

The 8x8 digits over 1,000 clients, IID, Poisson sampling of 10% of the clients a round,
FedAvgM, one local epoch of SGD (lr 0.1, batch 4), delta = 1e-5: the setting of
[privacy](../docs/privacy.md#measured-accuracy-versus-epsilon), which the secure
aggregation benchmark compares distributed against central DP in. Each benchmark adds its
own overrides (rounds, privacy, backend) after these.
"""

from __future__ import annotations

#: delta of every epsilon the digits benchmarks report.
DIGITS_DELTA = 1e-5

#: The digits-1000 setting, as ``sheaf simulate`` overrides.
DIGITS_1000: list[str] = [
    "dataset=digits",
    "clients=1000",
    "partition=iid",
    "min_samples=1",
    "test_fraction=0",
    "evaluation.federated=false",
    "fraction=0.1",
    "sampling=poisson",
    "min_clients=1",
    "strategy=fedavgm",
    "epochs=1",
    "batch_size=4",
    "lr=0.1",
    f"privacy.delta={DIGITS_DELTA}",
]
