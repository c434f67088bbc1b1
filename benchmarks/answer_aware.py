"""Answer-aware knockout vs plain knockout vs answer majority, on bon's own bracket code.

Synthetic workloads: per query N=8 candidates with boxed final answers. Each candidate of
a query is right with the query's probability d, so 0–8 candidates hold the correct
answer; a wrong candidate picks one of three wrong answers, the first much more popular
than the others (0.6 / 0.25 / 0.15), so wrong answers are often shared and sometimes
outnumber the right one. Two spreads of d:
- MATH-like: d ~ Beta(0.8, 0.2), calibrated to what Qwen2.5-Math-7B-class policies score on
  MATH (pass@1 ≈ 0.80, majority@8 ≈ 0.86, pass@8 ≈ 0.96; the RRM paper reads majority@8
  ≈ 0.87 there). The goal is judged on this one.
- hard: d uniform in [0, 1] (pass@1 0.50, majority@8 0.60), where the right answer is often
  a minority.

The judge is scripted: a vote between a right and a wrong candidate picks the right one
with probability p (0.7 and 0.85 here), otherwise a coin; votes are drawn from each
request's seed, so every strategy sees the same judge. bon's real `knockout` (plain, and
with the teams `bon.tournament.answers` forms, as `--group-by-answer exact` does) runs with 3 votes per
match; answer majority picks a member of the largest answer group and asks no judge.

Printed per p: judge samples per query, their share of plain knockout's, and selection
accuracy (± its 95% interval half-width); then answer-aware's accuracy minus each other's,
paired over the same queries (± 95%). The goal: answer-aware at most 60% of plain
knockout's samples, with accuracy at least as high as both others.

    python benchmarks/answer_aware.py                # 10,000 queries per workload
    python benchmarks/answer_aware.py --queries 500 --votes 1
    python benchmarks/answer_aware.py --smoke        # 200 queries per workload: a second
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

from bon.config import TournamentConfig
from bon.tournament import Vote, knockout
from bon.tournament.answers import Checker, group_answers, majority_answer, team_of

N = 8
WRONG_ANSWERS = (("13", 0.6), ("11", 0.25), ("7", 0.15))
CORRECT = "12"
# What --smoke needs beyond bon (tests/test_benchmarks.py marks its test with it), and the
# lines it must print.
SMOKE_NEEDS = ()
FIGURES = (
    r"^  plain knockout +21\.00 +100% +\d\.\d{3} ±\d\.\d{3}$",
    r"^  answer-aware knockout +\d+\.\d\d +\d+% +\d\.\d{3} ±",
    r"^  answer majority +0\.00 +0% +\d\.\d{3} ±",
    r"^  answer-aware minus, same queries: plain [+-]\d\.\d{3} ±\d\.\d{3}, majority [+-]\d\.\d{3}",
)


@dataclass
class Query:
    id: int
    candidates: list[str]
    correct: list[bool]


WORKLOADS = {"MATH-like": (0.8, 0.2), "hard": (1.0, 1.0)}  # Beta(a, b) of the share of right candidates


def workload(queries: int, spread: tuple[float, float], seed: int = 0) -> list[Query]:
    rng = random.Random(seed)
    out = []
    for q in range(queries):
        difficulty = rng.betavariate(*spread)
        answers = [
            CORRECT
            if rng.random() < difficulty
            else rng.choices([a for a, _ in WRONG_ANSWERS], [w for _, w in WRONG_ANSWERS])[0]
            for _ in range(N)
        ]
        # Distinct texts (no two candidates identical), answers in a box as MATH solutions end.
        texts = [
            f"Solution {i} of problem {q}: working ... so the answer is \\boxed{{{a}}}." for i, a in enumerate(answers)
        ]
        out.append(Query(q, texts, [a == CORRECT for a in answers]))
    return out


def scripted_judge(query: Query, p: float, samples: list[int]):
    """bon's `ask` for one query: each vote prefers the right candidate with probability p."""

    async def ask(first: int, second: int, k: int, seed: int) -> list[Vote]:
        samples[0] += k
        rng = random.Random(seed)
        right_first, right_second = query.correct[first], query.correct[second]
        votes = []
        for _ in range(k):
            if right_first != right_second:
                right = first if right_first else second
                chosen = right if rng.random() < p else (second if right == first else first)
            else:
                chosen = first if rng.random() < 0.5 else second
            votes.append(Vote(first, second, chosen, "</think>\\boxed{}", "stop", 1))
        return votes

    return ask


