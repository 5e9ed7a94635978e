"""Secure aggregation's cost per round against plain aggregation, as JSON.

    nice python benchmarks/secagg.py [--clients 10,50,100,200] [--lengths 1e4,1e5,1e6]
                                     [--dropouts 0,0.3] [--bits 32] [--skip 200x1e6x0.3]
                                     [--threshold 0.5] [--workers N]
    nice python benchmarks/secagg.py --profile --clients 100 --lengths 1e5 --dropouts 0.3 [--threshold 0.5]
    nice python benchmarks/secagg.py --accuracy [--rounds 100] [--seeds 0,1,2] [--rows central,distributed] [--stand-in]

For every cohort size n, vector length d and dropout rate, one round of SecAgg+ runs in
this process (:func:`sheaf.secagg.run_protocol`: the real protocol, every message encoded
to bytes and decoded), and one round of plain aggregation beside it:

Seconds are CPU seconds of the thread doing the work (``time.thread_time``): what the work
costs, whatever else runs on the machine (wall seconds of the whole in-process round are
reported beside them).

- **client seconds**: one client's work — quantising its update (clip, rotate, round into
  Z_2^32) and its part of the protocol (key generation, Shamir sharing, sealing, mask
  expansion, signing, unmasking shares), the mean over the cohort; clients run in
  parallel in a real round, so one client's time is what a round waits for. Plain: one
  client serialising its float32 update.
- **server seconds**: the server's part of the protocol (routing, summing masked inputs,
  checking signatures, rebuilding secrets, removing masks) and decoding the sum. Plain:
  sheaf's exact weighted sum of the n float32 updates (what the round loop does), with a
  naive float64 ``numpy`` sum beside it for reference.
- **round ratio**: (client + server seconds) secure over plain — the aggregation's share
  of a round; local training, the same in both, is not in it.
- **bytes**: what one client uploads (every message) and downloads; the quantised update
  alone (d' ring elements of 4 bytes, d' the rotation's padded length), and the float32
  update (4 d bytes).

Dropouts: the given share of the clients drops out after sharing its keys, before sending
its masked input — the costliest point for the server, which must then rebuild each
dropped client's mask key and remove its pairwise masks from its surviving neighbours'
inputs. The neighbour graph is planned for the rate (``max_dropout``; threshold half the
neighbours). Every client holds the same quantised vector (the timings do not depend on
the values, and the largest cells would otherwise hold gigabytes of inputs); every
client's masks are its own. Each cell runs ``--repeats`` times (default 3; once for cells
of more than 2e7 coordinates in all) and reports the fastest run of each side, the usual
way to time on a shared machine; the load average is printed with the results.

``--threshold``: the secret-sharing threshold as a fraction of the neighbours
(``secagg.threshold``, default 0.5); the graph's degree is planned for it and the dropout
rate. ``--workers``: the server's unmasking threads (default: its own choice, one per core
for a round this size). Server seconds are process CPU time, every thread counted: threads
shorten the unmasking's wall time, never its CPU.

``--profile``: where the server's CPU goes in one round of the first cell (one unmasking
thread), stage by stage and, within the unmasking, part by part (:func:`profile`), the
fastest of ``--repeats`` and every run.

``--accuracy``: digits over 1,000 clients (the setting of ``benchmarks/privacy.py``:
IID, Poisson sampling of 10% a round, 100 rounds, the 64-64-10 MLP, one local epoch of
SGD lr 0.1 with batch 4, FedAvgM, C = 0.5, delta 1e-5) with central DP and with
distributed DP both calibrated to epsilon = 3, distributed DP at the central run's noise
multiplier, and secure aggregation without DP; the central accuracy, epsilon, noise
multiplier, seconds and load average of each, for every seed of ``--seeds`` (default 0;
``--rows`` picks the settings), then each setting's mean and spread over the seeds and the
paired difference distributed minus central (same seed: same data, cohorts and
initialisation; only the noise draws and the quantisation differ). One seed does not
separate a mechanism's cost from its noise's draw: compare means. The distributed runs use
the real protocol (``--stand-in`` for its exact stand-in, which gives the same sums bit for
bit and so the same models).

    nice python benchmarks/secagg.py --accuracy --stand-in --seeds 0,1,2,3,4 --rows central,distributed
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Any

import numpy as np
from _harness import DIGITS_1000

from sheaf.core.exactsum import ExactSum
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.quantize import Quantizer, SeededBits, choose_scale
from sheaf.secagg import Stage, protocol_setup, run_protocol


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def plain_round(n: int, d: int, update: np.ndarray) -> dict[str, Any]:
    """One plain round: a client serialises its float32 update; the server sums n exactly."""
    started = time.thread_time()
    payload = update.astype(np.float32).tobytes()
    client = time.thread_time() - started
    like = Params({"w": np.zeros(d, np.float32)})
    delta = Params({"w": np.frombuffer(payload, np.float32)})
    updates = [Update(i, delta, 10 + i) for i in range(n)]
    started = time.thread_time()
    exact = ExactSum(like)
    exact.add_updates(updates)
    exact.total()
    server = time.thread_time() - started
    started = time.thread_time()
    total = np.zeros(d, np.float64)
    for u in updates:
        total += u.num_examples * u.delta["w"]
    naive = time.thread_time() - started
    return {"client_s": client, "server_s": server, "numpy_sum_s": naive, "upload_bytes": len(payload)}


def secure_round(
    n: int, d: int, dropout: float, bits: int, update: np.ndarray, threshold: float = 0.5, workers: int | None = None
) -> dict[str, Any]:
    """One round of SecAgg+ in process, with ``dropout`` of the clients leaving before their input;
    ``threshold`` is the secret-sharing threshold as a fraction of the neighbours."""
    scale = choose_scale(bits, clip=10.0, max_weight=1000, inputs=n, length=d)
    quantizer = Quantizer(d, bits, scale, 10.0, 1000, weighted=True)
    started = time.thread_time()
    ring = quantizer.encode(update, weight=7, rotation_seed=1, bits=SeededBits(np.random.default_rng(0)))
    encode_s = time.thread_time() - started
    setup = protocol_setup(
        range(n),
        instance=os.urandom(16),
        graph_seed=n,
        bits=bits,
        length=quantizer.ring_length,
        max_dropout=max(dropout, 0.1),
        threshold_fraction=threshold,
    )
    rng = np.random.default_rng(n * 7 + d)
    dropped = {int(c): Stage.INPUT for c in rng.choice(n, round(dropout * n), replace=False)}
    started = time.perf_counter()
    threads = {} if workers is None else {"workers": workers}  # (so it also runs against older code)
    outcome = run_protocol(setup, dict.fromkeys(setup.clients, ring), dropped, **threads)
    wall = time.perf_counter() - started
    decode_s = 0.0
    if outcome.total is not None:
        started = time.thread_time()
        quantizer.decode(outcome.total, 1)
        decode_s = time.thread_time() - started
    clients = [c for c in setup.clients if c not in dropped]
    width = -(-bits // 8)
    return {
        "degree": setup.degree,
        "threshold": setup.threshold,
        "min_survivors": setup.min_survivors,
        "padded_length": quantizer.padded,
        "aborted": outcome.aborted,
        "survivors": len(outcome.survivors),
        "client_s": encode_s + float(np.mean([outcome.client_seconds[c] for c in clients])),
        "client_encode_s": encode_s,
        "server_s": outcome.server_seconds + decode_s,
        "server_wall_s": outcome.server_wall_seconds + decode_s,
        "server_decode_s": decode_s,
        "wall_s": wall,
        "upload_bytes": float(np.mean([outcome.uploaded[c] for c in clients])),
        "download_bytes": float(np.mean([outcome.downloaded[c] for c in clients])),
        "quantised_bytes": quantizer.ring_length * width,
    }


DIGITS = [
    *DIGITS_1000,
    "privacy.clip=0.5",
    "backend=inline",
    "seed=0",
]


#: The rows ``--accuracy`` can run (``--rows``), in this order for every seed.
ACCURACY_ROWS = ("central", "distributed", "distributed_central_z", "no_dp")


def accuracy(
    rounds: int,
    stand_in: bool,
    seeds: list[int] | None = None,
    only: tuple[str, ...] = ACCURACY_ROWS,
    noise: str = "seeded",
) -> dict[str, Any]:
    """Central against distributed DP on digits (see the module docstring), for every seed:
    each row's accuracy per seed, and per setting the mean and spread over the seeds."""
    import tempfile

    import sheaf

    runs = tempfile.mkdtemp()
    distributed = ["secagg.enabled=true", "secagg.dp=distributed", f"secagg.stand_in={str(stand_in).lower()}"]
    rows: list[dict[str, Any]] = []

    def one(row: str, seed: int, label: str, settings: list[str]) -> dict[str, Any]:
        started = time.perf_counter()
        load_before = os.getloadavg()
        overrides = [*(o for o in DIGITS if not o.startswith("seed=")), f"seed={seed}", f"privacy.noise={noise}"]
        result = sheaf.simulate(overrides=[*overrides, f"rounds={rounds}", f"runs_dir={runs}", *settings])
        summary = result.summary()
        record = {
            "row": row,
            "seed": seed,
            "noise": noise,
            "setting": label,
            "central_accuracy": summary["central_accuracy"],
            "epsilon": summary.get("epsilon"),
            "epsilon_server": summary.get("epsilon_server"),
            "delta": summary.get("delta"),
            "noise_multiplier": summary.get("noise_multiplier"),
            "rounds_aggregated": sum(1 for r in result.history if r.aggregated),
            "seconds": round(time.perf_counter() - started, 1),
            "load_average": [load_before, os.getloadavg()],
        }
        print(json.dumps(record), file=sys.stderr, flush=True)
        rows.append(record)
        return record

    for seed in seeds or [0]:
        z = None
        if "central" in only or "distributed_central_z" in only:
            z = one("central", seed, "central DP, epsilon 3", ["privacy.mode=central", "privacy.target_epsilon=3"])[
                "noise_multiplier"
            ]
        if "distributed" in only:
            one("distributed", seed, "distributed DP, epsilon 3", [*distributed, "privacy.target_epsilon=3"])
        if "distributed_central_z" in only:
            one(
                "distributed_central_z",
                seed,
                f"distributed DP, central's z = {z:.4g}",
                [*distributed, f"privacy.noise_multiplier={z}"],
            )
        if "no_dp" in only:
            one(
                "no_dp", seed, "FedAvgM without DP, secure aggregation", ["secagg.enabled=true", "secagg.stand_in=true"]
            )
    means = {}
    for row in only:
        values = [r["central_accuracy"] for r in rows if r["row"] == row]
        if values:
            means[row] = {
                "seeds": len(values),
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "per_seed": values,
            }
    if "central" in means and "distributed" in means:
        pairs = [
            d["central_accuracy"] - c["central_accuracy"]
            for c in rows
            if c["row"] == "central"
            for d in rows
            if d["row"] == "distributed" and d["seed"] == c["seed"]
        ]
        means["distributed_minus_central"] = {
            "mean": float(np.mean(pairs)),
            "std": float(np.std(pairs, ddof=1)) if len(pairs) > 1 else None,
            "per_seed": pairs,
        }
    return {"runs": rows, "over_seeds": means}


