"""A stop is clean every time (issue 13).

Fifty runs of the real CLI, each ended at a different moment: a signal while its K-th
request is in flight (K spread from the first request to the last; SIGTERM and SIGINT),
an engine that dies on its K-th request, a bad line in the middle of stdin, and a stop
while stdin is still open. Five kinds of run: select from a file and from stdin
(knockout, early stop, elo), run with two local models (phased, replayed from the
sidecar) and with two servers (one window). Every run must end with its exit code, the
resume line where a stop leaves work to do, whole records that match an uninterrupted run,
and nothing else on stderr: no traceback, no "Task exception was never retrieved", no
request on a closed engine, no model loaded again at shutdown. The scripted engine says
so on stderr when either happens, as a real client fails when asked after its close.
"""

import asyncio
import gc
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import SCRIPTED_BON, assert_clean, read_jsonl, scripted_bon, wait_until, write_jsonl

SELECT = ["select", "--judge", "j", "--votes", "3"]
RUNS = {
    "select-knockout": SELECT + ["--concurrency", "3"],
    "select-elo": SELECT + ["--strategy", "elo", "--max-pairs", "10", "--concurrency", "16"],
    "stdin-early-stop": SELECT + ["--early-stop", "--concurrency", "16"],
    "run-phased": ["run", "--policy", "p", "--judge", "j", "-n", "4", "--votes", "3", "--concurrency", "3"],
    "run-servers": [
        "run",
        "--policy",
        "p",
        "--judge",
        "j",
        "--backend",
        "scripted-server",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "-n",
        "4",
        "--votes",
        "3",
        "--group-by-answer",
        "exact",
        "--concurrency",
        "8",
    ],
}
STDIN = {"stdin-early-stop"}
SIGNALS = [signal.SIGTERM, signal.SIGINT]
SPREAD = 8  # signal moments per kind of run
# Requests take a moment (many are in flight at once), and so does an engine's shutdown (a real
# one's takes seconds): work left running after a stop has time to reach a closed engine.
LATENCY = {"BON_TEST_LATENCY": "0.002", "BON_TEST_CLOSE_LATENCY": "0.05"}


def queries(count=24):
    return [{"id": f"q{i:02d}", "query": f"question number {i}"} for i in range(count)]


def with_candidates(count=24):
    return [
        dict(q, candidates=[f"answer {j} " + "x" * ((i * 7 + j * 3) % 11) for j in range(8)])
        for i, q in enumerate(queries(count))
    ]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Per kind of run: its input, its uninterrupted output, and how many requests it makes."""
    root = tmp_path_factory.mktemp("stops")
    made = {}
    for name, args in RUNS.items():
        rows = queries() if args[0] == "run" else with_candidates()
        source = write_jsonl(root / f"{name}.jsonl", rows)
        out, log = root / f"{name}.reference.jsonl", root / f"{name}.requests.log"
        result = launch(name, source, out, env={"BON_TEST_LOG": str(log)})
        assert result.returncode == 0, result.stderr
        made[name] = {"input": source, "reference": out.read_bytes(), "requests": len(log.read_text().splitlines())}
    return made


def launch(name, source, out, env=None, extra=()):
    args, env = [*RUNS[name], *extra, "-o", out], dict(LATENCY, **(env or {}))
    if name in STDIN:
        with open(source, "rb") as stdin:
            return scripted_bon(*args, "-", env=env, stdin=stdin)
    return scripted_bon(*args, source, env=env)


def assert_prefix_of(out, reference):
    """Whole records only, each the uninterrupted run's, in its order."""
    written = out.read_bytes() if out.exists() else b""
    assert reference.startswith(written) and (not written or written.endswith(b"\n"))
    return len(read_jsonl(written.decode()))


CASES = [(name, i, SIGNALS[(k + i) % 2]) for k, name in enumerate(RUNS) for i in range(SPREAD)]


