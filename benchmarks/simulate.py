"""bon's own scheduling on a simulated GPU: makespan, first record, record spread, priorities.

bon's real pipeline, Referee and knockout bracket run unchanged; only the engine behind
the `Engine` interface is simulated, and the asyncio loop's clock is virtual (it jumps to
the next timer whenever nothing is ready), so hours of GPU time take seconds and every
figure is deterministic.

The simulated engine batches continuously, like vLLM: up to MAX_SEQS sequences run at
once; a decoding step advances each by one token and takes STEP_BASE + STEP_PER_SEQ ×
(running sequences) ms, so steps slow down as the batch grows. A waiting sequence takes
the first free slot — the lowest `priority` first when priorities are honoured (vLLM's
`scheduling_policy="priority"`), in arrival order otherwise (`"fcfs"`). Not modelled:
prefill, and vLLM's preemption of running low-priority requests when the KV cache is full.
Judge reasoning lengths are long-tailed (lognormal, median ≈ 1500 tokens, capped at the
8192-token budget), drawn from each request's seed, so both policies get the same work.

A third engine serves in arrival order too, with bon's admission in front (the openai
backend's, bon/engines/admission.py): bon holds back what the server need not have yet
and sends the rest in its own priority order. It is told when a request's first sequence
gets a slot (its first token) and the tokens of every step, as streaming tells it.

Reported per size, with and without priorities (and FCFS behind bon's admission): makespan and its efficiency (the lower
bound — total tokens ÷ the engine's full-batch throughput — over the makespan), when
records are written (first, median, 90th percentile, last), and the slot-time the engine
sat idle while input was still waiting, by cause: the ordered-output window (4 × concurrency
records started but not yet written, full behind a slow head) or the concurrency limit.

    python benchmarks/simulate.py               # 100, 2,000 and 10,000 queries
    python benchmarks/simulate.py 500 --n 8 --votes 3
    python benchmarks/simulate.py --smoke       # 20 queries, N=4, votes 3, concurrency 16: a second
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import math
import random
import selectors
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bon.config import JUDGE_SAMPLING, TournamentConfig
from bon.engines.admission import Admission, Ticket
from bon.engines.base import Completion, Engine, Generation, GenerationRequest
from bon.engines.scripted import ScriptedEngine
from bon.io.prompts import judge_template
from bon.io.records import FieldNames, parse_record
from bon.runs.judge import Referee
from bon.runs.pipeline import WINDOW_PER_SLOT, LazyEngine, Pipeline

MAX_SEQS = 256  # sequences the engine runs at once
STEP_BASE_MS = 12.0  # a decoding step with an empty batch
STEP_PER_SEQ_MS = 0.06  # …and per running sequence
MEDIAN_TOKENS, SIGMA, CAP = 1500, 0.75, 8192
# What --smoke needs beyond bon (tests/test_benchmarks.py marks its test with it), and the
# lines it must print: a row per size and priority setting.
SMOKE_NEEDS = ()
FIGURES = (
    r"^ +\d+  no \(fcfs\) +\S+ (min|h) +\d\.\d{3} ",
    r"^ +\d+  yes +\S+ (min|h) +\d\.\d{3} ",
    r"^ +\d+  admission +\S+ (min|h) +\d\.\d{3} ",
)
MODES = {"fcfs": "no (fcfs)", "priority": "yes", "admission": "admission"}  # the engines, as the table names them


def step_seconds(running: int) -> float:
    return (STEP_BASE_MS + STEP_PER_SEQ_MS * running) / 1000


class _JumpingSelector(selectors.DefaultSelector):
    """Never blocks: a wait for the next timer moves the virtual clock there instead."""

    def __init__(self, loop: VirtualClockLoop):
        super().__init__()
        self._loop = loop

    def select(self, timeout=None):
        if timeout is None:
            raise RuntimeError("simulation deadlock: nothing ready and no timer pending")
        self._loop.now += timeout
        return super().select(0)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose time() is simulated seconds; idle waits take no real time."""

    def __init__(self):
        self.now = 0.0
        super().__init__(selector=_JumpingSelector(self))

    def time(self) -> float:
        return self.now


