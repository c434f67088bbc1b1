"""`make bench`: every measurement in one go, each printing its own figures and ratios.

On a CPU machine the real-engine workload is scaled down (8 queries × 4 candidates, judge
max tokens 32) so it finishes in minutes; on a GPU box it runs the full one (32 × 8, 128).
Memory is measured at 10k and 100k records here; `python benchmarks/memory.py 10000 1000000`
gives the 1M figure in the README (about 15 minutes on 2 cores).

Every benchmark also has a `--smoke` mode (seconds; a minute for the real engine) that
tests/test_benchmarks.py runs in CI, so an API change that breaks one fails the suite.
"""

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bon.engines import gpu_visible  # noqa: E402


def run(*args: str, env: dict | None = None) -> None:
    print(f"\n$ {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, *args], check=True, env=dict(os.environ, **(env or {})))


def main() -> None:
    run(str(HERE / "simulate.py"))
    run(str(HERE / "answer_aware.py"))
    run(str(HERE / "memory.py"), "10000", "100000")
    run(str(HERE / "api_overhead.py"))
    run(str(HERE / "serve_bench.py"))
    run(str(HERE / "browse_bench.py"))
    if gpu_visible():
        run(str(HERE / "engine_bench.py"))
    else:
        run(
            str(HERE / "engine_bench.py"),
            "--queries",
            "8",
            "--n",
            "4",
            "--max-tokens",
            "32",
            env={"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4")},
        )


if __name__ == "__main__":
    main()
