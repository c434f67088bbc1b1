"""Long jobs that survive: resume after SIGKILL, torn lines, the sidecar, signals, bad input,
per-record errors, shards and merge, the manifest. Real processes, scripted judge."""

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from conftest import read_jsonl, scripted_bon, wait_for_lines, wait_until, write_jsonl
from conftest import start_bon as start

QUERIES = [{"id": f"q{i:02d}", "query": f"question number {i}"} for i in range(24)]
RUN = ["run", "--policy", "p", "--judge", "j", "--backend", "scripted", "-n", "4", "--votes", "3", "--concurrency", "3"]


bon = scripted_bon


def wait_for_text(path: Path, text: str, process):
    """Wait until `path` holds `text` while `process` is still running."""

    def written():
        assert process.poll() is None, process.stderr.read()
        return path.exists() and text in path.read_text()

    wait_until(written, f"{path.name} to hold {text!r}")


@pytest.fixture
def queries(tmp_path):
    return write_jsonl(tmp_path / "q.jsonl", QUERIES)


@pytest.fixture
def reference(tmp_path, queries):
    """The uninterrupted run everything is compared with."""
    out = tmp_path / "reference.jsonl"
    result = bon(*RUN, queries, "-o", out, "-q")
    assert result.returncode == 0, result.stderr
    return out.read_bytes()


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, queries, reference):
    out, log = tmp_path / "out.jsonl", tmp_path / "requests.log"
    slow = {"BON_TEST_LATENCY": "0.05", "BON_TEST_LOG": str(log)}
    process = start(*RUN, queries, "-o", out, "-q", env=slow)
    wait_for_lines(out, 4, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = out.read_text().count("\n")
    assert 4 <= written < len(QUERIES)
    sidecar = tmp_path / "out.jsonl.bon-cache"
    kept = {json.loads(line)["key"] for line in sidecar.read_text().splitlines()[1:] if line.endswith("}")}
    assert kept, "the sidecar holds finished work"
    log.unlink()
    resumed = bon(*RUN, queries, "-o", out, "--resume", env={"BON_TEST_LOG": str(log)})
    assert resumed.returncode == 0, resumed.stderr
    assert f"{written} already done" in resumed.stderr
    assert out.read_bytes() == reference  # exactly one record per input record, as if never stopped
    asked_again = {key for line in log.read_text().splitlines() for key in json.loads(line)}
    assert not kept & asked_again  # finished samples and judgments were reused, not redone
    assert not sidecar.exists()  # a completed run cleans its sidecar up


def test_a_torn_last_line_is_dropped_and_redone(tmp_path, queries, reference):
    out = tmp_path / "out.jsonl"
    lines = reference.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    result = bon(*RUN, queries, "-o", out, "--resume")
    assert result.returncode == 0, result.stderr
    assert "dropped a torn last line" in result.stderr
    assert out.read_bytes() == reference


def test_existing_output_needs_resume_or_overwrite(tmp_path, queries, reference):
    out = tmp_path / "out.jsonl"
    out.write_bytes(reference)
    refused = bon(*RUN, queries, "-o", out)
    assert refused.returncode == 2
    assert "exists: add --resume to continue it, or --overwrite to start over" in refused.stderr
    assert out.read_bytes() == reference  # untouched
    assert bon(*RUN, queries, "-o", out, "--overwrite", "-q").returncode == 0
    assert out.read_bytes() == reference


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_writes_what_is_finished_and_says_how_to_resume(tmp_path, queries, reference, signum, code):
    out = tmp_path / "out.jsonl"
    process = start(*RUN, queries, "-o", out, env={"BON_TEST_LATENCY": "0.05"})
    wait_for_lines(out, 3, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)  # a hang guard, not a speed check
    assert process.returncode == code
    assert "continue with: bon run" in stderr and "--resume" in stderr and "Traceback" not in stderr
    records = read_jsonl(out.read_text())  # every line is a whole record
    assert out.read_text().endswith("\n") and len(records) < len(QUERIES)
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    # A changed setting is refused rather than mixed with the kept work ...
    changed = bon(*RUN[:-4], "--votes", "5", "--concurrency", "3", queries, "-o", out, "--resume")
    assert changed.returncode == 2 and "other settings (judge)" in changed.stderr
    # ... and the printed command finishes the job.
    assert bon(*RUN, queries, "-o", out, "--resume", "-q").returncode == 0
    assert out.read_bytes() == reference


def test_a_second_signal_exits_at_once(tmp_path, queries):
    """The first signal starts a graceful stop whose engine shutdown is slow; the second ends it
    there: the shutdown never finishes."""
    out, log, closing = tmp_path / "out.jsonl", tmp_path / "requests.log", tmp_path / "close.log"
    process = start(
        *RUN,
        queries,
        "-o",
        out,
        env={
            "BON_TEST_LATENCY": "2",
            "BON_TEST_LOG": str(log),
            "BON_TEST_CLOSE_LATENCY": "60",
            "BON_TEST_CLOSE_LOG": str(closing),
        },
    )
    wait_for_lines(log, 1, process)  # the pipeline is running: its first request is out
    process.send_signal(signal.SIGINT)
    wait_for_text(closing, "close started", process)  # the graceful stop is shutting the engine down
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)  # a hang guard, not a speed check
    assert process.returncode == 130
    assert "close finished" not in closing.read_text()  # it exited mid-shutdown, not after it
    assert "Traceback" not in stderr