class SimulatedEngine(Engine):
    """A continuous-batching GPU behind bon's Engine interface (texts from ScriptedEngine)."""

    name = "simulated"

    def __init__(self, honour_priority: bool):
        self.honour_priority = honour_priority
        self.texts = ScriptedEngine(keep_requests=False)  # what the judge "writes": valid verdicts
        self.waiting: list = []  # heap of (priority, arrival, tokens, request state)
        self.running: list = []  # heap of (finish step, arrival, request state)
        self.progress = 0.0  # decoding steps taken so far
        self.last = 0.0  # virtual time of the last settle
        self.arrivals = itertools.count()
        self.timer: asyncio.TimerHandle | None = None
        self.tokens = 0
        # Free slots with nothing waiting while input remains, by what held the next record
        # back: the ordered-output window (full behind a slow head) or the concurrency limit.
        self.idle_slot_seconds = {"window": 0.0, "concurrency": 0.0}
        self.input_left = True  # set False by the driver once the last record is read
        self.window_full = lambda: False  # set by the driver
        self.admitted: list[int] = []  # priorities in the order sequences got a slot (tests)
        self.gate: Admission | None = None  # bon's admission in front (told of first tokens and steps)

    @staticmethod
    def lengths(request: GenerationRequest) -> list[int]:
        rng = random.Random(request.seed)
        return [min(CAP, max(16, int(rng.lognormvariate(math.log(MEDIAN_TOKENS), SIGMA)))) for _ in range(request.n)]

    async def generate(self, request: GenerationRequest) -> Generation:
        if self.gate is None:
            return await self._generate(request, None)
        async with self.gate.admit(request.priority) as ticket:
            return await self._generate(request, ticket)

    async def _generate(self, request: GenerationRequest, ticket: Ticket | None) -> Generation:
        loop = asyncio.get_running_loop()
        written = await self.texts.generate(request)
        lengths = self.lengths(request)
        done = loop.create_future()
        state = [request.n, done, ticket]
        self._settle(loop)
        priority = request.priority if self.honour_priority else 0
        for tokens in lengths:
            heapq.heappush(self.waiting, (priority, next(self.arrivals), tokens, state))
        self.tokens += sum(lengths)
        self._admit()
        self._schedule(loop)
        await done
        completions = [Completion(c.text, c.finish_reason, n) for c, n in zip(written.completions, lengths)]
        return Generation(completions, written.prompt_tokens, sum(lengths))

    def _settle(self, loop) -> None:
        """Advance every running sequence to now; finish those that are done."""
        now = loop.time()
        elapsed, self.last = now - self.last, now
        if self.running:
            steps = elapsed / step_seconds(len(self.running))
            self.progress += steps
            if self.gate is not None:
                self.gate.count(int(steps * len(self.running)))
        if self.input_left and not self.waiting and elapsed:
            cause = "window" if self.window_full() else "concurrency"
            self.idle_slot_seconds[cause] += elapsed * (MAX_SEQS - len(self.running))
        while self.running and self.running[0][0] <= self.progress + 1e-9:
            state = heapq.heappop(self.running)[2]
            state[0] -= 1
            if state[0] == 0:
                state[1].set_result(None)

    def _admit(self) -> None:
        while self.waiting and len(self.running) < MAX_SEQS:
            priority, arrival, tokens, state = heapq.heappop(self.waiting)
            self.admitted.append(priority)
            if state[2] is not None and state[2].first is None:
                state[2].output(0)  # its first token: the wait in the engine's queue is over
            heapq.heappush(self.running, (self.progress + tokens, arrival, state))

    def _schedule(self, loop) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None
        if self.running:
            steps = self.running[0][0] - self.progress
            self.timer = loop.call_at(self.last + steps * step_seconds(len(self.running)), self._tick, loop)

    def _tick(self, loop) -> None:
        self._settle(loop)
        self._admit()
        self._schedule(loop)

    async def close(self) -> None:
        pass


