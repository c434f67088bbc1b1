"""How fast `bon browse` opens a large run: a synthetic 100,000-record output file.

Prints the time until the list shows its first rows, the time until every record is
listed (the background pass), and that pass beside plain json.loads of every line (the
floor any reader pays).

    python benchmarks/browse_bench.py [RECORDS] [REASONING_CHARS]     (default 100000 400)
    python benchmarks/browse_bench.py --smoke                         # 2,000 records: seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from textual.widgets import DataTable

from bon.views.browse import BrowseApp

# What --smoke needs beyond bon (tests/test_benchmarks.py marks its test with it), and the
# lines it must print.
SMOKE_NEEDS = ()
FIGURES = (
    r"^[\d,]+ records, [\d,]+ MB \(\d+ characters of reasoning per vote\)$",
    r"^first rows listed after +\d+\.\d\d s$",
    r"^all [\d,]+ records read after +\d+\.\d\d s +\([\d,]+ records/s;",
    r"^json\.loads of every line +\d+\.\d\d s +-> browse's full pass is \d+\.\dx that floor$",
)


def synthetic_record(i: int, reasoning_chars: int, rng: random.Random) -> dict:
    """A 4-candidate knockout: 3 matches of 3 votes, like `bon run -n 4 --votes 3`."""
    thought = ("Let me compare the two answers step by step. " * (reasoning_chars // 45 + 1))[:reasoning_chars]

    def vote(first):
        valid = rng.random() > 0.05
        return {
            "first": first,
            "verdict": first if valid else None,
            "reasoning": thought + "\n</think>\n\n\\boxed{Assistant 1}",
            "finish_reason": "stop",
            "completion_tokens": reasoning_chars // 4,
        } | ({} if valid else {"reason": "no_verdict"})

    def match(a, b):
        votes = [vote(a), vote(b), vote(a)]
        return {
            "a": a,
            "b": b,
            "winner": a,
            "tally": {"a": 2, "b": 1, "invalid": 0},
            "decided_by": "tiebreak" if rng.random() < 0.1 else "majority",
            "votes": votes,
        }

    return {
        "id": f"q{i}",
        "query": f"Question number {i}: what is {i} squared?",
        "candidates": [f"answer {k} to {i}" for k in range(4)],
        "best": f"answer 0 to {i}",
        "best_index": 0,
        "tournament": {"strategy": "knockout", "seed": 0, "rounds": [[match(0, 1), match(2, 3)], [match(0, 2)]]},
    }


async def open_and_read(path: str) -> tuple[float, float, int]:
    start = time.perf_counter()
    app = BrowseApp(path)
    first = None
    async with app.run_test(size=(120, 40)) as pilot:
        while not app.done:
            if first is None and app.query_one(DataTable).row_count:
                first = time.perf_counter() - start
            await pilot.pause(0.01)
        total = time.perf_counter() - start
        rows = len(app.entries)
    return first or total, total, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="?", type=int, default=100_000)
    parser.add_argument("reasoning_chars", nargs="?", type=int, default=400)
    parser.add_argument("--smoke", action="store_true", help="2,000 records")
    args = parser.parse_args()
    records, reasoning = (2_000, 400) if args.smoke else (args.records, args.reasoning_chars)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.jsonl"
        with open(path, "w") as out:
            for i in range(records):
                out.write(json.dumps(synthetic_record(i, reasoning, rng)) + "\n")
        size = path.stat().st_size
        start = time.perf_counter()
        with open(path, "rb") as handle:
            for line in handle:
                json.loads(line)
        floor = time.perf_counter() - start
        first, total, rows = asyncio.run(open_and_read(str(path)))
    print(f"{records:,} records, {size / 1e6:,.0f} MB ({reasoning} characters of reasoning per vote)")
    print(f"first rows listed after  {first:6.2f} s")
    print(
        f"all {rows:,} records read after {total:6.2f} s  ({records / total:,.0f} records/s; "
        "filters and search cover them all)"
    )
    print(f"json.loads of every line {floor:6.2f} s  -> browse's full pass is {total / floor:.1f}x that floor")


if __name__ == "__main__":
    main()
