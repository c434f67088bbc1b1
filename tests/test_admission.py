"""bon's own order of requests (issue 21): the admission gate alone, then the openai backend
against a real first-come-first-served server on loopback (tests/fault_server.py, `slots`).

No test asserts how fast anything is (machines are shared): they assert orders and bounds
that hold however slow the machine is."""

import asyncio

import pytest

import bon
import bon.engines.admission as admission
from bon.config import EngineConfig, ServerOptions
from bon.engines.admission import HOLD_PERIODS, Admission
from bon.engines.base import GenerationRequest
from bon.engines.openai import OpenAIEngine
from fault_server import FaultyServer


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_waiting_requests_go_lowest_priority_first_and_a_cancelled_one_gives_its_turn_on():
    gate = Admission(pinned=1)
    order = []

    async def one(priority, hold):
        async with gate.admit(priority):
            order.append(priority)
            await hold.wait()

    async def go():
        first_done, rest_done = asyncio.Event(), asyncio.Event()
        rest_done.set()
        first = asyncio.create_task(one(50, first_done))
        await asyncio.sleep(0)
        tasks = [asyncio.create_task(one(p, rest_done)) for p in (30, 10, 20, 5)]
        await asyncio.sleep(0)
        assert gate.waiting == 4 and len(gate.in_flight) == 1
        tasks[3].cancel()  # priority 5 gives up while waiting: never admitted
        await asyncio.sleep(0)
        first_done.set()
        await asyncio.gather(first, *tasks[:3])
        assert tasks[3].cancelled()

    asyncio.run(go())
    assert order == [50, 10, 20, 30]
    assert gate.waiting == 0 and not gate.in_flight and gate.limit == 1


def test_the_rule_grows_while_throughput_grows_and_drops_to_what_the_server_serves():
    gate = Admission(ceiling=256, start=8, clock=Clock())
    gate._decide(queued=0, served=8, throughput=800, pressed=True)
    assert gate.limit == 16  # doubling while nothing queues
    gate._decide(queued=0, served=16, throughput=1600, pressed=True)
    assert gate.limit == 32  # the step paid for itself
    gate._decide(queued=0, served=32, throughput=1700, pressed=True)
    assert gate.limit == 32  # the step from 16 to 32 bought almost nothing: growth stops …
    for _ in range(HOLD_PERIODS):
        gate._decide(queued=0, served=32, throughput=1700, pressed=True)
    assert gate.limit == 32
    gate._decide(queued=0, served=32, throughput=1700, pressed=True)
    assert gate.limit == 36  # … then is tried again by an eighth
    gate._decide(queued=0.5, served=36, throughput=1700, pressed=False)
    assert gate.limit == 36  # demand below the limit: nothing learnt
    gate._decide(queued=20, served=16, throughput=1700, pressed=True)
    assert gate.limit == 19  # requests queue at the server: what it served, and the allowance (36/16)
    assert [limit for _, limit in gate.changes] == [8, 16, 32, 36, 19]


def test_a_pinned_limit_never_moves():
    gate = Admission(pinned=3, clock=Clock())
    assert not gate.adaptive and gate.limit == 3
    gate._maybe_decide()
    assert gate.limit == 3 and list(gate.changes)[-1][1] == 3


# ---- against a first-come-first-served server ----


def records(count):
    return [
        {"id": i, "query": f"question {i}", "candidates": [f"answer {j} to {i}" for j in range(4)]}
        for i in range(count)
    ]


def judge_on(server, **options):
    return bon.Judge("fake", backend="openai", base_url=server.url, request_seed=False, **options)


def first_record_share(server, judge, count):
    """(requests the server had served when the first record came out ÷ all it served, ids in output order)."""
    ids, served_at_first = [], None
    with judge:
        for out in bon.run(records(count), judge=judge, votes=3, seed=0):
            if served_at_first is None:
                served_at_first = len(server.served)
            ids.append(out["id"])
    return served_at_first / len(server.served), ids


