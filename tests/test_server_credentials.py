"""Credentials reach only where they are meant, and a fleet's outages are said: real `bon`
processes, the real openai client, and loopback servers that record what they are sent."""

from __future__ import annotations

import json
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bon.errors import redact
from fault_server import FaultyServer, free_port

CANARY_PASSWORD, CANARY_KEY = "CANARYPW", "CANARYKEY"
ROWS = [{"id": i, "query": "POISON" if i == 1 else f"q{i}", "candidates": ["a", "bb", "ccc"]} for i in range(3)]


@pytest.fixture
def servers():
    made = []

    def make(**kwargs):
        made.append(FaultyServer(**kwargs))
        return made[-1]

    yield make
    for server in made:
        server.close()


def bon(*args, env=None, stdin=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "bon", *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(env),
        input=stdin,
        timeout=timeout,
    )


def _env(extra=None):
    # Loopback goes direct; api.openai.com goes through a test's proxy when it names one.
    env = {k: v for k, v in os.environ.items() if k.upper() not in ("OPENAI_API_KEY", "HTTP_PROXY", "NO_PROXY")}
    return env | {"NO_PROXY": "127.0.0.1,localhost"} | (extra or {})


def queries(tmp_path: Path, rows=ROWS) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def canary_url(server: FaultyServer) -> str:
    return f"http://user:{CANARY_PASSWORD}@127.0.0.1:{server.port}/v1?api_key={CANARY_KEY}"


def test_redact_hides_a_urls_userinfo_and_secret_parameters_only():
    text = "server http://bon:PW@127.0.0.1:8000/v1?api_key=K&model=m&access_token=T (judge): gave up"
    assert redact(text) == "server http://***@127.0.0.1:8000/v1?api_key=***&model=m&access_token=*** (judge): gave up"
    assert redact("https://KEY@gw.example/v1 and ?token=x") == "https://***@gw.example/v1 and ?token=x"
    assert redact("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    # A variable bon expands itself is a name, not a secret: it stays, so a resume command works.
    assert redact("http://u:${PW}@h/v1?key=${KEY}") == "http://u:${PW}@h/v1?key=${KEY}"


@pytest.mark.parametrize("path", ["rejection", "outage", "stall", "debug"])
def test_canary_secrets_reach_no_file_and_no_stream(servers, tmp_path, path):
    """A password in the URL's userinfo and a key in its query string, through each error
    path: neither appears in stdout, stderr, the output, sidecar, manifest, engine log or
    `bon status`."""
    server = {
        "rejection": lambda: servers(poison="POISON", poison_status=422),
        "outage": lambda: servers(fail_after=2),
        # A stall's first chunk counts as an answer: only the outage after it ends the run.
        "stall": lambda: servers(script=[200, 200, "stall", "stall"] + [503] * 1000),
        "debug": lambda: servers(fail_after=2),
    }[path]()
    out = tmp_path / "out.jsonl"
    flags = ["--votes", "1", "--concurrency", "1", "--give-up-after", "2", "--stall-timeout", "1"]
    result = bon(
        "select", queries(tmp_path), "-o", out, "--judge", "m", "--base-url", canary_url(server), *flags,
        *(["--debug"] if path == "debug" else []),
    )  # fmt: skip
    assert result.returncode == (3 if path == "rejection" else 1), result.stderr
    if path == "debug":
        assert "Traceback" in result.stderr
    status = bon("status", out)
    texts = {"stdout": result.stdout, "stderr": result.stderr, "status": status.stdout + status.stderr}
    texts |= {p.name: p.read_text(errors="replace") for p in tmp_path.iterdir() if p.is_file()}
    assert "out.jsonl.manifest.json" in texts and len(server.bodies) >= 2
    leaks = [name for name, text in texts.items() for canary in (CANARY_PASSWORD, CANARY_KEY) if canary in text]
    assert not leaks
    assert "http://***@127.0.0.1" in result.stderr + texts["out.jsonl"]  # still says which server


def test_a_resume_command_names_the_variable_and_works(servers, tmp_path):
    """A URL written with ${NAME} keeps the name everywhere; the printed resume command, run
    as printed, finishes the run."""
    server = servers(fail_after=2)
    out = tmp_path / "out.jsonl"
    url = f"http://user:${{BON_TEST_PASSWORD}}@127.0.0.1:{server.port}/v1"
    env = {"BON_TEST_PASSWORD": CANARY_PASSWORD}
    rows = [{"id": i, "query": f"q{i}", "candidates": ["a", "bb", "ccc"]} for i in range(3)]
    args = ["--votes", "1", "--concurrency", "1", "--give-up-after", "2", "-q"]
    first = bon("select", queries(tmp_path, rows), "-o", out, "--judge", "m", "--base-url", url, *args, env=env)
    assert first.returncode == 1, first.stderr
    resume = first.stderr.strip().splitlines()[-1].removeprefix("bon: continue with: ")
    assert "${BON_TEST_PASSWORD}" in resume and CANARY_PASSWORD not in first.stderr
    server.fail_after = None  # the server is back
    second = subprocess.run(
        resume.replace("bon ", f"{shlex.quote(sys.executable)} -m bon ", 1),
        shell=True,
        capture_output=True,
        text=True,
        env=_env(env),
        timeout=120,
        cwd=tmp_path,
    )
    assert second.returncode == 0, second.stderr
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [0, 1, 2]


def test_a_key_reaches_only_the_host_it_was_meant_for(servers, tmp_path):
    """$OPENAI_API_KEY goes to api.openai.com (reached here through a recording proxy) and
    to no other host; a named variable goes to the servers of the role that names it."""
    openai_com, policy_server, judge_server = servers(), servers(), servers()
    env = {"OPENAI_API_KEY": "sk-openai", "POLICY_KEY": "sk-policy", "HTTP_PROXY": openai_com.url.removesuffix("/v1")}
    src, results = queries(tmp_path, ROWS[:1]), []
    for url in ("http://api.openai.com/v1", judge_server.url):
        results.append(bon("select", src, "--judge", "j", "--base-url", url, "--votes", "1", "-q", env=env))
    assert {(b["host"], b["auth"]) for b in openai_com.bodies} == {("api.openai.com", "Bearer sk-openai")}
    assert {b["auth"] for b in judge_server.bodies} == {None}  # no header at all, not the OpenAI key
    results.append(
        bon(
            "run",
            queries(tmp_path, [{"id": 0, "query": "q0"}]),
            "--policy",
            "p",
            "--judge",
            "j",
            "-n",
            "2",
            "-q",
            "--policy-api-key-env",
            "POLICY_KEY",
            "--policy-base-url",
            policy_server.url,
            "--judge-base-url",
            judge_server.url,
            env=env,
        )  # fmt: skip
    )
    assert {b["auth"] for b in policy_server.bodies} == {"Bearer sk-policy"}
    assert {b["auth"] for b in judge_server.bodies} == {None}
    for result in results:
        assert result.returncode == 0, result.stderr
        assert "sk-" not in result.stdout + result.stderr


def test_a_401_from_a_server_sent_no_key_says_how_to_send_one(servers, tmp_path):
    server = servers(script=[401])
    result = bon("select", queries(tmp_path, ROWS[:1]), "--judge", "m", "--base-url", server.url, "-q",
                 env={"OPENAI_API_KEY": "sk-openai"})  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"bon: error: server {server.url} (m) answered 401 and bon sent it no key: "
        "name the variable holding it with --api-key-env NAME"
    ]
    assert server.bodies[0]["auth"] is None


