"""The openai backend rides out what servers do, against a fault-injecting server on loopback."""

import asyncio
import json

import pytest

from bon.config import EngineConfig, ServerOptions
from bon.engines.base import EngineError, GenerationRequest, RecordError, ServerGaveUp
from bon.engines.openai import OpenAIEngine
from fault_server import PARTIAL, VERDICT, FaultyServer, free_port


@pytest.fixture
def server_factory():
    servers = []

    def make(**kwargs):
        servers.append(FaultyServer(**kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def engine_for(*urls, **options):
    options = {"request_timeout": 10.0, "stall_timeout": 5.0, "give_up_after": 20.0} | options
    return OpenAIEngine(EngineConfig("openai", "judge", options=ServerOptions(base_url=urls, **options)))


def request(i=0, n=3, seed=7, max_tokens=64, **extra):
    return GenerationRequest([{"role": "user", "content": f"q{i}"}], n, 0.6, 1.0, max_tokens, seed, **extra)


def run(engine, *requests):
    async def go():
        try:
            return await asyncio.gather(*(engine.generate(r) for r in requests))
        finally:
            await engine.close()

    return asyncio.run(go())


def ask(server, n=3, **options):
    return run(engine_for(server.url, **options), request(n=n))[0]


def test_streamed_choices_come_back_whole_with_the_thinking_rejoined(server_factory):
    server = server_factory(reasoning="Both answers are short.", answer="\\boxed{Assistant 2}")
    engine = engine_for(server.url)
    streamed = []
    engine.on_tokens = streamed.append
    generation = run(engine, request(n=3))[0]
    texts = [c.text for c in generation.completions]
    assert texts == ["Both answers are short.\n</think>\n\n\\boxed{Assistant 2}"] * 3
    assert server.bodies[0]["body"]["stream"] is True
    assert generation.prompt_tokens == 10 and generation.completion_tokens == sum(streamed) > 0
    assert [c.completion_tokens for c in generation.completions] == [None] * 3  # per request, not per choice
    single = run(engine_for(server.url), request(n=1, max_tokens=3))[0].completions[0]
    assert single.finish_reason == "length" and single.completion_tokens == 3


def test_retries_through_429_5xx_and_dropped_connections(server_factory):
    server = server_factory(script=[500, 429, "drop", 503])
    generation = ask(server)
    assert [c.text for c in generation.completions] == [VERDICT] * 3 and len(server.bodies) == 5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_server_failing_30_percent_of_requests_answers_every_one(server_factory, seed):
    server = server_factory(failure_rate=0.3, seed=seed)
    engine = engine_for(server.url)
    generations = run(engine, *(request(i, n=2) for i in range(40)))
    assert all([c.text for c in g.completions] == [VERDICT] * 2 for g in generations)
    answered = {json.dumps(b["body"]["messages"]) for b in server.bodies}
    assert len(answered) == 40 and len(server.bodies) > 40  # some were refused and asked again
    assert engine.fleet.retries == len(server.bodies) - 40


def test_a_stalled_stream_is_abandoned_and_its_partial_output_dropped(server_factory):
    server = server_factory(script=["stall"])
    generation = ask(server, stall_timeout=1.0)
    assert [c.text for c in generation.completions] == [VERDICT] * 3
    assert all(PARTIAL not in c.text for c in generation.completions)
    assert len(server.bodies) == 2


def test_a_request_waiting_behind_others_on_a_live_endpoint_is_not_stalled(server_factory):
    # The first request stalls; the others answer, so the endpoint is alive: only the silent
    # request is abandoned, once its own silence passes the limit.
    server = server_factory(script=["stall"])
    generations = run(engine_for(server.url, stall_timeout=1.0), *(request(i) for i in range(5)))
    assert len(generations) == 5 and len(server.bodies) == 6


def test_retry_after_is_honoured(server_factory):
    server = server_factory(script=[429], retry_after="1.5")
    ask(server)
    assert len(server.arrivals) == 2
    assert server.arrivals[1] - server.arrivals[0] >= 1.5  # not sooner than the server asked


def test_a_server_that_sends_nothing_is_retried_after_the_request_timeout(server_factory):
    server = server_factory(script=["slow"])
    generation = ask(server, request_timeout=1.0)
    assert len(generation.completions) == 3 and len(server.bodies) == 2


def test_a_request_still_answering_at_the_request_timeout_is_that_records_error(server_factory):
    server = server_factory(script=["trickle"])
    with pytest.raises(RecordError, match="did not finish a request within the request timeout"):
        ask(server, request_timeout=1.0)
    assert len(server.bodies) == 1  # not asked again: it would run out of time again


def test_a_permanent_outage_ends_with_one_line_naming_the_failure(server_factory):
    server = server_factory()
    engine = engine_for(server.url, give_up_after=2.0)

    async def go():
        try:
            await engine.generate(request(0))  # a success: the give-up clock counts from here
            server.script = [503] * 10_000
            await engine.generate(request(1))
        finally:
            await engine.close()

    with pytest.raises(ServerGaveUp) as info:
        asyncio.run(go())
    message = str(info.value)
    assert "gave up after 2 s without an answer since its last answer" in message
    assert "answered 503" in message and "\n" not in message
    assert len(server.bodies) > 2  # it kept trying while the outage lasted


def test_an_idle_spell_longer_than_give_up_after_is_no_outage(server_factory):
    # A judge server left idle through a long policy phase still gets its retries.
    server = server_factory()
    engine = engine_for(server.url, give_up_after=1.0)

    async def go():
        try:
            await engine.generate(request(0))
            await asyncio.sleep(1.5)
            server.script = [503, 503]
            return await engine.generate(request(1))
        finally:
            await engine.close()

    assert len(asyncio.run(go()).completions) == 3 and len(server.bodies) == 4


def test_a_server_unreachable_from_the_start_fails_fast():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ServerGaveUp, match="from the start.*cannot be reached"):
        run(engine_for(url, give_up_after=3.0), request())


def test_falls_back_to_separate_requests_when_n_is_refused(server_factory):
    server = server_factory(refuse_n=True)
    generation = ask(server, n=3)
    assert len(generation.completions) == 3
    singles = [b["body"] for b in server.bodies[1:]]
    assert all(b["n"] == 1 for b in singles)
    assert sorted(b["seed"] for b in singles) == [7, 8, 9]  # distinct per-sample seeds
    assert all(c.completion_tokens == -(-len(VERDICT) // 4) for c in generation.completions)  # exact when n=1


def test_priority_is_sent_only_when_set(server_factory):
    server = server_factory()
    run(engine_for(server.url), request(0, priority=0), request(1, priority=-5))
    sent = {b["body"]["messages"][0]["content"]: b["body"].get("priority") for b in server.bodies}
    assert sent == {"q0": None, "q1": -5}


def test_a_server_that_refuses_priority_gets_none_from_then_on(server_factory):
    server = server_factory(refuse_priority=True)
    generations = run(engine_for(server.url), request(0, priority=3), request(1, priority=4))
    assert all(len(g.completions) == 3 for g in generations)
    answered = [b["body"] for b in server.bodies if "priority" not in b["body"]]
    assert len(answered) == 2 and len(server.bodies) <= 4


def test_api_key_is_sent_only_as_the_header(server_factory, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-very-secret")
    server = server_factory(script=[401])
    with pytest.raises(EngineError) as info:
        ask(server, api_key_env="MY_KEY")
    assert not isinstance(info.value, RecordError)
    assert server.bodies[0]["auth"] == "Bearer sk-very-secret"
    assert "sk-very-secret" not in str(info.value)


def test_a_request_the_server_rejects_is_that_records_error(server_factory):
    server = server_factory(poison="POISON", poison_status=422)
    with pytest.raises(RecordError, match="rejected the request"):
        run(engine_for(server.url), GenerationRequest([{"role": "user", "content": "POISON"}], 1, 0.6, 1.0, 16))
    assert len(server.bodies) == 1  # a rejection is not retried


@pytest.mark.parametrize("status, votes", [(422, 3), (400, 3), (400, 1)])
def test_a_request_the_server_rejects_fails_its_record_only(server_factory, tmp_path, status, votes):
    from typer.testing import CliRunner

    from bon.cli.main import app

    server = server_factory(poison="POISON", poison_status=status)
    rows = [{"id": i, "query": "POISON" if i == 1 else f"q{i}", "candidates": ["a", "bb", "ccc"]} for i in range(3)]
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(
        app, ["select", str(src), "--base-url", server.url, "--judge", "m", "--votes", str(votes), "--concurrency", "1"]
    )
    assert result.exit_code == 3, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [("error" in r) for r in records] == [False, True, False]
    assert "rejected the request" in records[1]["error"] and "best" in records[0]
    # A rejection that is not about `n` leaves n>1 requests in use for the records after it.
    after = [b["body"]["n"] for b in server.bodies if "q2" in json.dumps(b["body"])]
    assert max(after) == (votes + 1) // 2


def test_a_fleet_carries_on_while_one_replica_is_down_and_takes_it_back(server_factory):
    good, bad = server_factory(), server_factory(script=[500] * 1000)
    engine = engine_for(bad.url, good.url)

    async def go():
        try:
            first = await asyncio.gather(*(engine.generate(request(i, n=2)) for i in range(30)))
            failed_there = len(bad.bodies)
            rested = engine.health()
            second = await asyncio.gather(*(engine.generate(request(i, n=2)) for i in range(30, 40)))
            asked_while_down = len(bad.bodies) - failed_there
            bad.script = []  # the replica comes back
            for _ in range(200):  # a hang guard, not a speed check: it rejoins after a rest or two
                await asyncio.gather(*(engine.generate(request(i, n=2)) for i in range(40, 45)))
                if engine.health() == (2, 2):
                    break
                await asyncio.sleep(0.1)
            back = len(bad.bodies)
            third = await asyncio.gather(*(engine.generate(request(i, n=2)) for i in range(50, 90)))
            return first + second + third, failed_there, rested, asked_while_down, len(bad.bodies) - back
        finally:
            await engine.close()

    generations, failed_there, rested, asked_while_down, shared = asyncio.run(go())
    assert all(len(g.completions) == 2 for g in generations)  # every request answered
    assert failed_there >= 3 and rested == (1, 2)
    assert asked_while_down <= 1  # resting: at most one probe
    assert engine.health() == (2, 2) and shared >= 10  # it rejoined and carries its share again


def test_requests_go_to_the_least_loaded_endpoint(server_factory):
    first, second = server_factory(), server_factory()
    run(engine_for(first.url, second.url), *(request(i, n=1) for i in range(20)))
    assert len(first.bodies) + len(second.bodies) == 20
    assert abs(len(first.bodies) - len(second.bodies)) <= 4  # shared, not all on one


def test_cli_takes_several_base_urls(server_factory, tmp_path):
    from typer.testing import CliRunner

    from bon.cli.main import app

    good = server_factory()
    src = tmp_path / "q.jsonl"
    src.write_text(json.dumps({"query": "q", "candidates": ["a", "bb"]}) + "\n")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    result = CliRunner().invoke(
        app, ["select", str(src), "--judge", "m", "--base-url", dead, "--base-url", good.url, "-q"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["best_index"] in (0, 1) and good.bodies


def test_a_permanent_outage_ends_a_library_run_after_its_finished_records(server_factory, tmp_path):
    import bon

    server = server_factory(fail_after=2)  # the first record's two matches, then down for good
    rows = [{"id": i, "query": f"q{i}", "candidates": ["a", "bb", "ccc"]} for i in range(3)]
    out = tmp_path / "out.jsonl"
    got = []
    with pytest.raises(ServerGaveUp, match="gave up after 2 s.*answered 503"):
        for record in bon.run(
            rows, judge=bon.Judge("m", base_url=server.url, give_up_after=2.0), votes=1, concurrency=1, output=out
        ):
            got.append(record["id"])
    assert got == [0]
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [0]  # finished work kept


def test_a_permanent_outage_ends_the_cli_with_one_line_and_the_resume_command(server_factory, tmp_path):
    """Past --give-up-after: the finished records are written, the sidecar kept, one line
    says what failed, the next says how to resume; exit 1."""
    from typer.testing import CliRunner

    from bon.cli.main import app

    server = server_factory(fail_after=2)  # the first record's two matches, then down for good
    src = tmp_path / "q.jsonl"
    src.write_text(
        "".join(json.dumps({"id": i, "query": f"q{i}", "candidates": ["a", "bb", "ccc"]}) + "\n" for i in range(3))
    )
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "select",
            str(src),
            "-o",
            str(out),
            "--base-url",
            server.url,
            "--judge",
            "m",
            "--votes",
            "1",
            "--concurrency",
            "1",
            "--give-up-after",
            "2",
            "-q",
        ],
    )
    assert result.exit_code == 1, result.output
    down, error, resume = result.stderr.strip().splitlines()
    assert down.startswith(f"bon: server {server.url} (m) is down: answered 503")  # said once, when it went down
    assert error.startswith("bon: error: ") and "gave up after 2 s" in error and "answered 503" in error
    assert resume.startswith("bon: continue with: bon select ") and resume.endswith(" --resume")
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [0]
    assert (tmp_path / "out.jsonl.bon-cache").exists()
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["status"] == "failed"