async def select(query: Query, strategy: str, p: float, votes: int, checker: Checker) -> tuple[int, int]:
    """(chosen candidate, judge samples spent)."""
    samples = [0]
    if strategy == "majority":
        return majority_answer(query.candidates, checker), 0
    teams = team_of(group_answers(query.candidates, checker), N) if strategy == "answer-aware" else None
    result = await knockout(
        query.candidates, scripted_judge(query, p, samples), TournamentConfig(votes=votes), query.id, teams=teams
    )
    return result.winner, samples[0]


def measure(queries: list[Query], strategy: str, p: float, votes: int) -> tuple[float, list[bool]]:
    """Judge samples per query, and whether each query's pick was right."""
    checker = Checker("exact")

    async def run_all():
        return await asyncio.gather(*(select(q, strategy, p, votes, checker) for q in queries))

    results = asyncio.run(run_all())
    return sum(s for _, s in results) / len(queries), [q.correct[chosen] for q, (chosen, _) in zip(queries, results)]


def paired_difference(x: list[bool], y: list[bool]) -> tuple[float, float]:
    """Mean of x - y over the same queries, and its 95% interval half-width."""
    d = [int(a) - int(b) for a, b in zip(x, y)]
    mean = sum(d) / len(d)
    variance = sum((v - mean) ** 2 for v in d) / (len(d) - 1)
    return mean, 1.96 * math.sqrt(variance / len(d))


STRATEGIES = (("plain knockout", "plain"), ("answer-aware knockout", "answer-aware"), ("answer majority", "majority"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--votes", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="200 queries per workload")
    args = parser.parse_args()
    if args.smoke:
        args.queries = 200
    for name, spread in WORKLOADS.items():
        queries = workload(args.queries, spread)
        run_workload(name, queries, args.votes)


def run_workload(name: str, queries: list[Query], votes: int) -> None:
    oracle = sum(any(q.correct) for q in queries) / len(queries)
    half_width = lambda acc: 1.96 * math.sqrt(acc * (1 - acc) / len(queries))  # noqa: E731
    print(
        f"\n{name} workload: {len(queries):,} queries × {N} candidates, {votes} votes per match; "
        f"oracle (some candidate right) {oracle:.3f}"
    )
    for p in (0.7, 0.85):
        print(f"scripted judge, per-vote accuracy {p}")
        print(f"  {'strategy':<24}{'judge samples/query':>21}{'vs plain':>10}{'accuracy':>17}")
        figures = {}
        for label, strategy in STRATEGIES:
            figures[strategy] = samples, right = measure(queries, strategy, p, votes)
            share, accuracy = samples / figures["plain"][0], sum(right) / len(right)
            print(f"  {label:<24}{samples:>21.2f}{share:>10.0%}{accuracy:>11.3f} ±{half_width(accuracy):.3f}")
        aware_samples, aware_right = figures["answer-aware"]
        differences = {other: paired_difference(aware_right, figures[other][1]) for other in ("plain", "majority")}
        print(
            "  answer-aware minus, same queries: "
            + ", ".join(f"{other} {mean:+.3f} ±{half:.3f}" for other, (mean, half) in differences.items())
        )
        cheap = aware_samples <= 0.6 * figures["plain"][0]
        verdict = (
            "met"
            if cheap and all(mean >= 0 for mean, _ in differences.values())
            else "met within noise"
            if cheap and all(mean + half >= 0 for mean, half in differences.values())
            else "NOT met"
        )
        print(f"  goal (≤60% of plain's samples, accuracy ≥ both others): {verdict}")


if __name__ == "__main__":
    main()
