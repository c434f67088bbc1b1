"""A simulated GPU for planning big judge jobs: continuous scheduling vs a round barrier.

No engine, a virtual clock, fully deterministic. The GPU model: a continuous-batching
engine (like vLLM) runs up to MAX_SEQS sequences at once; every decoding step advances each
running sequence by one token and takes STEP_BASE + STEP_PER_SEQ × (running sequences)
milliseconds, so the step time grows with the batch. A waiting sequence joins as soon as a
slot frees. Judge reasoning lengths are long-tailed (lognormal, median ≈ 1500 tokens,
capped at the 8192-token budget).

Each query is a knockout over N candidates (N-1 matches) with K votes per match, sent as
two requests (one per order, n = ⌈K/2⌉ and ⌊K/2⌋). Two drivers:
- bon: a match is submitted the moment its two feeder matches are decided (bon's fixed
  bracket), up to CONCURRENCY queries in flight, new queries starting as others finish;
- rounds: what peers' scripts do — every query's round-r matches in one batch, and round
  r+1 only after the whole batch has finished.
The lower bound is total tokens ÷ the engine's best throughput (a full batch).

    python benchmarks/simulate.py                 # 2,000 queries × N=16 × 5 votes, then scaling
"""

from __future__ import annotations

import heapq
import math
import random
import sys
from collections import deque

MAX_SEQS = 256  # sequences the engine runs at once
STEP_BASE_MS = 12.0  # a decoding step with an empty batch
STEP_PER_SEQ_MS = 0.06  # …and per running sequence
MEDIAN_TOKENS, SIGMA, CAP = 1500, 0.75, 8192


def step_ms(running: int) -> float:
    return STEP_BASE_MS + STEP_PER_SEQ_MS * running


class SimulatedGPU:
    """Event-driven: between joins and finishes every running sequence advances together."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.now_ms = 0.0
        self.progress = 0  # decoding steps taken so far
        self.running: list[tuple[int, int, int]] = []  # heap of (finish step, seq id, request id)
        self.waiting: deque[tuple[int, int]] = deque()  # (request id, length)
        self.left: dict[int, int] = {}  # request id -> sequences still running or waiting
        self.callbacks: dict[int, object] = {}
        self.tokens = 0
        self._ids = 0

    def length(self) -> int:
        return min(CAP, max(16, int(self.rng.lognormvariate(math.log(MEDIAN_TOKENS), SIGMA))))

    def submit(self, n: int, done) -> None:
        self._ids += 1
        request = self._ids
        self.left[request], self.callbacks[request] = n, done
        for _ in range(n):
            length = self.length()
            self.tokens += length
            self.waiting.append((request, length))
        self._admit()

    def _admit(self) -> None:
        while self.waiting and len(self.running) < MAX_SEQS:
            request, length = self.waiting.popleft()
            self._ids += 1
            heapq.heappush(self.running, (self.progress + length, self._ids, request))

    def run(self) -> float:
        while self.running:
            finish = self.running[0][0]
            steps = finish - self.progress
            self.now_ms += steps * step_ms(len(self.running))
            self.progress = finish
            finished = []
            while self.running and self.running[0][0] == finish:
                finished.append(heapq.heappop(self.running)[2])
            for request in finished:
                self.left[request] -= 1
                if self.left[request] == 0:
                    del self.left[request]
                    self.callbacks.pop(request)()  # may submit more work
            self._admit()
        return self.now_ms / 1000


def match_on(gpu: SimulatedGPU, votes: int, done) -> None:
    """One match: two requests (one per order); done() when both are back."""
    parts = [p for p in ((votes + 1) // 2, votes // 2) if p]
    remaining = [len(parts)]

    def one_back():
        remaining[0] -= 1
        if remaining[0] == 0:
            done()

    for n in parts:
        gpu.submit(n, one_back)


def bracket_width(n: int) -> list[int]:
    """Matches per round for n candidates (odd counts: one bye)."""
    widths = []
    while n > 1:
        widths.append(n // 2)
        n = n // 2 + n % 2
    return widths


def run_bon(queries: int, n: int, votes: int, concurrency: int, seed: int) -> tuple[float, int, float]:
    """Makespan (s), tokens, and when the first record could be written (s)."""
    gpu = SimulatedGPU(seed)
    pending = deque(range(queries))
    finished_at: list[float] = []

    def query_done() -> None:
        finished_at.append(gpu.now_ms / 1000)
        start_query()

    def start_query() -> None:
        if not pending:
            return
        pending.popleft()
        # A bracket as a tree: leaves are candidates; each internal node is a match that
        # starts when both children are decided.
        def node(size: int, done) -> None:
            if size == 1:
                done()
                return
            children = [0]
            left, right = size - size // 2, size // 2

            def child_done():
                children[0] += 1
                if children[0] == 2:
                    match_on(gpu, votes, done)

            node(left, child_done)
            node(right, child_done)

        node(n, query_done)  # when this query's final is decided, the next query starts

    for _ in range(min(concurrency, queries)):
        start_query()
    return gpu.run(), gpu.tokens, min(finished_at)


def run_rounds(queries: int, n: int, votes: int, seed: int) -> tuple[float, int]:
    gpu = SimulatedGPU(seed)
    widths = bracket_width(n)
    round_no = [0]

    def start_round() -> None:
        if round_no[0] == len(widths):
            return
        matches = widths[round_no[0]] * queries
        round_no[0] += 1
        left = [matches]

        def match_done():
            left[0] -= 1
            if left[0] == 0:
                start_round()  # the barrier: the next round only after every match of this one

        for _ in range(matches):
            match_on(gpu, votes, match_done)

    start_round()
    return gpu.run(), gpu.tokens


def lower_bound(tokens: int) -> float:
    best_tokens_per_s = MAX_SEQS / (step_ms(MAX_SEQS) / 1000)
    return tokens / best_tokens_per_s


def main() -> None:
    n, votes, concurrency = 16, 5, 256
    print(f"simulated GPU: up to {MAX_SEQS} sequences, step {STEP_BASE_MS} ms + {STEP_PER_SEQ_MS} ms/sequence; "
          f"reasoning lognormal median {MEDIAN_TOKENS}, capped {CAP}; N={n}, votes={votes}, "
          f"bon concurrency {concurrency}")
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1_000, 2_000, 10_000]
    for queries in sizes:
        bon_s, bon_tokens, first_s = run_bon(queries, n, votes, concurrency, seed=1)
        rounds_s, rounds_tokens = run_rounds(queries, n, votes, seed=1)
        bound_s = lower_bound(bon_tokens)
        # With a round barrier no record is complete before the last round ends.
        print(f"queries={queries:>6}  bon={bon_s / 3600:6.2f} h  rounds={rounds_s / 3600:6.2f} h  "
              f"lower_bound={bound_s / 3600:6.2f} h  bon_vs_bound={bound_s / bon_s:.3f}  "
              f"rounds_vs_bound={lower_bound(rounds_tokens) / rounds_s:.3f}  rounds_over_bon={rounds_s / bon_s:.2f}x  "
              f"first_record: bon={first_s / 60:.0f} min, rounds={rounds_s / 60:.0f} min")


if __name__ == "__main__":
    main()
