"""`bon serve` as a real process over the scripted engine (tests/scripted_bon.py), driven by the
real openai client, curl and raw HTTP: the OpenAI contract, streaming, limits, auth, client
disconnects, traces, metrics, faults and the drain on SIGTERM."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from bon.cli.main import app as cli
from bon.config import HFOptions
from bon.engines import Backend
from bon.engines.scripted import ScriptedEngine, seeded_coin
from bon.plugins import register_backend
from conftest import SCRIPTED_BON, assert_clean, read_jsonl, wait_until, write_jsonl
from fault_server import free_port

KEY = "bon-serve-test-key-3c1e"
SLOW = "[slow]"


class Served:
    """One `bon serve` process; its port is read from its "serving … at URL" line."""

    def __init__(self, tmp: Path, *args: str, env: dict | None = None):
        self.stderr_path = tmp / "serve.err"
        self.stderr = open(self.stderr_path, "w")
        self.process = subprocess.Popen(
            [*SCRIPTED_BON, "serve", "--policy", "policy-model", "--judge", "judge-model", "--port", "0", *args],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            env=dict(os.environ, **(env or {})),
        )

        def started():
            assert self.process.poll() is None, self.log()
            found = re.search(r"at (http://\S+/v1)", self.log())
            return found and found.group(1)

        self.url = wait_until(started, "bon serve to say where it serves")
        self.root = self.url.removesuffix("/v1")

    def log(self) -> str:
        return self.stderr_path.read_text()

    def stop(self, sig=signal.SIGTERM, timeout=30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.stderr.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    server = Served(
        tmp,
        "--server-key-env",
        "BON_TEST_SERVER_KEY",
        "--traces",
        str(tmp / "traces.jsonl"),
        "--keep-alive",
        "0.2",
        env={
            "BON_TEST_SERVER_KEY": KEY,
            "BON_TEST_JUDGE": "coin",
            "BON_TEST_SLOW_ON": SLOW,
            "BON_TEST_SLOW_LATENCY": "0.4",
            "BON_TEST_SLOW_LOG": str(tmp / "slow.log"),
            "BON_TEST_FAIL_ON": "[reject]",
        },
    )
    server.traces = tmp / "traces.jsonl"
    server.slow_log = tmp / "slow.log"
    yield server
    assert server.stop() == 0, server.log()
    assert_clean(server.log())


def client(served, **kwargs):
    return openai.OpenAI(base_url=served.url, api_key=KEY, max_retries=0, **kwargs)


def metrics(served) -> dict:
    text = httpx.get(f"{served.root}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def ask(content: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]


def test_the_openai_client_sync_async_and_streamed(served):
    answer = client(served).chat.completions.create(
        model="bon", messages=ask("What is 17*6?"), seed=3, extra_body={"bon": {"n": 4, "votes": 3}}
    )
    record = answer.model_extra["bon"]
    assert answer.choices[0].message.content == record["best"] == record["candidates"][record["best_index"]]
    assert answer.choices[0].finish_reason == "stop" and answer.object == "chat.completion"
    assert len(record["candidates"]) == 4 and record["tournament"]["rounds"] and record["id"] == answer.id
    assert record["request"]["seed"] == 3 and record["request"]["votes"] == 3
    # usage: the policy's prompt and candidates plus every judge prompt and judgment
    policy, judge = record["sampling"], record["usage"]
    assert answer.usage.prompt_tokens == policy["prompt_tokens"] + judge["judge_prompt_tokens"]
    assert answer.usage.completion_tokens == policy["completion_tokens"] + judge["judge_completion_tokens"]

    async def go():
        async with openai.AsyncOpenAI(base_url=served.url, api_key=KEY, max_retries=0) as aclient:
            return await aclient.chat.completions.create(
                model="bon", messages=ask("What is 17*6?"), seed=3, extra_body={"bon": {"n": 4, "votes": 3}}
            )

    again = asyncio.run(go())
    assert again.choices[0].message.content == answer.choices[0].message.content  # same request, same seed
    assert again.id != answer.id

    stream = client(served).chat.completions.create(
        model="bon",
        messages=ask(f"{SLOW} Name a prime."),
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"bon": {"n": 2, "votes": 1}},
    )
    pieces = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
    finish = [c for c in pieces if c.choices and c.choices[0].finish_reason]
    assert text == finish[0].model_extra["bon"]["best"] and finish[0].choices[0].finish_reason == "stop"
    assert pieces[-1].usage.total_tokens > 0


def test_a_streamed_answer_keeps_the_connection_alive_while_it_is_selected(served):
    lines = []
    body = {"model": "bon", "messages": ask(f"{SLOW} Count to three."), "stream": True, "bon": {"n": 4}}
    with httpx.stream(
        "POST", f"{served.url}/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        lines.extend(response.iter_lines())
    kinds = ["comment" if line.startswith(":") else "data" for line in lines if line]
    data = [line for line in lines if line.startswith("data: ")]
    # The role chunk opens the stream; then, over 3 slow steps of 0.4 s (sampling, two rounds)
    # with keep-alives every 0.2 s, several comment lines while the answer is selected; then
    # the winner's content, and no comment after it.
    assert kinds[0] == "data" and kinds[1:].index("data") >= 3
    assert "comment" not in kinds[1 + kinds[1:].index("data") :]
    assert data[-1] == "data: [DONE]"
    assert json.loads(data[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_curl_and_the_completions_and_models_routes(served):
    def curl(*args):
        result = subprocess.run(
            ["curl", "-s", "-H", f"Authorization: Bearer {KEY}", *args], capture_output=True, text=True, check=True
        )
        return json.loads(result.stdout)

    chat = curl(
        f"{served.url}/chat/completions",
        "-H",
        "content-type: application/json",
        "-d",
        json.dumps({"model": "bon", "messages": [{"role": "user", "content": "What is 17*6?"}]}),
    )
    assert chat["choices"][0]["message"]["content"] == chat["bon"]["best"]
    text = curl(
        f"{served.url}/completions",
        "-H",
        "content-type: application/json",
        "-d",
        json.dumps({"model": "bon", "prompt": "Once upon a time", "bon": {"trace": False, "n": 3}}),
    )
    assert text["object"] == "text_completion" and text["choices"][0]["text"].startswith("answer ")
    assert "bon" not in text
    models = curl(f"{served.url}/models")
    assert [m["id"] for m in models["data"]] == ["bon"]


def test_64_concurrent_clients_each_get_what_bon_run_picks(served, tmp_path):
    questions = [(f"Question {i}: what is {i} squared?", i % 5, 2 + i % 7) for i in range(64)]

    async def one(aclient, question, seed, n):
        answer = await aclient.chat.completions.create(
            model="bon", messages=ask(question), extra_body={"bon": {"n": n, "seed": seed, "votes": 3}}
        )
        return answer.choices[0].message.content

    async def go():
        async with openai.AsyncOpenAI(base_url=served.url, api_key=KEY, max_retries=0, timeout=60) as aclient:
            return await asyncio.gather(*(one(aclient, *q) for q in questions))

    served_answers = asyncio.run(go())
    assert len(set(served_answers)) == 64

    # The same judge in this process: a coin seeded by each request's seed.
    async def load(config):
        return ScriptedEngine(seeded_coin, keep_requests=False)

    register_backend(Backend("scripted-coin", HFOptions, load, local=True))
    runner = CliRunner()
    for (question, seed, n), got in zip(questions, served_answers):
        source = write_jsonl(tmp_path / "one.jsonl", [{"messages": ask(question)}])
        result = runner.invoke(
            cli,
            ["run", str(source), "--policy", "policy-model", "--judge", "judge-model", "--backend", "scripted-coin"]
            + ["-n", str(n), "--seed", str(seed), "--votes", "3", "-q"],
        )
        assert result.exit_code == 0, result.output
        (record,) = read_jsonl(result.stdout)
        assert got == record["best"], question


def test_a_client_that_disconnects_cancels_its_work(served):
    before = metrics(served).get(("bon_requests_total", (("endpoint", "/v1/chat/completions"), ("status", "499"))), 0)
    sent_before = len(served.slow_log.read_text().splitlines()) if served.slow_log.exists() else 0
    body = {"model": "bon", "messages": ask(f"{SLOW} A long one."), "bon": {"n": 8, "votes": 3}}
    with pytest.raises(httpx.ReadTimeout):  # leaves during the first round of matches
        httpx.post(f"{served.url}/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=0.6)
    time.sleep(0.3)
    sent = len(served.slow_log.read_text().splitlines()) - sent_before
    time.sleep(1.5)  # three more rounds' worth of time
    assert len(served.slow_log.read_text().splitlines()) - sent_before == sent
    assert 1 <= sent <= 9  # sampling, then the first round's 4 matches × 2 orders; a whole answer takes 15
    wait_until(
        lambda: (
            metrics(served).get(("bon_requests_total", (("endpoint", "/v1/chat/completions"), ("status", "499"))))
            == before + 1
        ),
        "the disconnect to be counted",
    )


def test_a_request_without_the_key_gets_401(served):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.url, api_key="wrong", max_retries=0).chat.completions.create(
            model="bon", messages=ask("hi")
        )
    assert httpx.post(f"{served.url}/chat/completions", json={}).status_code == 401
    assert httpx.get(f"{served.url}/models").status_code == 401
    health = httpx.get(f"{served.root}/health")  # probes need no key
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert KEY not in served.log() and KEY not in health.text and KEY not in httpx.get(f"{served.root}/metrics").text


def test_bad_requests_get_400_naming_the_problem(served):
    c = client(served)
    cases = [
        ({"model": "bon", "messages": [{"role": "assistant", "content": "hi"}]}, "end with a user turn"),
        ({"model": "bon", "messages": ask("hi"), "bon": {"n": 1000}}, "bon.n"),
        ({"model": "bon", "messages": ask("hi"), "bon": {"strategy": "chess"}}, "chess"),
        ({"model": "bon", "messages": ask("hi"), "bon": {"colour": "red"}}, "colour"),
        ({"model": "bon", "messages": ask("hi"), "n": 2}, "one choice"),
        ({"model": "bon", "messages": ask("[reject] this one")}, "scripted: rejected a request"),  # the engine's reason
    ]
    for body, words in cases:
        extension = body.pop("bon", None)
        with pytest.raises(openai.BadRequestError) as caught:
            c.chat.completions.create(**body, extra_body={"bon": extension} if extension else None)
        assert words in caught.value.body["message"], caught.value.body
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-4", messages=ask("hi"))


def test_bon_show_reads_the_traces_while_the_server_runs(served):
    answer = client(served).chat.completions.create(model="bon", messages=ask("Trace me."))
    result = subprocess.run(
        [sys.executable, "-m", "bon", "show", str(served.traces), "--id", answer.id, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["id"] == answer.id and shown["best"] == answer.choices[0].message.content
    traces = read_jsonl(served.traces.read_text())
    assert traces[-1]["id"] == answer.id and all(t["id"].startswith(("chatcmpl-", "cmpl-")) for t in traces)
    assert served.process.poll() is None


def test_metrics_parse_with_prometheus_client(served):
    client(served).chat.completions.create(model="bon", messages=ask("Count me."), extra_body={"bon": {"n": 3}})
    found = metrics(served)
    assert found[("bon_requests_total", (("endpoint", "/v1/chat/completions"), ("status", "200")))] >= 1
    assert found[("bon_candidates_total", ())] >= 3 and found[("bon_judge_samples_total", ())] >= 6
    assert found[("bon_matches_total", (("decided_by", "majority"),))] >= 2
    assert found[("bon_time_to_answer_seconds_count", ())] >= 1
    assert ("bon_requests_in_flight", ()) in found and ("bon_requests_waiting", ()) in found
    assert found[("bon_tokens_total", (("kind", "completion"), ("role", "judge")))] > 0
    assert ("bon_completion_tokens_per_second", (("role", "policy"),)) in found


def _post(url: str, body: dict, out: list, timeout: float = 60) -> None:
    try:
        out.append(httpx.post(f"{url}/chat/completions", json=body, timeout=timeout))
    except httpx.HTTPError as exc:
        out.append(exc)


def test_429_when_full_then_sigterm_drains_the_requests_in_flight(tmp_path):
    server = Served(tmp_path, "--max-concurrency", "1", "--max-queue", "1", env={"BON_TEST_LATENCY": "0.4"})
    try:
        body = {"model": "bon", "messages": ask("Wait for it."), "bon": {"n": 2, "votes": 1}}
        answers: list = []
        threads = [threading.Thread(target=_post, args=(server.url, body, answers)) for _ in range(2)]
        for thread in threads:
            thread.start()
            time.sleep(0.1)
        wait_until(
            lambda: httpx.get(f"{server.root}/health").json()["requests_waiting"] == 1, "one in flight, one waiting"
        )
        full = httpx.post(f"{server.url}/chat/completions", json=body)
        assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1
        assert full.json()["error"]["type"] == "rate_limit_error"
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(base_url=server.url, api_key="none", max_retries=0).chat.completions.create(
                model="bon", messages=ask("Wait for it.")
            )

        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "stopping (SIGTERM)" in server.log(), "the drain to start")
        late = httpx.post(f"{server.url}/chat/completions", json=body)
        assert late.status_code == 503 and "shutting down" in late.json()["error"]["message"]
        assert httpx.get(f"{server.root}/health").json()["status"] == "draining"
        for thread in threads:
            thread.join(timeout=30)
        assert [a.status_code for a in answers] == [200, 200]  # both finished, the waiting one too
        assert server.process.wait(timeout=30) == 0
    finally:
        server.stop()
    assert_clean(server.log())


def test_the_drain_timeout_cancels_what_is_still_running(tmp_path):
    server = Served(tmp_path, "--drain-timeout", "0.5", env={"BON_TEST_LATENCY": "2"})
    try:
        answers: list = []
        body = {"model": "bon", "messages": ask("Too slow."), "bon": {"n": 4}}
        thread = threading.Thread(target=_post, args=(server.url, body, answers))
        thread.start()
        wait_until(lambda: httpx.get(f"{server.root}/health").json()["requests_in_flight"] == 1, "a request in flight")
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0  # a hang guard; the log below says it cancelled
        thread.join(timeout=30)
        assert answers[0].status_code == 503 and "cancelled" in answers[0].json()["error"]["message"]
    finally:
        server.stop()
    assert_clean(server.log())
    assert "cancelled 1 requests still running" in server.log()


def test_an_upstream_given_up_on_gets_503_and_health_names_it(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    server = Served(
        tmp_path,
        "--policy-backend",
        "scripted",
        "--judge-backend",
        "openai",
        "--judge-base-url",
        dead,
        "--give-up-after",
        "1",
    )
    try:
        body = {"model": "bon", "messages": ask("Judge this."), "bon": {"n": 2}}
        failed = httpx.post(f"{server.url}/chat/completions", json=body, timeout=60)
        assert failed.status_code == 503, failed.text
        assert "gave up" in failed.json()["error"]["message"]
        health = httpx.get(f"{server.root}/health")
        assert health.status_code == 503
        assert health.json()["upstreams"]["judge"]["ok"] is False and health.json()["upstreams"]["policy"]["ok"]
        assert any(dead in line for line in health.json()["down"])
        # One candidate needs no judge: the server keeps serving what does not need the failed upstream.
        alone = httpx.post(f"{server.url}/chat/completions", json=body | {"bon": {"n": 1}}, timeout=60)
        assert alone.status_code == 200 and alone.json()["bon"]["best_index"] == 0
    finally:
        assert server.stop() == 0
    assert_clean(server.log())


def test_without_the_serve_extra_it_says_what_to_install(tmp_path):
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'uvicorn'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    result = subprocess.run(
        [*SCRIPTED_BON, "serve", "--policy", "p", "--judge", "j"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(blocker)),
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        'bon: error: bon serve needs fastapi, uvicorn: pip install "bon[serve]"'
    ]


def test_serve_help_groups_its_options_in_panels():
    result = CliRunner().invoke(cli, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for panel in ("Models", "Tournament", "Decoding", "Servers", "Server"):
        assert f"─ {panel} ─" in result.output
    for option in ("--max-concurrency", "--max-queue", "--server-key-env", "--traces", "--drain-timeout", "--limit-n"):
        assert option in result.output
    assert "--keep-alive" not in result.output


def test_serve_help_at_80_columns_prints_every_option_whole_with_its_default(monkeypatch):
    import click
    import typer
    from typer import rich_utils

    monkeypatch.setattr(rich_utils, "MAX_WIDTH", None)
    result = CliRunner().invoke(cli, ["serve", "--help"], env={"COLUMNS": "80"})
    lines = result.stdout.splitlines()
    assert result.exit_code == 0 and max(len(line) for line in lines) <= 80
    for param in typer.main.get_command(cli).commands["serve"].params:
        if getattr(param, "hidden", False):
            continue
        for name in param.opts + param.secondary_opts:
            if name.startswith("--"):
                assert any(name in line.split() for line in lines), f"{name} not printed whole"
        if isinstance(param, click.Option) and not param.is_flag and not param.required:
            assert param.show_default not in (False, None), f"{param.name} shows no default"


def test_over_a_real_vllm_serve_as_upstream(vllm_server, tmp_path):
    """SmolLM2 behind `vllm serve` as both policy and judge: the answer is one of its real candidates."""
    vllm_server.ensure_up()
    server = Served(
        tmp_path,
        "--policy",
        "smol",
        "--judge",
        "smol",
        "--backend",
        "openai",
        "--base-url",
        vllm_server.url,
        "--no-request-seed",
        "-n",
        "2",
        "--votes",
        "1",
        "--policy-max-tokens",
        "16",
        "--judge-max-tokens",
        "16",
    )
    try:
        answer = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=600).chat.completions.create(
            model="bon", messages=[{"role": "user", "content": "Name a fruit."}]
        )
        record = answer.model_extra["bon"]
        assert len(record["candidates"]) == 2 and answer.choices[0].message.content in record["candidates"]
        assert record["tournament"]["judge"] == "openai:smol" and record["sampling"]["policy"] == "openai:smol"
        assert answer.usage.completion_tokens >= record["sampling"]["completion_tokens"] > 0
        health = httpx.get(f"{server.root}/health").json()
        assert health["status"] == "ok" and health["upstreams"]["judge"]["base_urls"] == [vllm_server.url]
    finally:
        assert server.stop() == 0
    assert_clean(server.log())


def test_the_app_mounts_in_an_existing_fastapi_app(scripted, tmp_path):
    """The library entry point: bon.serve.create_app, mounted under a path of another app
    (whose lifespan does not start it: it starts on its first request)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    import bon
    from bon.serve import create_app

    app = create_app(
        policy=bon.Policy("p", backend="scripted"),
        judge=bon.Judge("j", backend="scripted"),
        n=3,
        votes=1,
        traces=tmp_path / "traces.jsonl",
    )
    parent = FastAPI()
    parent.mount("/best-of-n", app)
    with TestClient(parent) as http:
        answer = http.post("/best-of-n/v1/chat/completions", json={"model": "bon", "messages": ask("Mounted?")})
        assert http.get("/best-of-n/health").json()["status"] == "ok"
    assert answer.status_code == 200, answer.text
    record = answer.json()["bon"]
    assert answer.json()["choices"][0]["message"]["content"] == record["best"] and len(record["candidates"]) == 3
    assert len(scripted.requests) == 1 + 2 * 1  # one policy request; a bracket of 3 plays 2 matches of 1 vote
    assert read_jsonl((tmp_path / "traces.jsonl").read_text())[0]["id"] == answer.json()["id"]