@pytest.mark.parametrize("name, moment, signum", CASES, ids=[f"{n}-{m}-{s.name}" for n, m, s in CASES])
def test_a_signal_mid_request_stops_cleanly_and_resumes(tmp_path, work, name, moment, signum):
    made = work[name]
    at = 1 + moment * (made["requests"] - 1) // (SPREAD - 1)  # the first request, …, the last
    out = tmp_path / "out.jsonl"
    stopped = launch(name, made["input"], out, env={"BON_TEST_SIGNAL_AT": str(at), "BON_TEST_SIGNAL": signum.name})
    assert_clean(stopped.stderr)
    assert stopped.returncode == 128 + signum, stopped.stderr
    assert "continue with: bon " in stopped.stderr and "--resume" in stopped.stderr
    written = assert_prefix_of(out, made["reference"])
    assert json.loads((tmp_path / "out.jsonl.manifest.json").read_text())["status"] == "interrupted"
    resumed = launch(name, made["input"], out, extra=["--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert_clean(resumed.stderr)
    assert f"{written} already done" in resumed.stderr or written == 0
    assert out.read_bytes() == made["reference"]


@pytest.mark.parametrize("name", list(RUNS))
def test_an_engine_that_dies_mid_run_ends_it_cleanly(tmp_path, work, name):
    made = work[name]
    out = tmp_path / "out.jsonl"
    failed = launch(name, made["input"], out, env={"BON_TEST_BREAK_AT": str(made["requests"] // 2)})
    assert_clean(failed.stderr)
    assert failed.returncode == 1, failed.stderr
    assert "bon: error: scripted: the engine died" in failed.stderr
    assert "continue with: bon " in failed.stderr
    assert_prefix_of(out, made["reference"])


@pytest.mark.parametrize("bad_line", [1, 5, 13, 24])
def test_a_bad_stdin_line_ends_the_run_cleanly_after_the_records_before_it(tmp_path, work, bad_line):
    made = work["stdin-early-stop"]
    lines = made["input"].read_text().splitlines(keepends=True)
    lines[bad_line - 1] = "{not json\n"
    source = tmp_path / "bad.jsonl"
    source.write_text("".join(lines))
    out = tmp_path / "out.jsonl"
    failed = launch("stdin-early-stop", source, out)
    assert_clean(failed.stderr)
    assert failed.returncode == 2, failed.stderr
    assert f"line {bad_line}" in failed.stderr
    assert assert_prefix_of(out, made["reference"]) == bad_line - 1  # every record before it, nothing lost


def test_a_stop_while_stdin_stays_open_exits_at_once(tmp_path, work):
    """The program upstream has written everything and keeps the pipe open; bon has judged
    what it got and waits for more. SIGTERM ends it then, rather than at the next line."""
    made = work["stdin-early-stop"]
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        SCRIPTED_BON + RUNS["stdin-early-stop"] + ["-o", str(out), "-"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdin.write(made["input"].read_text())
    process.stdin.flush()  # and left open
    wait_until(lambda: out.exists() and out.read_bytes() == made["reference"], "every record written")
    time.sleep(0.2)  # bon is now waiting for the next stdin line
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)  # a hang guard: it used to wait for the next line
    finally:
        process.kill()
        process.stdin.close()
    stderr = process.stderr.read()
    assert_clean(stderr)
    assert process.returncode == 143, stderr
    assert "continue with: bon " in stderr
    assert out.read_bytes() == made["reference"]


# ---- the library: a cancelled task, an interrupted sync call ----


@pytest.mark.parametrize("at", [1, 7, 30, 90])
def test_a_cancelled_library_run_leaves_nothing_running(tmp_path, scripted, at):
    """`bon.arun` in a task cancelled while its `at`-th request is in flight: when the cancel
    has returned nothing of the run is still running or asks the engine anything more, no
    error is left unread, and the output resumes to the uninterrupted run's."""
    import bon

    rows = with_candidates(12)
    reference = tmp_path / "reference.jsonl"
    with bon.Judge("j", backend="scripted") as judge:
        list(bon.run(rows, judge=judge, votes=3, output=reference))
    scripted.latency = lambda request: 0.002
    out, unread = tmp_path / "out.jsonl", []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unread.append(context))
        judge = bon.Judge("j", backend="scripted")
        first = len(scripted.requests)

        async def consume():
            async for _ in bon.arun(rows, judge=judge, votes=3, output=out, concurrency=8):
                pass

        task = asyncio.ensure_future(consume())
        while len(scripted.requests) < first + at:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        asked = len(scripted.requests)
        await asyncio.sleep(0.05)
        assert len(scripted.requests) == asked  # nothing asks after the cancel has returned
        assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing of the run is left running
        await judge.aclose()
        gc.collect()  # an unread task error is reported when the task is collected

    asyncio.run(main())
    assert not unread
    assert json.loads((tmp_path / "out.jsonl.manifest.json").read_text())["status"] == "interrupted"
    assert assert_prefix_of(out, reference.read_bytes()) < len(rows)
    with bon.Judge("j", backend="scripted") as judge:
        list(bon.run(rows, judge=judge, votes=3, output=out, resume=True))
    assert out.read_bytes() == reference.read_bytes()


class Interrupt(Exception):
    """What a test's own signal handler raises: Ctrl-C in a notebook, without ending pytest."""


@pytest.fixture
def interrupt_after():
    """interrupt_after(seconds): a signal then raises Interrupt in the main thread, wherever it waits."""

    def raise_interrupt(signum, frame):
        raise Interrupt

    previous = signal.signal(signal.SIGUSR1, raise_interrupt)
    timers = []

    def arm(seconds):
        timers.append(threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGUSR1)))
        timers[-1].start()

    yield arm
    for timer in timers:
        timer.cancel()
    signal.signal(signal.SIGUSR1, previous)


def test_an_interrupted_sync_call_ends_on_bons_loop_before_it_raises(scripted, interrupt_after):
    import bon

    scripted.latency = lambda request: 0.1
    with bon.Judge("j", backend="scripted") as judge:
        interrupt_after(0.25)
        with pytest.raises(Interrupt):
            judge.select("q", [f"answer {i}" for i in range(16)], votes=3)
        asked = len(scripted.requests)
        time.sleep(0.3)
        assert len(scripted.requests) == asked  # the match it was playing did not go on without it

        rows = with_candidates(6)
        interrupt_after(0.25)
        with pytest.raises(Interrupt):
            for _ in bon.run(rows, judge=judge, votes=3):
                pass
        asked = len(scripted.requests)
        time.sleep(0.3)
        assert len(scripted.requests) == asked
        assert judge.select("q", ["a", "bb"], votes=1).best == "bb"  # and the judge still works


@pytest.mark.parametrize("at", [1, 10, 40])
def test_after_a_stop_no_request_reaches_the_engine(tmp_path, scripted, at):
    """The stop lands while the `at`-th request is in the engine (as a signal handler's does,
    from outside any record): the matches still running start no further request; the run
    ends interrupted with its finished records written."""
    import bon
    from bon.runs.api import make_run

    run = make_run(
        with_candidates(12),
        judge=bon.Judge("j", backend="scripted"),
        votes=3,
        concurrency=8,
        output=tmp_path / "out.jsonl",
    )
    asked_at_stop = []

    def stop():
        asked_at_stop.append(len(scripted.requests))
        run.request_stop()

    def latency(request):
        if len(scripted.requests) == at:
            asyncio.get_running_loop().call_soon(stop)
        return 0.001

    scripted.latency = latency

    async def main():
        async for _ in run:
            pass

    asyncio.run(main())
    assert asked_at_stop and run.status == "interrupted"
    assert len(scripted.requests) == asked_at_stop[0]  # not one request after the stop
