"""A batch log that shows progress, a manifest another shell can follow, `bon status`,
and `bon merge` naming the command for each missing shard."""

import fcntl
import json
import os
import re
import shlex
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bon.cli.outputs import merge
from bon.runs.checkpoint import Manifest, manifest_path, resume_command
from bon.runs.progress import RunProgress
from bon.runs.shards import rerun_commands, shard_of
from bon.views.status import status
from conftest import SCRIPTED_BON, scripted_bon, wait_until, write_jsonl

QUERIES = [{"id": f"q{i:02d}", "query": f"question number {i}"} for i in range(24)]
RUN = ["run", "--policy", "p", "--judge", "j", "-n", "4", "--votes", "3", "--concurrency", "3"]


def command_app(function) -> typer.Typer:
    """One command function on its own app, as bon/cli.py registers it."""
    app = typer.Typer()
    app.command()(function)
    app.command("unused")(lambda: None)  # two commands: Typer keeps the command name in argv
    return app


def bon_status(*args):
    return CliRunner().invoke(command_app(status), ["status", *map(str, args)])


bon = scripted_bon


def feed(progress: RunProgress, records: int) -> None:
    """What a pipeline reports for `records` records: 8 candidates, 3 matches of 3 votes each."""
    for _ in range(records):
        progress.on_policy(8, 800)
        for _ in range(3):
            progress.on_generation(3, 300, invalid=1)
            progress.on_match()
        progress.on_record()


def test_a_log_file_gets_a_status_line_every_interval_with_every_counter(tmp_path):
    log = tmp_path / "job.err"
    ticks = []
    with open(log, "w") as stream:
        with RunProgress(
            total=10, log_every=0.05, endpoints=lambda: (2, 3), on_tick=ticks.append, stream=stream
        ) as progress:
            feed(progress, 4)
            wait_until(lambda: log.read_text().count("\n") >= 2, "two status lines")
    line = log.read_text().splitlines()[-1]
    assert line.startswith("bon: 4/10 records (40%) · ")
    for part in ("rec/s", "ETA ", "judge samples 36", "invalid 33.3%", "tok/s", "endpoints 2/3 healthy", "elapsed"):
        assert part in line, line
    assert ticks[-1]["records_done"] == 4 and ticks[-1]["records_total"] == 10
    assert ticks[-1]["eta_s"] > 0 and ticks[-1]["endpoints"] == {"healthy": 2, "total": 3}


def test_a_stalled_run_still_logs_and_shows_zero_tokens_per_second(tmp_path):
    log = tmp_path / "job.err"
    with open(log, "w") as stream:
        with RunProgress(total=10, log_every=0.05, stream=stream) as progress:
            feed(progress, 1)
            wait_until(lambda: log.read_text().count("\n") >= 3, "lines while nothing happens")
    assert " 0 tok/s" in log.read_text().splitlines()[-1]


def test_log_every_zero_and_quiet_print_nothing_but_the_manifest_still_follows(tmp_path):
    for kwargs in ({"log_every": 0}, {"enabled": False, "log_every": 0.05}):
        log = tmp_path / "job.err"
        with open(log, "w") as stream:
            progress = RunProgress(total=3, stream=stream, on_tick=lambda c: None, **kwargs)
            with progress:
                feed(progress, 2)
            assert progress.tick()["records_done"] == 2
        assert log.read_text() == ""


def test_a_terminal_gets_the_bar_with_counters_and_an_eta_not_log_lines():
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    with open(follower, "w", closefd=True) as terminal:
        with RunProgress(total=5, log_every=0.05, stream=terminal) as progress:
            assert not progress.lines
            feed(progress, 2)
            progress._progress.refresh()
        screen = b""
        os.set_blocking(leader, False)
        try:
            while chunk := os.read(leader, 65536):
                screen += chunk
        except BlockingIOError:
            pass
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))  # colours off
    assert re.search(r"2/5 ETA \d+s", text) and "judge samples 18 (33% invalid)" in text
    assert "bon: 2/5 records" not in text


def test_manifest_update_carries_the_counters_and_finish_wins_over_a_late_tick(tmp_path):
    manifest = Manifest(tmp_path / "out.jsonl.manifest.json", {"command": ["run", "q.jsonl"]}, update_every=5)
    progress = RunProgress(enabled=False, total=10, on_tick=manifest.update)
    feed(progress, 3)
    progress.tick()
    saved = json.loads(manifest.path.read_text())
    assert saved["progress"]["records_done"] == 3 and saved["status"] == "running"
    assert saved["pid"] == os.getpid() and saved["host"] and saved["cwd"] == os.getcwd()
    manifest.finish("complete", {"records_written": 3}, progress.counters())
    feed(progress, 1)
    progress.tick()  # the timer thread may fire once more after the run ended
    saved = json.loads(manifest.path.read_text())
    assert saved["status"] == "complete" and saved["progress"]["records_done"] == 3


