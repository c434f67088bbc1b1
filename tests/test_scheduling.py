"""Continuous scheduling on a scripted engine with controllable latencies.

Assertions are about the order of events (which request started before which ended), not
about wall-clock time: the latencies only make one match much slower than the others.
"""

import asyncio

from bon.config import SamplingConfig, TournamentConfig
from bon.engines.scripted import ScriptedEngine, split_judge_prompt
from bon.io.prompts import judge_template
from bon.io.records import FieldNames, RecordWriter, read_records
from bon.runs.judge import Referee
from bon.runs.pipeline import LazyEngine, Pipeline


class Recorder(ScriptedEngine):
    """Tracks in-flight judge requests per query and when each one starts."""

    def __init__(self, latency):
        super().__init__(latency=latency)
        self.events: list[tuple[str, str, frozenset]] = []  # (start|end, question, the pair)

    async def generate(self, request):
        user = request.messages[-1]["content"]
        question = user.split("## Query\n\n", 1)[1].split("\n\n## Assistant responses", 1)[0]
        pair = frozenset(split_judge_prompt(user))
        self.events.append(("start", question, pair))
        try:
            return await super().generate(request)
        finally:
            self.events.append(("end", question, pair))

    def index(self, kind, question, contains=None, pair=None):
        return [
            i
            for i, (k, q, p) in enumerate(self.events)
            if k == kind and q == question and (contains is None or contains in p) and (pair is None or p == pair)
        ]


def run_pipeline(engine, rows, concurrency=8, votes=1, in_flight=None):
    import io
    import json

    lines = [json.dumps(r) for r in rows]
    records = list(read_records(lines, FieldNames()))
    lazy = LazyEngine(lambda: _ready(engine))
    judge = lambda e: Referee(e, judge_template(), SamplingConfig(0.6, 1.0, 64), TournamentConfig(votes=votes))  # noqa: E731
    out = io.StringIO()
    pipeline = Pipeline(writer=RecordWriter(out), concurrency=concurrency, make_judge=judge, judge=lazy)
    if in_flight is not None:
        original = pipeline._judge

        async def counted(record):
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
            try:
                return await original(record)
            finally:
                in_flight["now"] -= 1

        pipeline._judge = counted
    asyncio.run(pipeline.run(records))
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def _ready(engine):
    return engine


def test_a_slow_match_delays_only_its_own_path():
    slow = "SLOW-ANSWER"
    engine = Recorder(lambda request: 0.5 if slow in request.messages[-1]["content"] else 0.001)
    rows = [
        {"id": "slow", "query": "qslow", "candidates": [slow, "b1", "c22", "d333"]},
        {"id": "fast", "query": "qfast", "candidates": ["w", "xx", "yyy", "zzzz"]},
    ]
    records = run_pipeline(engine, rows)
    assert [r["id"] for r in records] == ["slow", "fast"]
    slow_done = min(engine.index("end", "qslow", contains=slow))
    # The other query played its whole bracket (3 matches) while the slow match was thinking.
    assert len(engine.index("end", "qfast")) == 3
    assert max(engine.index("end", "qfast")) < slow_done
    # The slow query's final waited for its slow semi-final: it is the last thing to start.
    assert max(engine.index("start", "qslow")) > slow_done


def test_next_match_starts_as_soon_as_both_feeders_are_decided():
    engine = Recorder(lambda request: 0.5 if "SLOW" in request.messages[-1]["content"] else 0.001)
    # 8 candidates: the slow one sits in one half of the bracket; the other half's
    # second-round match must not wait for it (no round barrier inside a query either).
    candidates = ["SLOW"] + [f"cand{'x' * i}" for i in range(1, 8)]
    (record,) = run_pipeline(engine, [{"id": 1, "query": "q", "candidates": candidates}])
    rounds = record["tournament"]["rounds"]
    slow_slot = next(i for i, m in enumerate(rounds[0]) if 0 in (m["a"], m["b"]))
    other = rounds[1][1 - slow_slot // 2]
    other_pair = frozenset((record["candidates"][other["a"]], record["candidates"][other["b"]]))
    assert min(engine.index("start", "q", pair=other_pair)) < min(engine.index("end", "q", contains="SLOW"))


def test_in_flight_records_never_exceed_concurrency():
    engine = Recorder(lambda request: 0.005)
    rows = [{"id": i, "query": f"q{i}", "candidates": ["a", "bb", "ccc", "dddd", "eeeee"]} for i in range(40)]
    counter = {"now": 0, "max": 0}
    records = run_pipeline(engine, rows, concurrency=5, in_flight=counter)
    assert len(records) == 40 and counter["max"] == 5


def test_answers_too_long_for_the_context_are_shortened_evenly_or_the_record_errors():
    import pytest

    from bon.engines.base import RecordError
    from bon.runs.judge import fit_answers

    count = lambda messages: sum(len(m["content"]) for m in messages) // 4  # noqa: E731  (4 chars a token)
    render = lambda a, b: [{"role": "user", "content": f"Q\n{a}\n---\n{b}"}]  # noqa: E731
    first, second = "A" * 4000 + "END-A", "B" * 2000 + "END-B"
    messages, shortened = fit_answers(render, count, 800, first, second)
    text = messages[0]["content"]
    assert shortened and count(messages) <= 800
    assert "characters omitted by bon" in text and "END-A" in text and "END-B" in text  # head and tail kept
    kept_a, kept_b = text.count("A") - 1, text.count("B") - 1
    assert abs(kept_a / 4000 - kept_b / 2000) < 0.01  # the same share of each answer
    assert fit_answers(render, count, 5000, first, second) == (render(first, second), False)
    with pytest.raises(RecordError, match="too long"):
        fit_answers(lambda a, b: [{"role": "user", "content": "Q" * 9000 + a + b}], count, 800, first, second)
