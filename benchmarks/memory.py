"""Peak memory (RSS) of `bon select` as the input grows, on a scripted engine.

bon streams its input and keeps only the in-flight window (--concurrency records plus a
bounded reorder buffer), so memory should stay nearly flat from 10k to 1M records. The one
structure that grows is the set of seen ids (for the duplicate-id check), a few dozen bytes
per record. Prints peak RSS per size and the growth per record.

    python benchmarks/memory.py [SIZES...]        (default: 10000 1000000)
    python benchmarks/memory.py --smoke           # 1,000 and 5,000 records: a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELPER = Path(__file__).resolve().parent.parent / "tests" / "scripted_bon.py"
PROBE = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)
# What --smoke needs beyond bon (tests/test_benchmarks.py marks its test with it), and the
# lines it must print.
SMOKE_NEEDS = ()
FIGURES = (
    r"^records= +[\d,]+  peak_rss= +\d+\.\d MiB  time= +\d+\.\ds  \([\d,]+ records/s\)$",
    r"^rss_ratio=\d+\.\d\d growth_per_record=-?\d+ bytes$",
)


def peak_rss_kib(size: int, workdir: Path) -> tuple[int, float]:
    src = workdir / f"q{size}.jsonl"
    with open(src, "w") as handle:
        for i in range(size):
            handle.write(json.dumps({"id": f"q{i:07d}", "query": f"question {i}", "candidates": ["a", "bb"]}) + "\n")
    out = workdir / f"out{size}.jsonl"
    started = time.monotonic()
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            sys.executable,
            str(HELPER),
            "select",
            str(src),
            "-o",
            str(out),
            "--votes",
            "2",
            "--concurrency",
            "64",
            "-q",
            "--overwrite",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.monotonic() - started
    lines = sum(1 for _ in open(out))
    assert lines == size, f"{lines} records written for {size}"
    src.unlink()
    out.unlink()
    return int(probe.stdout.strip().splitlines()[-1]), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 1_000_000])
    parser.add_argument("--smoke", action="store_true", help="1,000 and 5,000 records")
    args = parser.parse_args()
    sizes = [1_000, 5_000] if args.smoke else args.sizes
    print(f"machine: {os.cpu_count()} cores; scripted engine; bon select, n=2 candidates, votes 2, concurrency 64")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            rss, elapsed = peak_rss_kib(size, Path(tmp))
            results.append((size, rss))
            print(
                f"records={size:>9,}  peak_rss={rss / 1024:8.1f} MiB  time={elapsed:7.1f}s  "
                f"({size / elapsed:,.0f} records/s)"
            )
    (small, small_rss), (big, big_rss) = results[0], results[-1]
    per_record = (big_rss - small_rss) * 1024 / max(big - small, 1)
    print(f"rss_ratio={big_rss / small_rss:.2f} growth_per_record={per_record:.0f} bytes")


if __name__ == "__main__":
    main()