def write_manifest(output: Path, **fields) -> None:
    content = {
        "status": "running",
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "cwd": str(output.parent),
        "started": "2026-01-01T00:00:00+0000",
        "updated": "2026-01-01T00:00:00+0000",
        "update_every": 60,
        "command": ["run", "q.jsonl", "-o", output.name, "--shard", "auto", "--seed", "3"],
        "shard": "1/4",
        "progress": {
            "records_done": 5,
            "records_total": 20,
            "records_per_s": 0.5,
            "eta_s": 30.0,
            "elapsed_s": 10.0,
            "judge_samples": 40,
            "invalid_votes": 4,
            "tokens_per_s": 99.0,
            "endpoints": None,
        },
    } | fields
    manifest_path(output).write_text(json.dumps(content))


def test_status_of_a_running_job_shows_progress_and_eta_and_no_resume(tmp_path):
    output = tmp_path / "out.jsonl"
    output.write_text('{"id": 1}\n{"id": 2}\n')
    write_manifest(output)  # this test's own pid: alive
    result = bon_status(output)
    assert result.exit_code == 0, result.output
    assert ": running\npid " in result.output
    assert "5/20 records (25%)" in result.output and "ETA 30s" in result.output and "invalid 10.0%" in result.output
    assert "2 records in" in result.output and "continue with" not in result.output
    assert bon_status(manifest_path(output)).output == result.output  # the manifest itself named


def test_status_tells_a_dead_job_from_a_running_one_and_prints_its_resume_command(tmp_path):
    output = tmp_path / "out.jsonl"
    gone = subprocess.Popen(["true"])
    gone.wait()
    write_manifest(output, pid=gone.pid)
    result = bon_status(output, "--json")
    info = json.loads(result.output)
    assert info["state"] == "interrupted" and "is gone" in info["why"]
    # --shard auto is pinned to the shard it resolved to: the command works outside the scheduler
    assert info["resume_command"] == f"cd {tmp_path} && bon run q.jsonl -o out.jsonl --shard 1/4 --seed 3 --resume"


def test_status_of_a_job_on_another_host_goes_by_the_age_of_its_last_update(tmp_path):
    output = tmp_path / "out.jsonl"
    write_manifest(output, host="some-other-node")  # updated long ago
    info = json.loads(bon_status(output, "--json").output)
    assert info["state"] == "interrupted" and "cannot be checked from here" in info["why"]
    write_manifest(output, status="failed")
    assert json.loads(bon_status(output, "--json").output)["state"] == "failed"
    write_manifest(output, status="complete")
    info = json.loads(bon_status(output, "--json").output)
    assert info["state"] == "complete" and info["resume_command"] is None


def test_status_without_a_manifest_is_one_line_and_exit_2(tmp_path):
    result = bon_status(tmp_path / "nothing.jsonl")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "no manifest for" in result.output


def test_resume_command_runs_from_the_directory_the_job_started_in():
    command = resume_command(
        {"command": ["select", "in put.jsonl", "-o", "o.jsonl", "--overwrite"], "cwd": "/somewhere/else"}
    )
    assert command == "cd /somewhere/else && bon select 'in put.jsonl' -o o.jsonl --resume"


def test_status_follows_a_real_job_killed_mid_run_and_its_resume_command_finishes_it(tmp_path):
    queries = write_jsonl(tmp_path / "q.jsonl", QUERIES)
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        SCRIPTED_BON + RUN + [str(queries), "-o", str(out), "-q"],
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, BON_TEST_LATENCY="0.05"),
    )
    wait_until(lambda: out.exists() and out.read_text().count("\n") >= 3, "some records written")
    assert json.loads(bon_status(out, "--json").output)["state"] == "running"
    process.send_signal(signal.SIGKILL)
    process.wait()
    info = json.loads(bon_status(out, "--json").output)
    assert info["state"] == "interrupted"
    command = info["resume_command"]
    assert command.startswith("bon run ") and command.endswith(" --resume")
    resumed = bon(*shlex.split(command)[1:], cwd=os.getcwd())
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_text().count("\n") == len(QUERIES)
    assert json.loads(bon_status(out, "--json").output)["state"] == "complete"


