"""`bon serve` under load, on the scripted engine with a fixed latency per engine request.

A real `bon serve` process (this script re-run as a child, with a `bench` backend
registered: bon's ScriptedEngine sleeping LATENCY seconds per request) answers chat
requests from 1, 16 and 64 concurrent clients (each on its own connection, sending its next
request as soon as its last is answered). Reported per level: time to answer (p50, p95,
p99), requests/s, and the server process's own CPU time per request (user + system, read
from /proc). Then `bon.run` over the same records with the same engine and concurrency (in
one process, no HTTP) gives the batch throughput the server is compared with
(served ÷ batch; the goal is ≥ 0.9 at 64 clients). The clients run on the same machine
and take CPU from it too (a minimal HTTP/1.1 client on asyncio streams keeps that small),
so where CPU is short the wall-clock ratio understates the server; the ratio of CPU per
record (batch ÷ server) is printed as well, with the load average.

    python benchmarks/serve_bench.py                 # n=8, votes=3, 50 ms per engine request
    python benchmarks/serve_bench.py --smoke         # a few seconds: 1/4/8 clients, 10 ms
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bon.config import HFOptions  # noqa: E402
from bon.engines import Backend  # noqa: E402
from bon.engines.scripted import ScriptedEngine  # noqa: E402
from bon.plugins import register_backend  # noqa: E402

SMOKE_NEEDS = ()  # the scripted engine only (tests/test_benchmarks.py)
FIGURES = (
    r"^ +\d+ +\d+ +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+$",  # a load level's row
    r"^served ÷ batch throughput at \d+ clients: [\d.]+",
    r"^batch CPU per record ÷ server CPU per request",
)


def register(latency: float) -> None:
    async def load(config):
        return ScriptedEngine(latency=lambda request: latency, keep_requests=False)

    register_backend(Backend("bench", HFOptions, load, local=True))


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Question {i}: what is {i} times {i + 7}?"}]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def load(url: str, clients: int, requests: int, n: int, votes: int, offset: int) -> tuple[list[float], float]:
    """`clients` connections, each sending its next request as soon as its last is answered:
    (time to answer of each request, wall time). A minimal HTTP/1.1 client on asyncio streams,
    as load generators such as wrk are: a full client library (httpx) would spend more CPU per
    request than the server does, on the same cores."""
    parts = urlsplit(url)
    latencies: list[float] = []
    numbers = iter(range(offset, offset + requests))

    async def client() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            for i in numbers:
                body = json.dumps({"model": "bon", "messages": messages(i), "bon": {"n": n, "votes": votes}}).encode()
                head = (
                    f"POST {parts.path}/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                )
                started = time.perf_counter()
                writer.write(head.encode() + body)
                status = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                answer = await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                assert status.split()[1] == b"200", answer
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, time.perf_counter() - started


def batch(records: int, n: int, votes: int, concurrency: int) -> tuple[float, float]:
    """`bon.run` over the same records, same engine: (records/s, CPU seconds per record)."""
    import bon

    rows = [{"id": i, "messages": messages(i)} for i in range(records)]
    policy, judge = bon.Policy("p", backend="bench"), bon.Judge("j", backend="bench")
    started, cpu = time.perf_counter(), time.process_time()
    count = sum(1 for _ in bon.run(rows, policy=policy, judge=judge, n=n, votes=votes, concurrency=concurrency))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    policy.close()
    judge.close()
    assert count == records
    return records / wall, cpu / records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds: small loads, 10 ms latency")
    parser.add_argument("--latency", type=float, default=None, help="seconds per engine request (default 0.05)")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--votes", type=int, default=3)
    args = parser.parse_args()
    latency = args.latency if args.latency is not None else (0.01 if args.smoke else 0.05)
    levels = [(1, 8), (4, 32), (8, 64)] if args.smoke else [(1, 50), (16, 320), (64, 640)]
    top = max(c for c, _ in levels)

    with tempfile.TemporaryDirectory() as tmp:
        err = open(Path(tmp) / "serve.err", "w+")
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", str(latency), "serve", "--policy", "p", "--judge", "j"]
            + ["--backend", "bench", "--port", "0", "--max-concurrency", str(top)],
            stderr=err,
            stdout=subprocess.DEVNULL,
        )
        try:
            url = None
            for _ in range(300):
                text = (Path(tmp) / "serve.err").read_text()
                if found := re.search(r"at (http://\S+/v1)", text):
                    url = found.group(1)
                    break
                assert child.poll() is None, text
                time.sleep(0.1)
            assert url, "bon serve did not start"
            asyncio.run(load(url, 4, 8, args.n, args.votes, offset=10**6))  # warm up
            print(
                f"bon serve on the scripted engine: n={args.n}, votes={args.votes}, "
                f"{latency * 1000:g} ms per engine request"
            )
            head = ("clients", "requests", "p50 s", "p95 s", "p99 s", "req/s")
            print(" ".join(f"{h:>8}" for h in head) + f" {'server CPU ms/req':>18}")
            offset, served, server_cpu = 0, {}, {}
            for clients, requests in levels:
                cpu = cpu_seconds(child.pid)
                latencies, wall = asyncio.run(load(url, clients, requests, args.n, args.votes, offset))
                cpu = cpu_seconds(child.pid) - cpu
                offset += requests
                served[clients], server_cpu[clients] = requests / wall, cpu / requests
                print(
                    f"{clients:>8} {requests:>8} {statistics.median(latencies):>8.3f} "
                    f"{percentile(latencies, 0.95):>8.3f} {percentile(latencies, 0.99):>8.3f} "
                    f"{served[clients]:>8.1f} {cpu / requests * 1000:>18.2f}"
                )
        finally:
            child.terminate()
            child.wait(timeout=60)
            err.close()

    register(latency)
    records = dict(levels)[top]
    rate, cpu_per_record = batch(records, args.n, args.votes, top)
    print(
        f"bon.run, same {records} records and engine, concurrency {top}: {rate:.1f} records/s, "
        f"{cpu_per_record * 1000:.2f} ms CPU per record"
    )
    print(f"served ÷ batch throughput at {top} clients: {served[top] / rate:.2f} (goal ≥ 0.9)")
    # Where CPU is what limits both (the clients here share it), the server's ceiling relative to
    # the batch run's is the ratio of their CPU per record.
    print(f"batch CPU per record ÷ server CPU per request at {top} clients: {cpu_per_record / server_cpu[top]:.2f}")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def child(latency: float, argv: list[str]) -> None:
    """The server: bon's CLI with the `bench` backend registered."""
    register(latency)
    from bon.cli.main import app

    sys.argv = ["bon", *argv]
    app()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(float(sys.argv[2]), sys.argv[3:])
    else:
        main()
