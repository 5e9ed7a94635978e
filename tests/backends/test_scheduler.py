"""The scheduler under adversarial schedules: a fake transport, a fake clock, no processes.

:class:`FakeWorkers` simulates workers event by event on a fake clock: each client takes
its own time (ties broken by a seeded shuffle), some clients raise, kill their worker, hang
or garble their reply, and workers also die at random times (idle, mid-chunk, mid-flush).
It replies per client (like the pool's pipes) or per chunk (like Ray's calls). Whatever the
schedule, the rules below hold.
"""

from __future__ import annotations

import json
import random
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sheaf.backends._collect import largest_first
from sheaf.backends._scheduler import MAX_LOSSES, Died, Event, Replied, Work, schedule
from sheaf.core.errors import BackendError

TIMEOUT = 10.0  # every client that does not hang takes 1 to 9
KINDS = ("ok", "raise", "kill", "hang", "garble")
EXTERNAL = "the worker was killed from outside"
KILLED = "the worker process running it was killed by signal 9 (SIGKILL)"
FLUSH = b"flush"


@dataclass
class World:
    """What each client does (the same on every run: training is deterministic)."""

    kinds: dict[int, str]
    durations: dict[int, int]
    summed: dict[int, bool]  # an ok client's update goes into its worker's sum (when the round sums)


@dataclass
class Worker:
    inbox: deque[list[int] | None] = field(default_factory=deque)  # chunks, None for a flush
    done: int = 0  # clients of the first chunk finished
    until: float = 0.0  # when the step it is on ends
    began: tuple[float, float] = (0.0, 0.0)  # when the client it is on, and its chunk, began
    held: list[tuple[bytes, int | None]] = field(default_factory=list)  # replies not sent yet; garbled: whose
    summed: list[int] = field(default_factory=list)  # its partial sum
    garbled: int | None = None  # the client whose garbled reply it sent


def reply(client: int, **fields: object) -> bytes:
    return json.dumps({"client": client, **fields}).encode()


