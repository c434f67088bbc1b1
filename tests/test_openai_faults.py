"""The openai backend's failure handling, against a small fault-injecting server on loopback."""

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bon.config import EngineConfig
from bon.engines.base import EngineError, GenerationRequest
from bon.engines.openai import OpenAIEngine

VERDICT = "<think>ok</think>\\boxed{Assistant 1}"


class FaultyServer:
    """Answers chat completions; `script` lists the status to give each request (200 = answer)."""

    def __init__(self, script=(), refuse_n=False, poison=None, poison_status=422):
        self.script = list(script)
        self.refuse_n = refuse_n
        self.poison = poison  # a text whose requests are rejected (this record's problem only)
        self.poison_status = poison_status
        self.bodies = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.bodies.append({"body": body, "auth": self.headers.get("Authorization")})
                status = owner.script.pop(0) if owner.script else 200
                if status == "drop":  # the connection dies without an answer
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if status == "slow":  # answers only after the client has given up
                    time.sleep(2.5)
                    status = 200
                if status == 200 and owner.refuse_n and body.get("n", 1) > 1:
                    status = 400
                if owner.poison and owner.poison in json.dumps(body["messages"]):
                    status = owner.poison_status
                if status != 200:
                    message = {400: "n>1 is not supported", 422: "prompt is too long"}.get(status, "busy")
                    if owner.poison and owner.poison in json.dumps(body["messages"]):
                        message = "This model's maximum context length is 2048 tokens"
                    payload = {"error": {"message": message, "code": status}}
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(data)
                    return
                n = body.get("n", 1)
                data = json.dumps({
                    "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": i, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": VERDICT}} for i in range(n)],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 4 * n, "total_tokens": 10 + 4 * n},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server_factory():
    servers = []

    def make(**kwargs):
        servers.append(FaultyServer(**kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def ask(server, n=3, retries=3, seed=7, timeout=5.0):
    engine = OpenAIEngine(EngineConfig("openai", "judge", base_url=server.url, max_retries=retries, request_timeout=timeout))

    async def go():
        try:
            return await engine.generate(GenerationRequest([{"role": "user", "content": "q"}], n, 0.6, 1.0, 16, seed))
        finally:
            await engine.close()

    return asyncio.run(go())


def test_retries_through_500_and_429(server_factory):
    server = server_factory(script=[500, 429, 503])
    generation = ask(server)
    assert len(generation.completions) == 3 and len(server.bodies) == 4
    assert generation.completions[0].text == VERDICT


def test_retries_through_timeouts_and_dropped_connections(server_factory):
    server = server_factory(script=["slow", "drop", 500])
    generation = ask(server, timeout=1.0)
    assert len(generation.completions) == 3 and len(server.bodies) == 4


def test_a_server_that_keeps_timing_out_ends_with_one_line(server_factory):
    server = server_factory(script=["slow"] * 5)
    with pytest.raises(EngineError, match="timed out"):
        ask(server, retries=1, timeout=1.0)


def test_gives_up_after_the_retry_budget_with_one_line(server_factory):
    server = server_factory(script=[500] * 10)
    with pytest.raises(EngineError, match="answered 500"):
        ask(server, retries=2)
    assert len(server.bodies) == 3


def test_falls_back_to_separate_requests_when_n_is_refused(server_factory):
    server = server_factory(refuse_n=True)
    generation = ask(server, n=3, seed=100)
    assert len(generation.completions) == 3
    singles = [b["body"] for b in server.bodies[1:]]
    assert all(b["n"] == 1 for b in singles)
    assert sorted(b["seed"] for b in singles) == [100, 101, 102]  # distinct per-sample seeds
    assert all(c.completion_tokens == 4 for c in generation.completions)  # exact per sample when n=1


def test_api_key_is_sent_only_as_the_header(server_factory, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-very-secret")
    server = server_factory(script=[401])
    engine = OpenAIEngine(EngineConfig("openai", "judge", base_url=server.url, api_key_env="MY_KEY", max_retries=0))

    async def go():
        try:
            await engine.generate(GenerationRequest([{"role": "user", "content": "q"}], 1, 0.6, 1.0, 16, 1))
        finally:
            await engine.close()

    with pytest.raises(EngineError) as info:
        asyncio.run(go())
    assert server.bodies[0]["auth"] == "Bearer sk-very-secret"
    assert "sk-very-secret" not in str(info.value)


@pytest.mark.parametrize("status, votes", [(422, 3), (400, 3), (400, 1)])
def test_a_request_the_server_rejects_fails_its_record_only(server_factory, tmp_path, status, votes):
    from typer.testing import CliRunner

    from bon.cli import app

    server = server_factory(poison="POISON", poison_status=status)
    rows = [{"id": i, "query": "POISON" if i == 1 else f"q{i}", "candidates": ["a", "bb", "ccc"]} for i in range(3)]
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["select", str(src), "--base-url", server.url, "--judge", "m",
                                      "--max-retries", "0", "--votes", str(votes), "--concurrency", "1"])
    assert result.exit_code == 3, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [("error" in r) for r in records] == [False, True, False]
    assert "rejected the request" in records[1]["error"] and "best" in records[0]
    # A rejection that is not about `n` leaves n>1 requests in use for the records after it.
    after = [b["body"]["n"] for b in server.bodies if "q2" in json.dumps(b["body"])]
    assert max(after) == (votes + 1) // 2


def test_a_fleet_carries_on_when_one_endpoint_fails(server_factory):
    good, bad = server_factory(), server_factory(script=[500] * 1000)
    engine = OpenAIEngine(EngineConfig("openai", "judge", base_url=bad.url, base_urls=(bad.url, good.url),
                                       max_retries=0, request_timeout=5))

    def wave(start, count):
        return [engine.generate(GenerationRequest([{"role": "user", "content": f"q{i}"}], 2, 0.6, 1.0, 16, i))
                for i in range(start, start + count)]

    async def go():
        try:
            first = await asyncio.gather(*wave(0, 30))  # all sent at once: some land on the bad one
            failed_there = len(bad.bodies)
            second = await asyncio.gather(*wave(30, 10))  # the bad one is resting now
            return first + second, failed_there
        finally:
            await engine.close()

    generations, failed_there = asyncio.run(go())
    assert all(len(g.completions) == 2 for g in generations)  # every request answered
    assert len(good.bodies) == 40 and failed_there >= 2
    assert len(bad.bodies) == failed_there  # rested after failing twice in a row: no new requests


def test_requests_go_to_the_least_loaded_endpoint(server_factory):
    first, second = server_factory(), server_factory()
    engine = OpenAIEngine(EngineConfig("openai", "judge", base_url=first.url, base_urls=(first.url, second.url)))

    async def go():
        try:
            await asyncio.gather(*(
                engine.generate(GenerationRequest([{"role": "user", "content": f"q{i}"}], 1, 0.6, 1.0, 16, i))
                for i in range(20)
            ))
        finally:
            await engine.close()

    asyncio.run(go())
    assert len(first.bodies) + len(second.bodies) == 20
    assert abs(len(first.bodies) - len(second.bodies)) <= 4  # shared, not all on one


def test_cli_takes_several_base_urls(server_factory, tmp_path):
    from typer.testing import CliRunner

    from bon.cli import app

    good = server_factory()
    src = tmp_path / "q.jsonl"
    src.write_text(json.dumps({"query": "q", "candidates": ["a", "bb"]}) + "\n")
    dead = "http://127.0.0.1:9/v1"
    result = CliRunner().invoke(app, ["select", str(src), "--judge", "m", "--base-url", dead, "--base-url", good.url,
                                      "--max-retries", "0", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["best_index"] in (0, 1) and good.bodies