def test_a_signal_during_start_up_exits_cleanly():
    """Before the pipeline runs (checking a big input), a signal ends start-up with no traceback."""
    from bon.runs.interrupts import Interrupted, RunSignals

    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted) as caught:
        with RunSignals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises at the next bytecode; this never completes
    assert caught.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is previous  # the caller's handler is back


def test_a_signal_while_files_open_is_kept_for_the_pipeline():
    """Between start-up and the pipeline, a signal is noted, then stops the pipeline as it starts."""
    import asyncio

    from bon.runs.interrupts import RunSignals

    stopped = []
    with RunSignals() as signals:
        signals.defer()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert signals.received == [signal.SIGTERM] and not stopped

        async def pipeline():
            signals.stop_with(lambda: stopped.append("stop"))

        asyncio.run(pipeline())
    assert stopped == ["stop"]


def test_skip_bad_lines_reports_counts_and_rejects(tmp_path):
    lines = [
        json.dumps({"query": "good one"}),
        "{broken",
        json.dumps({"query": ""}),
        json.dumps([1]),
        json.dumps({"query": "good two"}),
        json.dumps({"query": "c", "candidates": ["ok", 3]}),
    ]
    src = tmp_path / "q.jsonl"
    src.write_bytes(("\n".join(lines) + "\n").encode() + b'{"query": "\xff"}\n')
    rejects = tmp_path / "rejects.jsonl"
    result = bon(*RUN, src, "--on-bad-line", "skip", "--rejects", rejects)
    assert result.returncode == 0, result.stderr
    assert [r["query"] for r in read_jsonl(result.stdout)] == ["good one", "good two"]
    assert [r["id"] for r in read_jsonl(result.stdout)] == [0, 4]  # ids do not shift when lines are skipped
    for fragment in (
        "skipped line 2: invalid JSON",
        "skipped line 3: `query` must be a non-empty string",
        "skipped line 4: expected a JSON object",
        "skipped line 6: `candidates` must be",
        "skipped line 7: not UTF-8",
        "5 bad lines skipped",
    ):
        assert fragment in result.stderr
    rejected = read_jsonl(rejects.read_text())
    assert [r["line"] for r in rejected] == [2, 3, 4, 6, 7] and rejected[0]["text"] == "{broken"
    failed = bon(*RUN, src)
    assert failed.returncode == 2 and failed.stdout == "" and "line 2: invalid JSON" in failed.stderr


@pytest.mark.parametrize("to_file", [False, True])  # in memory, or replayed from the sidecar
def test_a_record_the_backend_rejects_gets_an_error_and_the_run_goes_on(tmp_path, queries, to_file):
    out = tmp_path / "out.jsonl"
    result = bon(*RUN, queries, *(["-o", out] if to_file else []), env={"BON_TEST_FAIL_ON": "question number 7"})
    assert result.returncode == 3, result.stderr
    records = read_jsonl(out.read_text() if to_file else result.stdout)
    assert len(records) == len(QUERIES)
    failed = [r for r in records if "error" in r]
    assert [r["id"] for r in failed] == ["q07"] and "rejected" in failed[0]["error"]
    assert all("best" in r for r in records if "error" not in r)
    assert "1 with errors" in result.stderr


