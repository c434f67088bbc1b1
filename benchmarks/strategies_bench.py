"""Accuracy per judge sample: knockout, elo and swiss (at several budgets), and escalation.

bon's own strategy code on simulated judges; no model. Workloads are answer_aware.py's
(N=8 candidates with boxed answers; MATH-like and hard spreads of the share of right ones).

The simulated judge (assumptions): each candidate has a latent quality, 1 if its answer is
right else 0, plus Gaussian noise (sd 0.35), so two right (or two wrong) candidates are
close and a right and a wrong one are far. A vote shows the pair in one order and picks
the first shown with probability sigmoid(s·(q_first − q_second)) + 0.05 (a position bias
toward the first shown), clipped to [0.02, 0.98]: close pairs near a coin, distant ones
near sure. s (sharpness) is 2.5 for the standard judge; for escalation a small judge has
s = 1.5 and a large one s = 4. Votes are drawn from each request's seed, so every strategy
sees the same judge. Accuracy: the pick's answer is right. Paired differences over the same
queries carry ±95% intervals.

    python benchmarks/strategies_bench.py                 # 10,000 queries per workload (slow: BT fits)
    python benchmarks/strategies_bench.py --queries 2000
    python benchmarks/strategies_bench.py --smoke         # 60 queries, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from answer_aware import WORKLOADS, Query, workload
from bon.config import TournamentConfig
from bon.tournament import Vote, knockout, round_robin
from bon.tournament.answers import Checker, majority_answer
from bon.tournament.swiss import swiss
from bon.tournament.voting import Escalating

SMOKE_NEEDS = ()
FIGURES = (
    r"^  knockout 3 votes +21\.00 +\d\.\d{3} ±\d\.\d{3}",
    r"^  swiss budget 10 +\d+\.\d\d +\d\.\d{3} ±",
    r"^  escalation: large-judge samples \d+% of all-large knockout's",
)
NOISE, BIAS = 0.35, 0.05


@dataclass
class Judged:
    samples: list[int]  # [standard or small judge, large judge]


def qualities(query: Query) -> list[float]:
    rng = random.Random(query.id * 7919 + 1)
    return [(1.0 if right else 0.0) + rng.gauss(0, NOISE) for right in query.correct]


def simulated(q: list[float], sharpness: float, counter: list[int], which: int):
    async def ask(first: int, second: int, k: int, seed: int) -> list[Vote]:
        counter[which] += k
        rng = random.Random(seed * 31 + which)
        p_first = 1 / (1 + math.exp(-sharpness * (q[first] - q[second]))) + BIAS
        p_first = min(0.98, max(0.02, p_first))
        return [Vote(first, second, first if rng.random() < p_first else second, "", "stop", 1) for _ in range(k)]

    return ask


async def pick(query: Query, row: tuple) -> tuple[int, list[int]]:
    kind, settings = row[0], row[1]
    counter = [0, 0]
    q = qualities(query)
    candidates = query.candidates
    if kind == "majority":
        return majority_answer(candidates, Checker("exact")), counter
    if kind == "oracle":
        return (query.correct.index(True) if any(query.correct) else 0), counter
    config = TournamentConfig(**settings)
    if kind == "escalate":
        ask = Escalating(simulated(q, 1.5, counter, 0), simulated(q, 4.0, counter, 1), ("small", "large"))
    elif kind == "large":
        ask = simulated(q, 4.0, counter, 1)
    elif kind == "small":
        ask = simulated(q, 1.5, counter, 0)
    else:
        ask = simulated(q, 2.5, counter, 0)
    strategy = row[2] if len(row) > 2 else "knockout"
    if strategy == "swiss":
        result = await swiss(candidates, ask, config, query.id)
    elif strategy == "elo":
        result = await round_robin(candidates, ask, config, query.id, config.max_pairs)
    else:
        result = await knockout(candidates, ask, config, query.id)
    return result.winner, counter


def measure(queries: list[Query], row: tuple) -> tuple[list[float], list[bool]]:
    async def run_all():
        return await asyncio.gather(*(pick(q, row) for q in queries))

    results = asyncio.run(run_all())
    samples = [sum(c[0] for _, c in results) / len(queries), sum(c[1] for _, c in results) / len(queries)]
    return samples, [q.correct[w] for q, (w, _) in zip(queries, results)]


def paired(x: list[bool], y: list[bool]) -> tuple[float, float]:
    d = [int(a) - int(b) for a, b in zip(x, y)]
    mean = sum(d) / len(d)
    var = sum((v - mean) ** 2 for v in d) / max(1, len(d) - 1)
    return mean, 1.96 * math.sqrt(var / len(d))


ROWS = {
    "knockout 1 vote": ("judge", {"votes": 1}),
    "knockout 3 votes": ("judge", {"votes": 3}),
    "knockout 3 early-stop": ("judge", {"votes": 3, "early_stop": True}),
    "knockout 5 votes": ("judge", {"votes": 5}),
    "elo 1 vote": ("judge", {"votes": 1}, "elo"),
    **{f"swiss budget {b}": ("judge", {"votes": 1, "budget": b}, "swiss") for b in (7, 10, 13, 16, 21)},
    "answer majority": ("majority", {}),
    "oracle (pass@8)": ("oracle", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="60 queries per workload")
    args = parser.parse_args()
    if args.smoke:
        args.queries = 60
    for name, spread in WORKLOADS.items():
        queries = workload(args.queries, spread)
        print(f"\n{name} workload: {len(queries):,} queries × 8 candidates; standard judge (s=2.5)")
        print(f"  {'strategy':<26}{'samples/query':>14}{'accuracy':>12}")
        figures = {}
        for label, row in ROWS.items():
            samples, right = measure(queries, row)
            figures[label] = (samples[0], right)
            acc = sum(right) / len(right)
            print(f"  {label:<26}{samples[0]:>14.2f}{acc:>8.3f} ±{1.96 * math.sqrt(acc * (1 - acc) / len(right)):.3f}")
        base = figures["knockout 3 votes"]
        for label in [k for k in ROWS if k.startswith("swiss")] + ["knockout 1 vote", "knockout 3 early-stop"]:
            mean, half = paired(figures[label][1], base[1])
            print(
                f"  {label} minus knockout 3 votes: {mean:+.3f} ±{half:.3f} "
                f"at {figures[label][0] / base[0]:.0%} of its samples"
            )
        matching = [label for label in ROWS if label.startswith("swiss") and paired(figures[label][1], base[1])[0] >= 0]
        print(
            "  smallest swiss budget at knockout-3's accuracy or above: "
            + (
                f"{matching[0]} ({figures[matching[0]][0] / base[0]:.0%} of its samples)"
                if matching
                else "none measured"
            )
        )
        large, large_right = measure(queries, ("large", {"votes": 3}))
        small, small_right = measure(queries, ("small", {"votes": 3}))
        both, esc_right = measure(queries, ("escalate", {"votes": 3}))
        mean, half = paired(esc_right, large_right)
        print(
            f"  escalation: large-judge samples {both[1] / large[1]:.0%} of all-large knockout's "
            f"({both[1]:.2f} vs {large[1]:.2f}; small {both[0]:.2f}); accuracy {sum(esc_right) / len(queries):.3f} "
            f"vs all-large {sum(large_right) / len(queries):.3f} (paired {mean:+.3f} ±{half:.3f}), "
            f"all-small {sum(small_right) / len(queries):.3f}"
        )


if __name__ == "__main__":
    main()