def workload(queries: int, n: int):
    """Records with N distinct candidates each (the scripted judge prefers the longer)."""
    for position in range(queries):
        obj = {
            "id": position,
            "query": f"question {position}",
            "candidates": [f"candidate {j} of {position}" + "!" * j for j in range(n)],
        }
        yield parse_record(obj, position + 1, position, FieldNames())


async def run_bon(engine: SimulatedEngine, queries: int, n: int, votes: int, concurrency: int) -> list[float]:
    """bon's pipeline judging `queries` records on `engine`; when each record was written."""
    loop = asyncio.get_running_loop()
    written: list[float] = []
    tournament, template = TournamentConfig(votes=votes), judge_template()
    pulled = [0]
    # bon's ordered_map holds up to 4 × concurrency started-but-unwritten records.
    engine.window_full = lambda: pulled[0] - len(written) >= WINDOW_PER_SLOT * concurrency

    async def records():
        for record in workload(queries, n):
            pulled[0] += 1
            yield record
        engine.input_left = False

    async def load():
        return engine

    pipeline = Pipeline(
        writer=None,
        concurrency=concurrency,
        make_judge=lambda e: Referee(e, template, JUDGE_SAMPLING, tournament),
        judge=LazyEngine(load),
    )
    async for _ in pipeline.stream(records()):  # records come out in input order, as bon writes them
        written.append(loop.time())
    return written


def simulate(
    queries: int, n: int, votes: int, concurrency: int, honour_priority: bool = False, mode: str | None = None
) -> dict:
    """`mode`: fcfs, priority or admission (FCFS behind bon's admission); unnamed, honour_priority picks."""
    mode = mode or ("priority" if honour_priority else "fcfs")
    engine = SimulatedEngine(honour_priority=mode == "priority")
    loop = VirtualClockLoop()
    if mode == "admission":
        engine.gate = Admission(clock=loop.time)
    try:
        written = loop.run_until_complete(run_bon(engine, queries, n, votes, concurrency))
    finally:
        loop.close()
    makespan = written[-1]
    bound = engine.tokens / (MAX_SEQS / step_seconds(MAX_SEQS))
    # Written in output order on a clock that only moves forward: already sorted.
    return {
        "makespan": makespan,
        "efficiency": bound / makespan,
        "first": written[0],
        "p50": written[len(written) // 2],
        "p90": written[int(len(written) * 0.9)],
        "last": written[-1],
        **{f"idle_{cause}": seconds / (MAX_SEQS * makespan) for cause, seconds in engine.idle_slot_seconds.items()},
        "tokens": engine.tokens,
    }


def clock(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 2_000, 10_000])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--votes", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--smoke", action="store_true", help="20 queries, N=4, votes 3, concurrency 16")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.n, args.votes, args.concurrency = [20], 4, 3, 16
    print(
        f"simulated GPU: up to {MAX_SEQS} sequences, step {STEP_BASE_MS} ms + {STEP_PER_SEQ_MS} ms/sequence; "
        f"reasoning lognormal median {MEDIAN_TOKENS}, capped {CAP}; N={args.n}, votes={args.votes}, "
        f"concurrency {args.concurrency} (ordered-output window {WINDOW_PER_SLOT * args.concurrency})"
    )
    print(
        f"{'queries':>7}  {'priority':<8}  {'makespan':>8}  {'efficiency':>10}  {'first':>7}  {'p50':>7}  "
        f"{'p90':>7}  {'last':>7}  {'idle: window':>12}  {'concurrency':>11}  {'real s':>6}"
    )
    for queries in args.sizes:
        for mode, label in MODES.items():
            started = time.perf_counter()
            r = simulate(queries, args.n, args.votes, args.concurrency, mode=mode)
            print(
                f"{queries:>7}  {label:<8}  {clock(r['makespan']):>8}  "
                f"{r['efficiency']:>10.3f}  {clock(r['first']):>7}  {clock(r['p50']):>7}  {clock(r['p90']):>7}  "
                f"{clock(r['last']):>7}  {r['idle_window']:>12.1%}  {r['idle_concurrency']:>11.1%}  "
                f"{time.perf_counter() - started:>6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
