"""When records are written against a first-come-first-served server (issue 21).

A real HTTP server on loopback (tests/fault_server.py with `slots`): N requests answered at
once, the rest wait in arrival order, each streamed piece `pace` seconds apart — what
`vllm serve` (default scheduling), SGLang and hosted APIs do. bon's real openai backend,
pipeline and knockout judge `--queries` records of 4 candidates, 3 votes a match, through
`bon.run`; reported: when the first record, the median record and the last were written,
as seconds and as a share of the run, and the most requests the server saw open at once.

    python benchmarks/fcfs_server.py                     # 8 slots, 40 records
    python benchmarks/fcfs_server.py --max-in-flight 256 # bon's in-flight limit pinned (no admission)
    python benchmarks/fcfs_server.py --smoke             # 12 records, a few seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import bon  # noqa: E402
from fault_server import FaultyServer  # noqa: E402

SMOKE_NEEDS = ()
FIGURES = (r"^first record +\d+\.\d+ s +\d+%", r"^makespan +\d+\.\d+ s")


def measure(queries: int, slots: int, pace: float, max_in_flight: int | None) -> dict:
    server = FaultyServer(slots=slots, pace=pace, reasoning="weighing both answers " * 3)
    options = {"max_in_flight": max_in_flight} if max_in_flight else {}
    judge = bon.Judge("fake", backend="openai", base_url=server.url, request_seed=False, **options)
    records = [
        {"id": i, "query": f"question {i}", "candidates": [f"answer {j} to {i}" for j in range(4)]}
        for i in range(queries)
    ]
    written: list[float] = []
    ids: list = []
    try:
        with judge:
            started = time.monotonic()
            for out in bon.run(records, judge=judge, votes=3, seed=0):
                written.append(time.monotonic() - started)
                ids.append(out["id"])
    finally:
        server.close()
    assert ids == list(range(queries)), "records came out of input order"
    return {
        "first": written[0],
        "p50": written[len(written) // 2],
        "makespan": written[-1],
        "requests": len(server.bodies),
        "most_open": max(server.open_counts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--pace", type=float, default=0.015, help="seconds between streamed pieces")
    parser.add_argument("--max-in-flight", type=int, default=None, help="pin bon's in-flight limit")
    parser.add_argument("--smoke", action="store_true", help="12 records, pace 5 ms")
    args = parser.parse_args()
    if args.smoke:
        args.queries, args.pace = 12, 0.005
    r = measure(args.queries, args.slots, args.pace, args.max_in_flight)
    limit = args.max_in_flight or "found"
    print(
        f"FCFS server, {args.slots} slots, pace {args.pace * 1000:g} ms; {args.queries} records, N=4, "
        f"votes 3; in-flight limit {limit}"
    )
    for name in ("first", "p50", "makespan"):
        label = {"first": "first record", "p50": "p50 record", "makespan": "makespan"}[name]
        print(f"{label:<12} {r[name]:6.2f} s  {r[name] / r['makespan']:4.0%}")
    print(f"requests {r['requests']}, most open at the server at once {r['most_open']}")


if __name__ == "__main__":
    main()