def noise_check(seed: int = 0, trials: int = 3) -> dict[str, Any]:
    """What the distributed mechanism does to a sum, against central DP, without training:
    the plan of the ``--accuracy`` setting (distributed DP at epsilon 3), 100 clipped random
    updates encoded (rotated, scaled, stochastically rounded), summed in the ring and decoded
    — without noise (the quantisation error alone) and with every client's noise share and
    the server's top-up to K (the released noise) — each against the exact float sum; beside
    them central DP's noise standard deviation z C at its own z for the same epsilon."""
    from sheaf.core.config import load_config
    from sheaf.privacy.plan import privacy_plan
    from sheaf.quantize.quantizer import ring_sum
    from sheaf.secagg.discrete_gaussian import discrete_gaussian
    from sheaf.secagg.distributed import top_up
    from sheaf.secagg.plan import secagg_plan

    length, clients = 4810, 100  # the 64-64-10 MLP's parameters; the expected cohort
    base = [*DIGITS, "rounds=100", "privacy.target_epsilon=3"]
    plan = secagg_plan(
        load_config(overrides=[*base, "secagg.enabled=true", "secagg.dp=distributed"]), population=1000, length=length
    )
    central = privacy_plan(load_config(overrides=[*base, "privacy.mode=central"]), population=1000)
    assert plan is not None
    assert central is not None
    quantizer = plan.quantizer()
    rng = np.random.default_rng(seed)
    bits = SeededBits(np.random.default_rng(seed + 1))
    updates = rng.normal(size=(clients, length))
    norms = plan.clip * rng.uniform(0.3, 1.0, size=(clients, 1))  # inside C: clipping is the same in both
    updates *= norms / np.linalg.norm(updates, axis=1, keepdims=True)
    exact = updates.sum(axis=0)
    quantised, noised = [], []
    for trial in range(trials):
        plain = [quantizer.encode(u, rotation_seed=trial, bits=bits) for u in updates]
        quantised.append(quantizer.decode(ring_sum(plain, plan.bits), trial)[0] - exact)
        shares = [
            quantizer.encode(
                u, rotation_seed=trial, bits=bits, noise=discrete_gaussian(plan.variance, quantizer.padded, bits)
            )
            for u in updates
        ]
        ring, _ = top_up(plan, ring_sum(shares, plan.bits), clients, bits)
        noised.append(quantizer.decode(ring, trial)[0] - exact)
    central_std = central.noise_multiplier * central.clip
    released = float(np.concatenate(noised).std())
    return {
        "clients": clients,
        "length": length,
        "padded_length": quantizer.padded,
        "scale": plan.scale,
        "top_up_shares": plan.top_up,
        "share_variance": plan.variance,
        "distributed_z": plan.noise_multiplier,
        "central_z": central.noise_multiplier,
        "quantisation_error_std": float(np.concatenate(quantised).std()),
        "released_noise_std": released,
        "planned_noise_std": math.sqrt(plan.top_up * plan.variance) / plan.scale,
        "central_noise_std": central_std,
        "released_over_central": released / central_std,
        "planned_over_central": math.sqrt(plan.top_up * plan.variance) / plan.scale / central_std,
        "load_average": os.getloadavg(),
    }