class FakeWorkers:
    """A Transport: workers simulated on a fake clock (see the module docstring)."""

    def __init__(
        self,
        world: World,
        *,
        workers: int,
        per_client: bool,
        reduce: bool,
        rng: random.Random,
        deaths: list[tuple[int, int]],
        starts: int | None,
    ) -> None:
        self.world, self.reduce, self.rng, self.replies_per_client = world, reduce, rng, per_client
        self.now = 0.0
        self.workers: dict[int, Worker] = {}
        self.made = 0
        self.starts = starts  # new workers that may still start (None: any number)
        self.deaths = sorted(deaths)  # (time, which live worker) of deaths from outside
        # (why, the client it was running, whether it ran alone or its reply named it, its sum)
        self.lost: list[tuple[str, int | None, bool, list[int]]] = []
        self.waits = 0
        for _ in range(workers):
            self._new()

    def _new(self) -> None:
        self.made += 1
        self.workers[self.made] = Worker()

    def clock(self) -> float:
        return self.now

    # The transport -------------------------------------------------------------------------
    def live(self) -> list[int]:
        return list(self.workers)

    def start(self) -> None:
        if self.starts is None or self.starts > 0:
            self.starts = None if self.starts is None else self.starts - 1
            self._new()

    def send(self, index: int, message: bytes) -> None:
        worker = self.workers[index]
        job = None if message == FLUSH else json.loads(message)
        assert job is not None or not worker.inbox, "a flush only goes to a worker with nothing else to do"
        if not worker.inbox:
            worker.until = self.now + self._step(job)
            worker.began = (self.now, self.now)
        elif self.replies_per_client and worker.inbox[0] is not None:
            assert len(worker.inbox[0]) - worker.done <= 1, "a second chunk before the first is on its last client"
        worker.inbox.append(job)
        assert len(worker.inbox) <= 2, "more than two chunks in flight"

    def kill(self, index: int) -> None:
        if index in self.workers:
            worker = self.workers[index]
            running = self._running(worker)
            timed_out = running is not None and self.world.kinds[running] == "hang"
            assert worker.garbled is not None or timed_out, "the scheduler killed a healthy worker"
            if worker.garbled is None:  # stopped by the time limit: no later than it says
                job = worker.inbox[0] or []
                client, chunk = worker.began
                assert self.now - (client if self.replies_per_client else chunk) <= TIMEOUT * (
                    1 if self.replies_per_client else len(job)
                ), "a hanging client was not stopped in time"
            self._lose(index, "killed by the scheduler", worker.garbled)

    def wait(self, timeout: float | None) -> list[Event]:
        self.waits += 1
        assert self.waits < 10_000, "the scheduler does not finish"
        if not self.workers:
            raise BackendError("no worker left")
        busy = [w.until for w in self.workers.values() if w.inbox and w.until != float("inf")]
        deaths = [t for t, _ in self.deaths]
        next_at = max(self.now, min(busy + deaths, default=float("inf")))
        if timeout is not None and next_at > self.now + timeout:
            self.now += timeout
            return []
        assert next_at != float("inf"), "the scheduler waits for ever on hanging workers"
        self.now = next_at
        events: list[Event] = []
        if self.deaths and self.deaths[0][0] <= next_at:
            _, which = self.deaths.pop(0)
            index = sorted(self.workers)[which % len(self.workers)]
            self._lose(index, EXTERNAL)
            events.append(Died(index, EXTERNAL))
        due = [i for i, w in self.workers.items() if w.inbox and w.until == next_at]
        self.rng.shuffle(due)  # replies due at the same time arrive in any order
        for index in due:
            events += self._step_done(index)
        return events

    # The simulation ----------------------------------------------------------------------
    def _step(self, job: list[int] | None, done: int = 0) -> float:
        if job is None:
            return self.rng.randint(0, 3)
        client = job[done]
        return float("inf") if self.world.kinds[client] == "hang" else self.world.durations[client]

    def _running(self, worker: Worker) -> int | None:
        return None if not worker.inbox or worker.inbox[0] is None else worker.inbox[0][worker.done]

    def _lose(self, index: int, why: str, garbled: int | None = None) -> None:
        worker = self.workers.pop(index)
        job = worker.inbox[0] if worker.inbox else None
        running, alone = (garbled, True) if garbled is not None else (self._running(worker), len(job or []) == 1)
        self.lost.append((why, running, alone, list(worker.summed)))

    def _step_done(self, index: int) -> list[Event]:
        worker = self.workers[index]
        job = worker.inbox[0]
        if job is None:
            worker.held.append((json.dumps({"sum": sorted(worker.summed)}).encode(), None))
            worker.summed.clear()
        else:
            client = job[worker.done]
            kind = self.world.kinds[client]
            if kind == "kill":
                self._lose(index, KILLED)
                return [Died(index, KILLED)]
            if kind == "garble":  # bytes that are no reply, or a reply for another client
                worker.held.append((b"\x00garbled" if client % 2 else reply(client + 1, ok=False), client))
            elif kind == "raise":
                worker.held.append((reply(client, ok=False), None))
            else:
                summed = self.reduce and self.world.summed[client]
                if summed:
                    worker.summed.append(client)
                worker.held.append((reply(client, ok=True, summed=summed, value=client * 7), None))
            worker.done += 1
        finished = job is None or worker.done == len(job)
        if finished:
            worker.inbox.popleft()
            worker.done = 0
        if worker.inbox:
            worker.until = self.now + self._step(worker.inbox[0], worker.done)
            worker.began = (self.now, self.now if finished else worker.began[1])
        if not finished and not self.replies_per_client:
            return []  # a chunk's replies come when it is done
        out, worker.held = worker.held, []
        for _, garbled in out:
            worker.garbled = garbled if worker.garbled is None else worker.garbled
        return [Replied(index, message) for message, _ in out]


class Recorder:
    """A Collector that checks replies as FitCollector does, and counts what sums hold."""

    def __init__(self, reduce: bool) -> None:
        self.reduce = reduce
        self.values: dict[int, int] = {}
        self.summed: set[int] = set()
        self.raised: set[int] = set()
        self.counted: Counter[int] = Counter()

    def add_reply(self, message: bytes, client: int) -> bool:
        try:
            header = json.loads(message)
        except ValueError:
            raise BackendError("malformed") from None
        if header["client"] != client:
            raise BackendError(f"a reply for client {header['client']} where {client} was due")
        if not header["ok"]:
            self.raised.add(client)
            return False
        summed = header["summed"]
        if summed and not self.reduce:
            raise BackendError("a sum in a round that sums nothing")
        self.values[client] = header["value"]
        if summed:
            self.summed.add(client)
        return summed

    def add_sum(self, message: bytes, clients: Sequence[int]) -> None:
        held = json.loads(message)["sum"]
        if sorted(held) != sorted(clients):
            raise BackendError(f"a sum of {held} where {sorted(clients)} were due")
        self.counted.update(held)

    def forget(self, clients: Sequence[int]) -> None:
        for client in clients:
            self.values.pop(client, None)
            self.summed.discard(client)


