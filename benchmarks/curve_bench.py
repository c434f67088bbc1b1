"""What accuracy a judge sample buys: `bon curve` on a simulated pool (no model).

One pool per workload (answer_aware.py's MATH-like and hard, N=8), built by bon's own
`--strategy pool` code with K votes (8) of every pair in each order from strategies_bench.py's
simulated judge (latent quality 1 for a right answer, 0 for a wrong one, plus Gaussian noise;
a vote picks the first shown with sigmoid(2.5·Δq) + 0.05 position bias). Assumed for tokens:
a vote's completion takes 800 + 1400·exp(−2|Δq|) tokens (close pairs think longer), ±20%.
Every strategy is then replayed from the pool by `bon curve`'s code (bon.views.curve), as the
command replays a real pool run: knockout at 1/3/5 votes (with early stopping, answer-aware),
elo, swiss at (n−1) × 1, 1.5, 2, 3 samples, the pool's own pick, answer majority and pass@8.
A replay that asks a pair for more votes than the pool holds is counted in `short` (swiss
at 3 × (n−1) needed more than 5 a side for about 4% of queries; 8 a side was enough).

    python benchmarks/curve_bench.py                      # 1,000 queries per workload
    python benchmarks/curve_bench.py --plot docs/curves.png --pool-out /tmp/pool.jsonl
    python benchmarks/curve_bench.py --smoke              # 30 queries, seconds

--pool-out writes the MATH-like pool as bon output records: `bon curve` reads it
(`bon curve /tmp/pool.jsonl --plot curves.png`) and gives the same figures. The README's
docs/curves.png is `--plot docs/curves.png` at the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from answer_aware import CORRECT, WORKLOADS, Query, workload
from bon.config import TournamentConfig
from bon.io.output import read_output
from bon.tournament import Vote
from bon.tournament.answers import Checker
from bon.tournament.pool import pool
from bon.views.curve import curve, plot
from strategies_bench import BIAS, qualities

SMOKE_NEEDS = ()
FIGURES = (
    r"^  knockout 3 votes +21\.00 +[\d,]+ +\d\.\d{3} ±\d\.\d{3}",
    r"^  swiss budget 14 +\d+\.\d\d +[\d,]+ +\d\.\d{3} ±",
    r"^  every pool vote \(the pool's own pick\) +448\.00 ",
    r"^  oracle \(pass@8\) +0\.00 +0 +\d\.\d{3}",
)
SHARPNESS = 2.5


def simulated(q: list[float]):
    async def ask(first: int, second: int, k: int, seed: int) -> list[Vote]:
        rng = random.Random(seed)
        gap = q[first] - q[second]
        p_first = min(0.98, max(0.02, 1 / (1 + math.exp(-SHARPNESS * gap)) + BIAS))
        tokens = 800 + 1400 * math.exp(-2 * abs(gap))
        return [
            Vote(
                first,
                second,
                first if rng.random() < p_first else second,
                "",
                "stop",
                round(tokens * rng.uniform(0.8, 1.2)),
            )
            for _ in range(k)
        ]

    return ask


def pool_record(query: Query, votes: int) -> dict:
    """The record `bon select --strategy pool --votes K` writes for this query (its judge simulated)."""
    result = asyncio.run(pool(query.candidates, simulated(qualities(query)), TournamentConfig(votes=votes), query.id))
    all_votes = [v for matches in result.rounds for m in matches for v in m.votes]
    return {
        "id": query.id,
        "query": f"problem {query.id}",
        "answer": CORRECT,
        "candidates": query.candidates,
        "best": query.candidates[result.winner],
        "best_index": result.winner,
        "ranking": result.ranking,
        "scores": result.scores,
        "tournament": result.to_json() | {"judge": "simulated"},
        "usage": {
            "judge_samples": len(all_votes),
            "judge_completion_tokens": sum(v.completion_tokens or 0 for v in all_votes),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--votes", type=int, default=8, help="pool votes per pair in each order")
    parser.add_argument("--plot", help="draw the MATH-like workload's curves into this PNG")
    parser.add_argument("--pool-out", help="write the MATH-like pool here (bon output records)")
    parser.add_argument("--smoke", action="store_true", help="30 queries per workload")
    args = parser.parse_args()
    if args.smoke:
        args.queries = 30
    for name, spread in WORKLOADS.items():
        records = [pool_record(q, args.votes) for q in workload(args.queries, spread)]
        if name == "MATH-like" and args.pool_out:
            Path(args.pool_out).write_text("".join(json.dumps(r) + "\n" for r in records))
        figures = curve(read_output(records), "answer", Checker("exact"))
        print(f"\n{name} workload: {figures['records']:,} queries × 8 candidates, a pool of {args.votes} votes a side")
        print(f"  {'strategy':<42}{'samples/query':>14}{'tokens/query':>13}{'accuracy':>10}")
        for line in figures["curves"]:
            for p in line["points"]:
                half = (p["ci95"][1] - p["ci95"][0]) / 2
                print(
                    f"  {p['label']:<42}{p['judge_samples']:>14.2f}{p['judge_tokens']:>13,.0f}"
                    f"{p['accuracy']:>8.3f} ±{half:.3f}" + (f"  short {p['short']}" if p["short"] else "")
                )
        for base in figures["baselines"]:
            print(f"  {base['label']:<42}{0:>14.2f}{0:>13}{base['accuracy']:>8.3f}")
        if name == "MATH-like" and args.plot:
            plot(figures, args.plot, f"best-of-8, MATH-like (simulated judge), {figures['records']:,} queries")
            print(f"  curves drawn in {args.plot}")


if __name__ == "__main__":
    main()