@pytest.fixture
def fcfs():
    servers = []

    def make(**kwargs):
        servers.append(FaultyServer(reasoning="weighing both answers " * 3, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_records_finish_early_and_in_input_order_against_a_fcfs_server(fcfs):
    """24 records × 6 judge requests on 8 slots. Sent all at once (the limit pinned at 256, as
    before issue 21) the server runs every first round before any final: the first record
    waits for most of the work. Through bon's admission it comes after a small share."""
    server = fcfs(slots=8, pace=0.005)
    share, ids = first_record_share(server, judge_on(server), 24)
    assert ids == list(range(24))
    assert share < 0.3, f"the first record came after {share:.0%} of the requests"
    # bon held at most 16 (the start's doubling); the server may still count some it is closing
    assert max(server.open_counts) < 32

    flood = fcfs(slots=8, pace=0.005)
    flood_share, flood_ids = first_record_share(flood, judge_on(flood, max_in_flight=256), 24)
    assert flood_ids == list(range(24)) and flood_share > 0.5 and max(flood.open_counts) > 40


def request(i, priority):
    return GenerationRequest([{"role": "user", "content": f"q{i}"}], 1, 0.6, 1.0, 64, None, priority)


def generate_all(server, count, **options):
    engine = OpenAIEngine(
        EngineConfig("openai", "judge", options=ServerOptions(base_url=(server.url,), request_seed=False, **options))
    )

    async def go():
        try:
            await asyncio.gather(*(engine.generate(request(i, priority=i)) for i in range(count)))
        finally:
            await engine.close()

    asyncio.run(go())
    return [limit for _, limit in engine.gates[server.url].changes]


def test_the_in_flight_limit_grows_to_keep_the_server_busy(fcfs, monkeypatch):
    monkeypatch.setattr(admission, "START", 1)
    server = fcfs(slots=6, pace=0.01)
    limits = generate_all(server, 150)
    assert limits[0] == 1 and max(limits) >= 6, limits  # grew to the server's slots at least
    assert server.most_busy >= 5  # and the server was kept (nearly) full


def test_the_in_flight_limit_drops_when_requests_queue_at_the_server(fcfs, monkeypatch):
    monkeypatch.setattr(admission, "START", 40)
    server = fcfs(slots=4, pace=0.01)
    limits = generate_all(server, 150)
    assert limits[0] == 40 and min(limits) <= 4 + 2, limits  # down to the slots and the allowance
    assert limits[-1] <= 8, limits
    # in bon's order once the queue is bon's: the requests sent after the first 40, lowest
    # priority first (give or take the race of a few sent at once to the server's socket)
    later = [int(b["body"]["messages"][0]["content"][1:]) for b in server.bodies[40:]]
    assert all(abs(i - (40 + k)) <= 8 for k, i in enumerate(later)), later


# ---- the status line's numbers (issue 21) ----


def test_the_eta_is_from_work_from_the_first_tokens_and_within_a_quarter_at_half_a_steady_run():
    """100 records of 12 judge samples each (votes × matches, as `bon plan` counts them),
    samples of 300 to 700 tokens, streamed at a steady 1,000 tokens/s; records written in
    order as their samples finish. The clock is the test's: no wall-clock speed involved."""
    from bon.runs.progress import RunProgress, Work

    progress = RunProgress(enabled=False, total=100, log_every=0, work=Work(0, 12), max_tokens=(0, 2048))
    progress.started = 0.0
    lengths = [300 + (i * 37) % 400 for i in range(1200)]
    total_tokens, rate = sum(lengths), 1000.0
    run_end = total_tokens / rate
    clock, done_tokens = 0.0, 0
    progress.on_tokens(50)  # the first second: tokens streamed, no sample finished, no record
    first = progress.counters(now=0.05)
    assert first["eta_s"] is not None and first["records_done"] == 0
    checked = False
    for i, tokens in enumerate(lengths):
        progress.on_tokens(tokens)
        done_tokens += tokens
        clock = done_tokens / rate
        progress.on_generation(1, tokens)
        if (i + 1) % 12 == 0:
            progress.on_record()
        if not checked and clock >= run_end / 2:
            eta = progress.counters(now=clock)["eta_s"]
            remaining = run_end - clock
            assert abs(eta - remaining) <= 0.25 * remaining, (eta, remaining)
            checked = True
    assert checked and progress.counters(now=clock)["eta_s"] == 0.0


def test_the_eta_follows_a_judge_that_draws_extra_votes_and_never_says_zero_with_records_left():
    """The plan expects 3 matches × 3 votes a record, but this judge's verdicts are invalid
    half the time, so each match draws 6 samples (the vote budget): twice the plan. The ETA
    corrects by what matches have cost, stays within a quarter at half the run, and is never
    0 while records remain (it said "ETA 0s" at 0 of 24 records against a real small judge)."""
    from bon.runs.progress import RunProgress, Work

    progress = RunProgress(enabled=False, total=40, log_every=0, work=Work(0, 9, 3), max_tokens=(0, 96))
    progress.started = 0.0
    per_sample, rate = 96, 500.0
    run_end = 40 * 3 * 6 * per_sample / rate
    clock, checked = 0.0, False
    for record in range(40):
        for _match in range(3):
            for _sample in range(6):
                progress.on_tokens(per_sample)
                progress.on_generation(1, per_sample, invalid=1)
                clock += per_sample / rate
            progress.on_match()
            eta = progress.counters(now=clock)["eta_s"]
            assert record == 39 or eta > 0
        progress.on_record()
        if not checked and clock >= run_end / 2:
            remaining = run_end - clock
            assert abs(eta - remaining) <= 0.25 * remaining, (eta, remaining)
            checked = True
    assert checked and progress.counters(now=clock)["eta_s"] == 0.0


def test_tokens_per_s_moves_while_a_slow_stream_flows_and_a_stall_is_named(fcfs):
    from bon.runs.progress import RunProgress, status_line

    def watch(action):
        server = FaultyServer(script=[action], reasoning="slowly weighing both answers " * 2)
        engine = OpenAIEngine(
            EngineConfig("openai", "judge", options=ServerOptions(base_url=(server.url,), stall_timeout=30.0))
        )
        progress = RunProgress(enabled=False, log_every=0, source=server.url)
        engine.on_tokens = progress.on_tokens
        lines = []

        async def go():
            task = asyncio.create_task(engine.generate(request(0, priority=0)))
            while progress.streamed < (2 if action == "trickle" else 1):
                await asyncio.sleep(0.05)
            progress.tick()
            seen = progress.streamed
            if action == "trickle":  # one more piece came since the last tick: tokens/s is not 0
                while progress.streamed == seen:
                    await asyncio.sleep(0.05)
            else:
                await asyncio.sleep(1.2)
            lines.append(progress.tick())
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await engine.close()

        try:
            asyncio.run(go())
        finally:
            server.close()
        return lines[0], server.url

    flowing, _ = watch("trickle")
    assert flowing["tokens_per_s"] > 0 and "no tokens" not in status_line(flowing)
    stalled, url = watch("stall")
    assert stalled["tokens_per_s"] == 0
    assert f"no tokens from {url} for " in status_line(stalled)