@st.composite
def worlds(draw: st.DrawFn, timeout: bool) -> World:
    clients = draw(st.lists(st.integers(0, 200), min_size=1, max_size=16, unique=True))
    weights = [8, 1, 1, 1 if timeout else 0, 1]  # mostly clients that train
    kinds = {
        c: draw(st.sampled_from([k for k, w in zip(KINDS, weights, strict=True) for _ in range(w)])) for c in clients
    }
    return World(
        kinds,
        {c: draw(st.integers(1, 9)) for c in clients},
        {c: draw(st.booleans()) for c in clients},
    )


def run(world: World, transport: FakeWorkers, timeout: float | None) -> tuple[dict[int, str] | None, Recorder]:
    reduce = transport.reduce
    recorder = Recorder(reduce)
    work = Work(lambda chunk: json.dumps(list(chunk)).encode(), FLUSH if reduce else None)
    try:
        failed = schedule(transport, list(world.kinds), recorder, work, timeout=timeout, clock=transport.clock)
    except BackendError:
        assert not transport.workers, "BackendError although workers were left"
        return None, recorder
    return failed, recorder


@settings(max_examples=400)
@given(
    data=st.data(),
    use_timeout=st.booleans(),
    reduce=st.booleans(),
    per_client=st.booleans(),
    workers=st.integers(1, 4),
    deaths=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 3)), max_size=5),
    starts=st.none() | st.integers(0, 3),
    rng=st.randoms(use_true_random=False),
)
def test_every_client_ends_once_and_only_what_a_lost_worker_was_running_fails(
    data: st.DataObject,
    use_timeout: bool,
    reduce: bool,
    per_client: bool,
    workers: int,
    deaths: list[tuple[int, int]],
    starts: int | None,
    rng: random.Random,
) -> None:
    # Arrange
    world = data.draw(worlds(use_timeout))
    transport = FakeWorkers(
        world, workers=workers, per_client=per_client, reduce=reduce, rng=rng, deaths=deaths, starts=starts
    )
    timeout = TIMEOUT if use_timeout else None

    # Act
    failed, recorder = run(world, transport, timeout)
    if failed is None:
        return  # every worker died and no new one could start: the one allowed error

    # Assert: each client ends exactly once, as a success, a failure it reported, or a loss.
    ends = Counter([*recorder.values, *recorder.raised, *failed])
    assert ends == Counter(list(world.kinds)), ends
    # Successes carry their own values; each update in a sum is counted exactly once.
    assert all(value == client * 7 for client, value in recorder.values.items())
    assert recorder.counted == Counter(recorder.summed)
    assert recorder.summed == {c for c in recorder.values if reduce and world.summed[c]}
    # A client fails for a lost worker only if it was running on it when it was lost (alone,
    # where replies come per chunk), or lost its update with workers that ran nothing.
    for client, why in failed.items():
        if why.startswith(f"its update was lost {MAX_LOSSES} times"):
            assert sum(client in held for _, running, _, held in transport.lost if running is None) >= MAX_LOSSES
            continue
        was_running = [alone for _, running, alone, _ in transport.lost if running == client]
        assert was_running, (client, why)
        assert per_client or any(was_running), (client, why)
    # Clients no outside death touched end as they deterministically must.
    touched = {c for why, running, _, held in transport.lost if why == EXTERNAL for c in [running, *held]}
    expected = {
        "ok": lambda c: c in recorder.values,
        "raise": lambda c: c in recorder.raised,
        "kill": lambda c: failed.get(c) == KILLED,
        "hang": lambda c: "ran for more than 10 s (engine.client_timeout)" in failed.get(c, ""),
        "garble": lambda c: "sent a malformed reply" in failed.get(c, ""),
    }
    for client, kind in world.kinds.items():
        assert client in touched or expected[kind](client), (client, kind, failed.get(client))