def test_a_replica_down_from_the_start_is_said_once_and_counted(servers, tmp_path):
    good, dead = servers(), f"http://127.0.0.1:{free_port()}/v1"
    rows = [{"id": i, "query": f"q{i}", "candidates": ["a", "bb"]} for i in range(20)]
    result = bon("select", queries(tmp_path, rows), "-o", tmp_path / "out.jsonl", "--judge", "m",
                 "--base-url", dead, "--base-url", good.url, "--votes", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if dead in line]
    assert said == [f"bon: server {dead} (m) is down: cannot be reached"]
    assert "1 endpoint outage (0 back)" in result.stderr.strip().splitlines()[-1]


def test_a_replica_killed_and_restarted_is_said_down_then_back(servers, tmp_path):
    """Records arrive on stdin while one of two replicas is killed and started again on its
    port: one line when it goes down, one when it is back, and the summary counts both."""
    steady, flaky = servers(), servers()
    port = flaky.port
    process = subprocess.Popen(
        [sys.executable, "-m", "bon", "select", "-", "-o", str(tmp_path / "out.jsonl"), "--judge", "m",
         "--base-url", flaky.url, "--base-url", steady.url, "--votes", "1", "--concurrency", "4", "--log-every", "0"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_env(),
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in process.stderr], daemon=True)
    reader.start()
    said: list[str] = []
    sent = 0

    def feed_until(done, what: str, limit: float = 60) -> None:
        """Send records one by one until `done()`, collecting stderr as it comes."""
        nonlocal sent
        deadline = time.monotonic() + limit
        while not done():
            assert time.monotonic() < deadline, (what, said)
            process.stdin.write(json.dumps({"id": sent, "query": f"q{sent}", "candidates": ["a", "bb"]}) + "\n")
            process.stdin.flush()
            sent += 1
            time.sleep(0.05)
            while not lines.empty():
                said.append(lines.get())

    down, back = f"bon: server {flaky.url} (m) is down: ", f"bon: server {flaky.url} (m) is back"
    feed_until(lambda: len(flaky.bodies) >= 3, "both replicas serving")
    flaky.close()  # killed
    feed_until(lambda: any(line.startswith(down) for line in said), down)
    servers(port=port)  # restarted on its port
    feed_until(lambda: back in said, back)
    process.stdin.close()
    assert process.wait(timeout=60) == 0
    reader.join(timeout=10)
    while not lines.empty():
        said.append(lines.get())
    about_flaky = [line for line in said if flaky.url in line]
    assert len(about_flaky) == 2 and about_flaky[0].startswith(down) and about_flaky[1] == back
    assert "1 endpoint outage (1 back)" in said[-1]
