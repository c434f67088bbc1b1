"""Peak memory (RSS) of `bon merge` and of a resume's sidecar as the records grow.

Both keep their records on disk: merge notes where each shard record lies in a temporary
SQLite index and copies records one at a time; a resume indexes its sidecar's entries the
same way and reads each back when it is asked for. So peak memory should stay flat from
the smallest size to 1M records.

- merge: N records of 8 candidates (a knockout bracket of 7 matches, 3 votes each) in 4
  shard outputs, joined by the real `bon merge` in a process of its own.
- resume: a sidecar of N entries (8 sampled candidates each) opened with resume=True and
  every entry read back, in a process of its own.

    python benchmarks/output_memory.py [SIZES...]   (default: 10000 1000000; 1M: ~2 GB of shards on disk)
    python benchmarks/output_memory.py --smoke      (1,000 and 5,000 records: seconds)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = (r"^merge +records=.*peak_rss=", r"^resume +records=.*peak_rss=", r"^merge_rss_ratio=.*resume_rss_ratio=")
PROBE = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, "
    "stderr=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)
SHARDS = 4
CANDIDATES = [f"candidate {j}: " + "the answer, worked out step by step " * 2 for j in range(8)]


def peak_rss_kib(*command: str) -> tuple[int, float]:
    started = time.monotonic()
    probe = subprocess.run([sys.executable, "-c", PROBE, *command], capture_output=True, text=True, check=True)
    return int(probe.stdout.strip().splitlines()[-1]), time.monotonic() - started


def bracket_json() -> str:
    votes = [
        {"first": 0, "verdict": 0, "reasoning": "<think>compare</think>\\boxed{Assistant 1}", "completion_tokens": 9}
    ] * 3
    match = {"a": 0, "b": 1, "winner": 0, "decided_by": "majority", "votes": votes}
    matches = [[match] * 4, [match] * 2, [match]]  # 8 candidates: 4 + 2 + 1 matches
    return json.dumps({"strategy": "knockout", "seed": 0, "judge": "scripted:j", "rounds": matches})


def write_shards(size: int, folder: Path) -> tuple[Path, list[Path]]:
    """The input and SHARDS shard outputs (record i in shard i % SHARDS, in input order)."""
    source, shards = folder / "q.jsonl", [folder / f"part.{s}.jsonl" for s in range(SHARDS)]
    body = (
        f',"candidates":{json.dumps(CANDIDATES)},"best":{json.dumps(CANDIDATES[0])},"best_index":0,'
        f'"tournament":{bracket_json()},"usage":{{"judge_requests":7,"judge_samples":21}}}}\n'
    )
    handles = [open(shard, "w") for shard in shards]
    with open(source, "w") as inputs:
        for i in range(size):
            head = f'{{"id":"q{i:07d}","query":"question {i}"'
            inputs.write(head + "}\n")
            handles[i % SHARDS].write(head + body)
    for handle in handles:
        handle.close()
    return source, shards


def merge_peak(size: int, folder: Path) -> tuple[int, float]:
    source, shards = write_shards(size, folder)
    merged = folder / "merged.jsonl"
    rss, elapsed = peak_rss_kib(
        sys.executable, "-m", "bon", "merge", *map(str, shards), "-o", str(merged), "--input", str(source)
    )
    lines = sum(1 for _ in open(merged, "rb"))
    assert lines == size, f"{lines} records merged for {size}"
    for path in (source, merged, *shards):
        path.unlink()
    return rss, elapsed


RESUME = """
import sys
from pathlib import Path
from bon.runs.checkpoint import Sidecar
path, keys = Path(sys.argv[1]), open(sys.argv[2])  # the keys are read one by one: they are not the sidecar's memory
sidecar = Sidecar(path, {"seed": 0}, resume=True)
assert all(sidecar.get(key.strip()) is not None for key in keys), "an entry was not found"
sidecar.close(remove=False)
"""


def resume_peak(size: int, folder: Path) -> tuple[int, float]:
    sidecar, keys = folder / "out.jsonl.bon-cache", folder / "keys.txt"
    entry = json.dumps([[c, "stop", 20] for c in CANDIDATES])
    with open(sidecar, "w") as handle, open(keys, "w") as names:
        handle.write(json.dumps({"bon_cache": 1, "settings": {"seed": 0}}) + "\n")
        for i in range(size):
            key = hashlib.sha256(str(i).encode()).hexdigest()
            names.write(key + "\n")
            handle.write(f'{{"key": "{key}", "completions": {entry}, "prompt_tokens": 12, "completion_tokens": 160}}\n')
    rss, elapsed = peak_rss_kib(sys.executable, "-c", RESUME, str(sidecar), str(keys))
    sidecar.unlink()
    keys.unlink()
    return rss, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 1_000_000])
    parser.add_argument("--smoke", action="store_true", help="1,000 and 5,000 records")
    args = parser.parse_args()
    sizes = [1_000, 5_000] if args.smoke else args.sizes
    os.chdir(ROOT)  # `python -m bon` from this checkout
    print(f"machine: {os.cpu_count()} cores; {SHARDS} shards of records with 8 candidates and a 7-match bracket")
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, measure in (("merge", merge_peak), ("resume", resume_peak)):
            results = []
            for size in sizes:
                rss, elapsed = measure(size, Path(tmp))
                results.append(rss)
                print(f"{name:<6} records={size:>9,}  peak_rss={rss / 1024:8.1f} MiB  time={elapsed:7.1f}s", flush=True)
            ratios[name] = results[-1] / results[0]
    print(f"merge_rss_ratio={ratios['merge']:.2f} resume_rss_ratio={ratios['resume']:.2f} (largest size / smallest)")


if __name__ == "__main__":
    main()