def primitives(length: int = 102_400, repeats: int = 200) -> dict[str, Any]:
    """Mask expansion: ChaCha20 against AES-256-CTR keystreams of ``4 * length`` bytes (and
    the same AES-256-CTR keystream through GCM's code, as the masks are expanded), the
    fastest of 5 batches of ``repeats`` (CPU seconds of this thread), same run; beside them
    the rest of one pairwise mask's cost to the server: its seed (X25519 and HKDF-SHA256)
    and adding its words into the sum."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    zeros, out = bytearray(4 * length), bytearray(4 * length + 64)
    ciphers = {
        "chacha20": lambda key: Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None),
        "aes256_ctr": lambda key: Cipher(algorithms.AES256(key), modes.CTR(bytes(16))),
    }
    best = dict.fromkeys([*ciphers, "aes256_ctr_via_gcm"], float("inf"))
    try:  # the mask's keystream as sheaf computes it: blocks 2, 3, ... through GCM's code
        from sheaf.secagg.crypto import _keystream_into
    except ImportError:  # older code: counter mode's only
        _keystream_into = None  # type: ignore[assignment]
        del best["aes256_ctr_via_gcm"]
    for _ in range(5):
        for name, make in ciphers.items():
            keys = [os.urandom(32) for _ in range(repeats)]
            started = time.thread_time()
            for key in keys:
                make(key).encryptor().update_into(zeros, out)
            best[name] = min(best[name], (time.thread_time() - started) / repeats)
        if _keystream_into is not None:
            keys = [os.urandom(32) for _ in range(repeats)]
            started = time.thread_time()
            for key in keys:
                _keystream_into(key, 4 * length, out, through_gcm=True)
            best["aes256_ctr_via_gcm"] = min(best["aes256_ctr_via_gcm"], (time.thread_time() - started) / repeats)
    # What else one pairwise mask the server removes costs: the key agreement with HKDF
    # (the seed) and the addition of the keystream into the sum, same batches.
    from sheaf.secagg.client import pairwise_seed
    from sheaf.secagg.crypto import generate_keypair

    private, _ = generate_keypair()
    peers = [generate_keypair()[1] for _ in range(repeats)]
    total, words = np.zeros(length, np.uint32), np.frombuffer(memoryview(out)[: 4 * length], "<u4")
    seed_s = add_s = float("inf")
    for _ in range(5):
        started = time.thread_time()
        for index, peer in enumerate(peers):
            pairwise_seed(private, peer, bytes(16), 0, index + 1)
        seed_s = min(seed_s, (time.thread_time() - started) / repeats)
        started = time.thread_time()
        for _ in peers:
            np.add(total, words, out=total)
        add_s = min(add_s, (time.thread_time() - started) / repeats)
    return {
        "bytes": 4 * length,
        **{f"{name}_ms": 1e3 * seconds for name, seconds in best.items()},
        **{f"{name}_gb_s": 4 * length / seconds / 1e9 for name, seconds in best.items()},
        "pairwise_seed_ms": 1e3 * seed_s,
        "add_into_sum_ms": 1e3 * add_s,
        "load_average": os.getloadavg(),
    }


def unmasking(n: int, d: int, dropout: float, repeats: int) -> dict[str, Any]:
    """The server's unmasking stage alone, on one thread and on one per core, interleaved in
    the same run: the fastest process CPU and wall seconds of ``repeats`` each."""
    from sheaf.secagg.client import client_step, start_client
    from sheaf.secagg.server import ServerStage, server_close, server_receive, start_server, unmask_workers

    setup = protocol_setup(range(n), instance=os.urandom(16), graph_seed=n, bits=32, length=d, max_dropout=dropout)
    dropped = {int(c) for c in np.random.default_rng(n * 7 + d).choice(n, round(dropout * n), replace=False)}
    server, states = start_server(setup), {}
    for c in setup.clients:
        states[c], advert = start_client(setup, c, np.zeros(d, np.uint32))
        server = server_receive(server, advert)
    for stage in range(4):  # dropouts leave after sharing keys, before their masked input
        server, outbox = server_close(server)
        for c, message in outbox.items():
            states[c], reply = client_step(states[c], message)
            if not (stage == 1 and c in dropped) and reply is not None:
                server = server_receive(server, reply)
    assert server.stage is ServerStage.UNMASKING
    jobs = len(server.survivors) + sum(
        1 for owner in dropped for peer in setup.neighbours(owner) if peer in set(server.survivors)
    )
    parallel = max(2, unmask_workers(jobs, d))
    best: dict[int, list[float]] = {1: [math.inf, math.inf], parallel: [math.inf, math.inf]}
    results = []
    for _ in range(repeats):
        for workers in best:
            cpu, wall = time.process_time(), time.perf_counter()
            done, _ = server_close(server, workers=workers)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            best[workers] = [min(best[workers][0], cpu), min(best[workers][1], wall)]
            results.append(done.result)
    assert all(np.array_equal(r, results[0]) for r in results)  # the same sum on any number of threads
    return {
        "clients": n,
        "length": d,
        "dropout": dropout,
        "masks": jobs,
        **{f"workers_{w}_cpu_s": b[0] for w, b in best.items()},
        **{f"workers_{w}_wall_s": b[1] for w, b in best.items()},
        "load_average": os.getloadavg(),
    }


def profile(n: int, d: int, dropout: float, threshold: float = 0.5) -> dict[str, Any]:
    """Where the server's CPU goes in one round (the ``secure_round`` setting, unmasking on
    one thread): CPU seconds of each stage (receiving its messages, closing it), of decoding
    and encoding the server's messages, and within the unmasking of indexing the shares,
    Shamir reconstruction (Lagrange bases included), checking the rebuilt keys, the pairwise
    seeds (X25519 and HKDF), the keystreams and the additions; and the garbage collector's
    wall seconds inside the unmasking (counted in the parts it interrupted). Each run starts
    with no Lagrange basis computed (a new cohort's round) and a collected heap. Each part
    is timed by wrapping the function that does it (about a microsecond per call of
    overhead); ``rest`` is the server's CPU not in a part."""
    import gc
    from collections import defaultdict

    import sheaf.secagg.crypto as crypto_module
    import sheaf.secagg.driver as driver_module
    import sheaf.secagg.server as server_module
    import sheaf.secagg.shamir as shamir_module
    from sheaf.secagg.messages import AdvertiseKeys, ConsistencySignature, MaskedInput, ShareKeys, UnmaskShares

    client_kinds = (AdvertiseKeys, ShareKeys, MaskedInput, ConsistencySignature, UnmaskShares)
    parts: dict[str, float] = defaultdict(float)
    saved: list[tuple[Any, str, Any]] = []

    def wrap(module: Any, names: str, label: Any) -> None:
        # The first of ``names`` the code has (so that older code can be profiled too).
        name = next((n for n in names.split("|") if hasattr(module, n)), "")
        if not name:
            return
        original = getattr(module, name)
        saved.append((module, name, original))

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            result = original(*args, **kwargs)
            key = label(args, result) if callable(label) else label
            if key:
                parts[key] += time.thread_time() - started
            return result

        setattr(module, name, timed)

    def close(state: Any, **_: Any) -> Any:
        started = time.process_time()
        result = saved[0][2](state, workers=1)
        parts[f"close_{state.stage.value}"] += time.process_time() - started
        return result

    saved.append((driver_module, "server_close", driver_module.server_close))
    driver_module.server_close = close  # type: ignore[assignment]
    wrap(driver_module, "server_receive", lambda args, _: f"receive_{type(args[1]).__name__}")
    wrap(driver_module, "decode_message", lambda _, out: "decode" if isinstance(out, client_kinds) else "")
    wrap(driver_module, "encode_message", lambda args, _: "" if isinstance(args[0], client_kinds) else "encode")
    wrap(server_module, "_shares_by_owner", "unmask_index_shares")
    wrap(server_module, "_rebuild_all|_rebuild", "unmask_shamir")
    wrap(server_module, "load_private", "unmask_check_keys")
    wrap(server_module, "public_key_of", "unmask_check_keys")
    wrap(server_module, "pairwise_seed", "unmask_pairwise_seeds")
    collector = {"on": False, "started": 0.0, "masking": False}
    server_add_mask = server_module.add_mask

    def add_mask(*args: Any, **kwargs: Any) -> None:  # the server's masks, not the clients'
        collector["masking"] = True
        started = time.thread_time()
        try:
            server_add_mask(*args, **kwargs)
        finally:
            parts["unmask_masks"] += time.thread_time() - started
            collector["masking"] = False

    saved.append((server_module, "add_mask", server_add_mask))
    server_module.add_mask = add_mask  # type: ignore[assignment]
    wrap(crypto_module, "_keystream_into", lambda *_: "unmask_keystreams" if collector["masking"] else "")

    def collecting(phase: str, _: dict[str, Any]) -> None:
        if collector["on"] and phase == "start":
            collector["started"] = time.perf_counter()
        elif collector["on"]:
            parts["unmask_gc_wall"] += time.perf_counter() - collector["started"]

    # Every run as a deployed round's: a new cohort's Lagrange bases not yet computed, and
    # the collector starting from a collected heap (what one round leaves is not the next's).
    for cached in (getattr(shamir_module, "lagrange_at_zero", None), getattr(shamir_module, "_without", None)):
        if cached is not None:
            cached.cache_clear()
    gc.collect()
    gc.callbacks.append(collecting)
    try:
        setup = protocol_setup(
            range(n),
            instance=os.urandom(16),
            graph_seed=n,
            bits=32,
            length=d,
            max_dropout=max(dropout, 0.1),
            threshold_fraction=threshold,
        )
        dropped = {
            int(c): Stage.INPUT for c in np.random.default_rng(n * 7 + d).choice(n, round(dropout * n), replace=False)
        }
        ring = np.random.default_rng(0).integers(0, 2**32, d, dtype=np.uint32)
        original_unmask = server_module._unmask

        def unmask(*args: Any) -> Any:  # the collector's time inside the unmasking
            collector["on"] = True
            try:
                return original_unmask(*args)
            finally:
                collector["on"] = False

        saved.append((server_module, "_unmask", original_unmask))
        server_module._unmask = unmask  # type: ignore[assignment]
        outcome = run_protocol(setup, dict.fromkeys(setup.clients, ring), dropped)
    finally:
        gc.callbacks.remove(collecting)
        for module, name, original in reversed(saved):
            setattr(module, name, original)
    # Keystreams are inside add_mask: the additions are what is left of it (older code
    # has no separate keystream function: there the two stay together as unmask_masks).
    if "unmask_keystreams" in parts:
        parts["unmask_additions"] = parts.pop("unmask_masks") - parts["unmask_keystreams"]
    timed = sum(
        v for k, v in parts.items() if not k.startswith(("unmask_", "close_unmasking")) or k == "close_unmasking"
    )
    figures = {k: round(v, 5) for k, v in sorted(parts.items())}
    return {
        "clients": n,
        "length": d,
        "dropout": dropout,
        "degree": setup.degree,
        "threshold": setup.threshold,
        "pairwise_masks_removed": sum(
            1 for owner in dropped for peer in setup.neighbours(owner) if peer in set(outcome.survivors)
        ),
        "server_s": outcome.server_seconds,
        **figures,
        "rest": round(outcome.server_seconds - timed, 5),
        "load_average": os.getloadavg(),
    }


def _fastest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose client plus server seconds were least."""
    return min(runs, key=lambda run: run["client_s"] + run["server_s"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="10,50,100,200")
    parser.add_argument("--lengths", default="1e4,1e5,1e6")
    parser.add_argument("--dropouts", default="0,0.3")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--skip", default="", help="cells to skip, e.g. 200x1e6x0.3 (n x d x dropout)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="secret-sharing threshold as a fraction of the neighbours"
    )
    parser.add_argument("--workers", type=int, default=None, help="unmasking threads (default: the server's choice)")
    parser.add_argument("--profile", action="store_true", help="where the server's CPU goes, stage by stage")
    parser.add_argument("--accuracy", action="store_true", help="central against distributed DP on digits")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--stand-in", action="store_true", help="accuracy runs use the exact stand-in")
    parser.add_argument("--seeds", default="0", help="accuracy runs: the run seeds, e.g. 0,1,2,3,4")
    parser.add_argument("--rows", default=",".join(ACCURACY_ROWS), help="accuracy runs: which settings")
    parser.add_argument("--noise", default="seeded", help="accuracy runs: seeded (from the run seed) or secure (fresh)")
    parser.add_argument("--noise-check", action="store_true", help="the released noise and quantisation error of a sum")
    parser.add_argument("--primitives", action="store_true", help="ChaCha20 against AES-256-CTR mask expansion")
    parser.add_argument("--unmask", action="store_true", help="the server's unmasking on one thread and on several")
    args = parser.parse_args(argv)
    if args.unmask:
        n, d = int(_floats(args.clients)[0]), int(_floats(args.lengths)[0])
        dropout = max(_floats(args.dropouts))
        print(json.dumps(unmasking(n, d, dropout, args.repeats), indent=1))
        return
    if args.profile:
        n, d = int(_floats(args.clients)[0]), int(_floats(args.lengths)[0])
        dropout = max(_floats(args.dropouts))
        runs = [profile(n, d, dropout, args.threshold) for _ in range(args.repeats)]
        print(json.dumps({"runs": runs, "fastest": min(runs, key=lambda r: r["server_s"])}, indent=1))
        return
    if args.noise_check:
        print(json.dumps(noise_check(), indent=1))
        return
    if args.primitives:
        print(json.dumps(primitives(), indent=1))
        return
    if args.accuracy:
        seeds = [int(x) for x in args.seeds.split(",") if x]
        only = tuple(row for row in ACCURACY_ROWS if row in args.rows.split(","))
        figures = accuracy(args.rounds, args.stand_in, seeds, only, args.noise)
        print(json.dumps({"accuracy": figures, "load_average": os.getloadavg()}, indent=1))
        return
    skip = {tuple(float(x) for x in cell.split("x")) for cell in args.skip.split(",") if cell}
    results = []
    skipped = []
    for d in (int(x) for x in _floats(args.lengths)):
        update = np.random.default_rng(d).normal(0, 1e-2, size=d)
        for n in (int(x) for x in _floats(args.clients)):
            repeats = args.repeats if n * d <= 2e7 else 1
            plain = _fastest([plain_round(n, d, update) for _ in range(repeats)])
            for dropout in _floats(args.dropouts):
                if (float(n), float(d), dropout) in skip:
                    skipped.append({"clients": n, "length": d, "dropout": dropout})
                    continue
                secure = _fastest(
                    [
                        secure_round(n, d, dropout, args.bits, update, args.threshold, args.workers)
                        for _ in range(repeats)
                    ]
                )
                secure["repeats"] = repeats
                row = {
                    "clients": n,
                    "length": d,
                    "dropout": dropout,
                    "bits": args.bits,
                    "threshold_fraction": args.threshold,
                    "unmask_workers": args.workers or "server's choice",
                    **{f"secure_{k}": v for k, v in secure.items()},
                    **{f"plain_{k}": v for k, v in plain.items()},
                    "round_ratio": (secure["client_s"] + secure["server_s"]) / (plain["client_s"] + plain["server_s"]),
                    "server_ratio": secure["server_s"] / plain["server_s"],
                    "upload_over_quantised": secure["upload_bytes"] / secure["quantised_bytes"],
                    "upload_over_float32": secure["upload_bytes"] / plain["upload_bytes"],
                }
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    machine = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
    }
    print(json.dumps({"machine": machine, "results": results, "skipped": skipped}, indent=1))


if __name__ == "__main__":
    main()