@settings(max_examples=200)
@given(
    data=st.data(),
    reduce=st.booleans(),
    per_client=st.lists(st.booleans(), min_size=2, max_size=2),
    workers=st.lists(st.integers(1, 4), min_size=2, max_size=2),
    rngs=st.lists(st.randoms(use_true_random=False), min_size=2, max_size=2),
)
def test_without_outside_deaths_the_results_do_not_depend_on_the_schedule_or_the_transport(
    data: st.DataObject, reduce: bool, per_client: list[bool], workers: list[int], rngs: list[random.Random]
) -> None:
    # Two runs of the same clients: other worker counts, timings, tie orders, reply styles.
    world = data.draw(worlds(timeout=True))
    outcomes = []
    for style, count, rng in zip(per_client, workers, rngs, strict=True):
        transport = FakeWorkers(world, workers=count, per_client=style, reduce=reduce, rng=rng, deaths=[], starts=None)
        failed, recorder = run(world, transport, TIMEOUT)
        assert failed is not None
        outcomes.append((failed, recorder.values, recorder.raised, recorder.summed))
    assert outcomes[0] == outcomes[1]


def test_a_worker_that_dies_whenever_it_sends_its_sum_fails_its_clients_instead_of_looping() -> None:
    world = World({1: "ok", 2: "ok"}, {1: 1, 2: 1}, {1: True, 2: True})

    class DiesFlushing(FakeWorkers):
        def send(self, index: int, message: bytes) -> None:
            if message == FLUSH:  # dies right away, with the sum
                self.deaths.insert(0, (int(self.now), sorted(self.workers).index(index)))
            super().send(index, message)

    transport = DiesFlushing(
        world, workers=1, per_client=True, reduce=True, rng=random.Random(0), deaths=[], starts=None
    )
    failed, recorder = run(world, transport, None)
    assert failed == dict.fromkeys(
        (1, 2), f"its update was lost {MAX_LOSSES} times with the worker holding it ({EXTERNAL})"
    )
    assert recorder.counted == Counter()


@pytest.mark.parametrize("per_client", [True, False])
def test_a_killing_client_in_a_chunk_is_found_and_only_it_fails(per_client: bool) -> None:
    clients = range(6)
    world = World(
        {c: "kill" if c == 3 else "ok" for c in clients}, dict.fromkeys(clients, 1), dict.fromkeys(clients, False)
    )
    transport = FakeWorkers(
        world, workers=1, per_client=per_client, reduce=False, rng=random.Random(0), deaths=[], starts=None
    )
    failed, recorder = run(world, transport, None)
    assert failed == {3: KILLED}
    assert sorted(recorder.values) == [0, 1, 2, 4, 5]
    assert len(transport.lost) == (1 if per_client else 2)  # per chunk: found by running it alone


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=40), st.data())
def test_clients_go_out_longest_first_ties_by_id(rows: list[int], data: st.DataObject) -> None:
    # Arrange: a cohort in any order
    cohort = data.draw(st.permutations(range(len(rows))))
    # Act
    order = largest_first(cohort, rows)
    # Assert: every client once, most training rows first, equal rows by id
    assert sorted(order) == sorted(cohort)
    assert [(-rows[c], c) for c in order] == sorted((-rows[c], c) for c in order)
    assert largest_first(cohort, None) == list(cohort)


class LosesReplies(FakeWorkers):
    """Per chunk, like Ray: a finished chunk's replies are lost when the worker's next chunk
    kills it before they arrive (Ray's reply to a call done just before its actor died)."""

    def _step_done(self, index: int) -> list[Event]:
        events = super()._step_done(index)
        worker = self.workers.get(index)
        following = worker.inbox[0] if worker is not None and worker.inbox else None
        if events and following is not None and any(self.world.kinds[c] == "kill" for c in following):
            return []  # held back; the death that comes next loses them
        return events


@pytest.mark.parametrize("workers", [1, 2])
def test_replies_lost_with_a_worker_after_its_chunk_finished_blame_no_other_client(workers: int) -> None:
    clients = range(8)
    world = World(
        {c: "kill" if c == 5 else "ok" for c in clients}, dict.fromkeys(clients, 1), dict.fromkeys(clients, False)
    )
    transport = LosesReplies(
        world, workers=workers, per_client=False, reduce=False, rng=random.Random(0), deaths=[], starts=None
    )
    failed, recorder = run(world, transport, None)
    assert failed == {5: KILLED}
    assert sorted(recorder.values) == [0, 1, 2, 3, 4, 6, 7]