def test_merge_names_each_missing_shard_with_the_command_that_reruns_it(tmp_path):
    queries = write_jsonl(tmp_path / "q.jsonl", QUERIES)
    parts = [tmp_path / f"part.{i}.jsonl" for i in range(3)]
    for index in (0, 2):  # shard 1 never ran
        result = bon(*RUN, queries, "-o", parts[index], "--shard", f"{index}/3", "-q")
        assert result.returncode == 0, result.stderr
    merged = tmp_path / "merged.jsonl"
    result = CliRunner().invoke(command_app(merge), ["merge", str(parts[0]), str(parts[2]), "-o", str(merged)])
    assert result.exit_code == 1
    owed = sum(shard_of(q["id"], 3) == 1 for q in QUERIES)
    line = next(line for line in result.output.splitlines() if "shard 1/3" in line)
    assert f"is missing {owed} records; rerun it with: bon run " in line
    command = line.split("rerun it with: ", 1)[1]
    assert f"-o {parts[1]}" in command and "--shard 1/3" in command
    rerun = bon(*shlex.split(command)[1:])
    assert rerun.returncode == 0, rerun.stderr
    result = CliRunner().invoke(command_app(merge), ["merge", *map(str, parts), "-o", str(merged), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert merged.read_text().count("\n") == len(QUERIES)


@pytest.mark.parametrize(
    "output, expected",
    [("out.0.jsonl", "out.2.jsonl"), ("run-001.jsonl", "run-003.jsonl"), ("a1b2.jsonl", "a1b2.jsonl")],
)
def test_a_missing_shard_gets_its_siblings_output_name_with_the_number_shifted(output, expected):
    sibling = {"shard": "0/3", "command": ["run", "q.jsonl", "-o", output, "--shard", "auto"]}
    missing = [i for i in range(200) if shard_of(i, 3) == 2][:2]
    [line] = rerun_commands(missing, [sibling])
    assert line.endswith(f"bon run q.jsonl -o {expected} --shard 2/3 --resume")


ENGINE_SCRIPT = """
import asyncio, logging, sys
from bon.config import EngineConfig, VLLMOptions
from bon.engines.base import GenerationRequest
from bon.engines.vllm import VLLMEngine

logging.basicConfig(format="bon: %(message)s", level=logging.WARNING)
logging.getLogger("bon").setLevel(logging.INFO)

async def main():
    config = EngineConfig(backend="vllm", model=sys.argv[1], options=VLLMOptions(max_model_len=1024),
                          log_file=sys.argv[2])
    engine = await VLLMEngine.load(config)
    generation = await engine.generate(GenerationRequest([{"role": "user", "content": "Say hi"}], 2, 0.7, 1.0, 8, 0))
    print(len(generation.completions))
    await engine.close()

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_a_vllm_engine_leaves_stderr_to_bon_and_exits_without_a_trace(tmp_path, smollm2):
    """vLLM prints ~70 lines around a run and, at exit, "Exception ignored in: AsyncLLM.__del__ …
    TypeError"; with a log file, stderr holds bon's one line saying what loaded where."""
    script, log = tmp_path / "engine.py", tmp_path / "out.jsonl.engine.log"
    script.write_text(ENGINE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), smollm2, str(log)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2\n"
    [line] = result.stderr.splitlines()
    assert re.fullmatch(
        rf"bon: {re.escape(smollm2)} loaded on vllm \(cpu, float32\) in [\d.]+ s; its log: " + re.escape(str(log)), line
    ), line
    engine_log = log.read_text()
    assert "Resolved architecture" in engine_log and "[shutdown]" in engine_log  # start-up and shutdown
    assert "Exception ignored" not in engine_log + result.stderr


WINDOW_SCRIPT = """
import sys, time
from bon.config import EngineConfig
from bon.engines.vllm import engine_output
from bon.runs.progress import RunProgress

with RunProgress(total=4, log_every=0.05) as progress:
    with engine_output(EngineConfig(backend="vllm", model="m", log_file=sys.argv[1])):
        print("engine chatter", file=sys.stderr, flush=True)
        progress.on_record()
        time.sleep(0.5)  # an engine starting: status lines must still reach the job's log
"""


def test_status_lines_reach_the_job_log_while_the_engine_output_goes_to_its_own(tmp_path):
    engine_log, job_log = tmp_path / "out.jsonl.engine.log", tmp_path / "job.err"
    with open(job_log, "w") as stderr:
        result = subprocess.run([sys.executable, "-c", WINDOW_SCRIPT, str(engine_log)], stderr=stderr, timeout=60)
    assert result.returncode == 0, job_log.read_text()
    assert engine_log.read_text() == "engine chatter\n"
    assert "bon: 1/4 records (25%)" in job_log.read_text()