def test_shards_merge_into_the_single_run(tmp_path, queries, reference):
    parts = []
    for index in range(3):
        part = tmp_path / f"part{index}.jsonl"
        result = bon(*RUN, queries, "-o", part, "--shard", f"{index}/3", "-q")
        assert result.returncode == 0, result.stderr
        parts.append(part)
    sizes = [len(read_jsonl(p.read_text())) for p in parts]
    assert sum(sizes) == len(QUERIES) and all(sizes)
    merged = tmp_path / "merged.jsonl"
    result = bon("merge", *parts, "-o", merged)
    assert result.returncode == 0, result.stderr
    assert merged.read_bytes() == reference
    incomplete = bon("merge", parts[0], parts[1], "-o", tmp_path / "m2.jsonl", "--input", queries)
    assert incomplete.returncode == 1 and f"{sizes[2]} missing ids" in incomplete.stderr
    twice = bon("merge", parts[0], parts[0], parts[1], parts[2], "-o", tmp_path / "m3.jsonl")
    assert twice.returncode == 1 and f"{sizes[0]} duplicate ids" in twice.stderr
    assert bon(*RUN, queries, "--shard", "3/3").returncode == 2


def test_manifest_records_the_run_and_no_secret(tmp_path, queries):
    out = tmp_path / "out.jsonl"
    secret = "sk-manifest-secret-77"
    result = bon(
        *RUN,
        queries,
        "-o",
        out,
        "--seed",
        "5",
        env={"OPENAI_API_KEY": secret, "MY_KEY": secret},
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["bon_version"]
    assert manifest["settings"]["seed"] == 5 and manifest["settings"]["judge"]["votes"] == 3
    assert manifest["policy"]["model"] == "p" and manifest["judge"]["model"] == "j"
    assert set(manifest["libraries"]) == {"vllm", "transformers", "torch", "openai"}
    assert manifest["counts"]["records_written"] == len(QUERIES)
    assert manifest["started"] and manifest["ended"] and manifest["api_key_env"] is None  # none named
    for text in (json.dumps(manifest), out.read_text(), result.stderr, result.stdout):
        assert secret not in text
    creds = bon(
        *RUN,
        queries,
        "-o",
        tmp_path / "o2.jsonl",
        "--judge-base-url",
        "http://user:hunter2@127.0.0.1:9/v1",
        "--judge-backend",
        "scripted-server",
        "-q",
    )
    assert creds.returncode == 0
    assert "hunter2" not in (tmp_path / "o2.jsonl.manifest.json").read_text()


def test_output_is_byte_identical_whatever_the_concurrency(tmp_path, queries, reference):
    out = tmp_path / "c1.jsonl"
    assert bon(*RUN[:-2], "--concurrency", "1", queries, "-o", out, "-q").returncode == 0
    assert out.read_bytes() == reference


def test_judge_phase_replaying_candidates_from_the_sidecar_matches_the_in_memory_path(queries, reference):
    # Two local models: sampling first, then judging. With -o the judge phase re-reads the
    # input and replays candidates from the sidecar; to stdout they wait in memory.
    to_stdout = bon(*RUN, queries, "-q")
    assert to_stdout.returncode == 0 and to_stdout.stdout.encode() == reference


def test_a_sidecar_written_by_bon_0_1_0_still_resumes(tmp_path):
    """tests/fixtures/sidecar-0.1.0 was made by bon 0.1.0 (commit d934755, before the library
    API) running this command on its scripted engine, SIGKILLed after its first record. The
    current version resumes it: the sidecar's settings keys still match, none of the finished
    model work is asked for again, and the output is the uninterrupted run's, byte for byte."""
    fixture = Path(__file__).parent / "fixtures" / "sidecar-0.1.0"
    queries, out = tmp_path / "q.jsonl", tmp_path / "out.jsonl"
    shutil.copy(fixture / "q.jsonl", queries)
    shutil.copy(fixture / "partial.jsonl", out)
    shutil.copy(fixture / "partial.jsonl.bon-cache.jsonl", tmp_path / "out.jsonl.bon-cache.jsonl")
    cached = {json.loads(line).get("key") for line in (fixture / "partial.jsonl.bon-cache.jsonl").open()}
    log = tmp_path / "requests.log"
    result = bon(
        "run",
        queries,
        "--policy",
        "p",
        "--judge",
        "j",
        "--backend",
        "scripted",
        "-n",
        "3",
        "--votes",
        "3",
        "--concurrency",
        "1",
        "-o",
        out,
        "--resume",
        env={"BON_TEST_LOG": str(log)},
    )
    assert result.returncode == 0, result.stderr
    assert "1 already done" in result.stderr
    assert out.read_bytes() == (fixture / "uninterrupted.jsonl").read_bytes()
    asked = [json.loads(line) for line in log.read_text().splitlines()]
    assert asked and not any(key in cached for pair in asked for key in pair)
