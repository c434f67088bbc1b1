"""Nothing clobbers an output (issue 20): one writer per output, a full disk or a file-size
limit, a read-only or vanished directory, merge's names and locks, status and a reused pid.
Real bon processes on the scripted judge."""

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

import bon
from bon.runs.checkpoint import CheckpointError, process_started
from bon.views.status import job_state
from conftest import SCRIPTED_BON, scripted_bon, wait_for_lines, write_jsonl
from conftest import start_bon as start

QUERIES = [{"id": f"q{i:02d}", "query": f"question number {i}"} for i in range(24)]
RUN = ["run", "--policy", "p", "--judge", "j", "-n", "4", "--votes", "3", "--concurrency", "3"]
# select over long candidates: the output grows far faster than the sidecar (short judge samples)
LONG = [
    {
        "id": f"q{i:02d}",
        "query": f"question {i}",
        "candidates": [f"answer {j} " + "x" * (400 + 37 * j) for j in range(4)],
    }
    for i in range(24)
]
SELECT = ["select", "--judge", "j", "--votes", "3", "--concurrency", "2"]


def whole_records(path: Path) -> int:
    """The file ends on a whole record and every line is one; how many."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), data[-80:]
    return len([json.loads(line) for line in data.splitlines()])


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("bon: error:")]


@pytest.fixture
def queries(tmp_path):
    return write_jsonl(tmp_path / "q.jsonl", QUERIES)


@pytest.fixture
def reference(tmp_path, queries):
    out = tmp_path / "reference.jsonl"
    assert scripted_bon(*RUN, queries, "-o", out, "-q").returncode == 0
    return out.read_bytes()


# ---- one writer per output


def test_a_second_run_on_one_output_is_refused_and_a_killed_holder_leaves_nothing_to_clean(
    tmp_path, queries, reference
):
    out = tmp_path / "out.jsonl"
    first = start(*RUN, queries, "-o", out, "-q", env={"BON_TEST_LATENCY": "0.3"})
    wait_for_lines(out, 2, first)
    holder = f"pid {first.pid} on {socket.gethostname()}"

    second = scripted_bon(*RUN, queries, "-o", out, "--resume")
    assert second.returncode == 2
    assert error_lines(second.stderr) == second.stderr.splitlines()  # one line, nothing else
    assert f"{out} is being written by {holder}" in second.stderr
    merged_into = scripted_bon("merge", queries, "-o", out, "--overwrite")  # merge respects the writer of OUT…
    assert merged_into.returncode == 2 and holder in merged_into.stderr
    merged_from = scripted_bon("merge", out, "-o", tmp_path / "m.jsonl", "--input", queries)  # …and of a shard
    assert merged_from.returncode == 2 and f"{out} is still being written by {holder}" in merged_from.stderr
    assert not (tmp_path / "m.jsonl").exists()

    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (tmp_path / "out.jsonl.lock").exists()  # stale text, but the kernel let the lock go
    resumed = scripted_bon(*RUN, queries, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == reference
    assert not (tmp_path / "out.jsonl.lock").exists()  # a clean end removes it


def test_a_library_run_takes_the_lock_too(tmp_path, queries, scripted):
    out = tmp_path / "out.jsonl"
    holder = start(*RUN, queries, "-o", out, "-q", env={"BON_TEST_LATENCY": "0.3"})
    try:
        wait_for_lines(out, 1, holder)
        judge = bon.Judge("j", backend="scripted")
        with pytest.raises(CheckpointError, match=f"being written by pid {holder.pid} on "):
            list(bon.run(QUERIES, policy=bon.Policy("p", backend="scripted"), judge=judge, output=out, resume=True))
    finally:
        holder.kill()
        holder.wait()
    assert not scripted.created  # refused before any engine was made


# ---- a full disk, a file-size limit, a read-only or vanished directory


def limited(size: int):
    """preexec_fn: files this process writes may not grow past `size` bytes (ulimit -f); a write
    past it fails with EFBIG instead of killing the process (SIGXFSZ ignored)."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

    return apply


def assert_stopped_whole_and_resumes(out: Path, stopped, says: str, resume_args, reference: bytes):
    """One error line naming the file and what went wrong, the resume line, exit 1; the output
    and the sidecar end on whole lines; a resume ends byte-identical to an uninterrupted run."""
    assert stopped.returncode == 1, stopped.stderr
    (line,) = error_lines(stopped.stderr)
    assert line.startswith(f"bon: error: {says} writing {out}"), stopped.stderr
    assert "bon: continue with: bon " in stopped.stderr
    written = whole_records(out)
    assert reference.startswith(out.read_bytes())
    sidecar = out.with_name(out.name + ".bon-cache")
    assert sidecar.read_bytes().endswith(b"\n")
    assert all(json.loads(entry) for entry in sidecar.read_bytes().splitlines())
    resumed = scripted_bon(*resume_args, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{written} already done" in resumed.stderr or written == 0
    assert out.read_bytes() == reference


def test_a_file_size_limit_mid_run_is_one_line_and_a_resume_ends_byte_identical(tmp_path):
    # No root needed: RLIMIT_FSIZE makes write() fail part-way (EFBIG) exactly where a full disk does
    # (ENOSPC); both reach the same code. test_a_full_disk_* below fills a real tmpfs as root.
    source = write_jsonl(tmp_path / "long.jsonl", LONG)
    reference = tmp_path / "reference.jsonl"
    assert scripted_bon(*SELECT, source, "-o", reference, "-q").returncode == 0
    out = tmp_path / "out.jsonl"
    limit = len(reference.read_bytes()) // 2 + 7  # mid-record
    stopped = scripted_bon(*SELECT, source, "-o", out, "-q", preexec_fn=limited(limit))
    assert_stopped_whole_and_resumes(out, stopped, "file too large", [*SELECT, source], reference.read_bytes())


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs (mounting needs root: CI runs as root, `make check` deselects this)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_is_one_line_and_a_resume_after_space_is_freed_ends_byte_identical(tmp_path, small_tmpfs):
    rows = [dict(r, candidates=[c * 6 for c in r["candidates"]]) for r in LONG]  # ~1 MB of output
    source = write_jsonl(tmp_path / "long.jsonl", rows)
    reference = tmp_path / "reference.jsonl"
    assert scripted_bon(*SELECT, source, "-o", reference, "-q").returncode == 0
    out = small_tmpfs / "out.jsonl"
    stopped = scripted_bon(*SELECT, source, "-o", out, "-q")
    assert stopped.returncode == 1
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_tmpfs)], check=True)  # space freed
    assert_stopped_whole_and_resumes(out, stopped, "no space left on device", [*SELECT, source], reference.read_bytes())


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody may write: by its mode for a user, by a read-only mount for root."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_read_only_output_directory_is_one_line(tmp_path, queries, read_only_dir):
    out = read_only_dir / "out.jsonl"
    result = scripted_bon(*RUN, queries, "-o", out)
    assert result.returncode == 1
    (line,) = error_lines(result.stderr)
    reason = "read-only file system" if os.geteuid() == 0 else "permission denied"
    assert line == f"bon: error: {reason} writing {out}"


def test_an_output_directory_that_vanishes_mid_run_is_one_line(tmp_path, queries, reference):
    folder = tmp_path / "gone"
    folder.mkdir()
    out = folder / "out.jsonl"
    running = start(*RUN, queries, "-o", out, "-q", env={"BON_TEST_LATENCY": "0.02"})
    wait_for_lines(out, 2, running)
    shutil.rmtree(folder)
    _, stderr = running.communicate(timeout=120)
    assert running.returncode == 1, stderr
    (line,) = error_lines(stderr)
    assert line.startswith("bon: error: no such file or directory") and "writing" in line
    folder.mkdir()  # back: the run starts over (its files went with the directory)
    resumed = scripted_bon(*RUN, queries, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == reference


# ---- merge: names, streaming


def test_the_merge_glob_takes_shard_outputs_only(tmp_path, queries, reference):
    out = tmp_path / "out"
    out.mkdir()
    for index in range(2):
        result = scripted_bon(*RUN, queries, "-o", out / f"part.{index}.jsonl", "--shard", f"{index}/2", "-q")
        assert result.returncode == 0
    stopped = start(*RUN, queries, "-o", out / "part.2.jsonl", "-q", env={"BON_TEST_LATENCY": "0.05"})
    wait_for_lines(out / "part.2.jsonl", 1, stopped)
    stopped.kill()  # leaves its sidecar, manifest and lock file beside its output
    stopped.wait()
    assert sorted(p.name for p in out.glob("part.*.jsonl")) == ["part.0.jsonl", "part.1.jsonl", "part.2.jsonl"]
    assert {"part.2.jsonl.bon-cache", "part.2.jsonl.manifest.json", "part.2.jsonl.lock"} <= {
        p.name for p in out.iterdir()
    }
    legacy = out / "part.0.jsonl.bon-cache.jsonl"  # bon 0.1's sidecar name, still matched by old globs
    legacy.write_text('{"bon_cache": 1, "settings": {}}\n')
    refused = scripted_bon("merge", out / "part.0.jsonl", legacy, "-o", tmp_path / "m.jsonl", "--input", queries)
    assert refused.returncode == 2 and "is a run's sidecar" in refused.stderr


def test_merge_output_is_the_single_run_whatever_the_shards_order(tmp_path, queries, reference):
    parts = []
    for index in range(3):
        part = tmp_path / f"part{index}.jsonl"
        assert scripted_bon(*RUN, queries, "-o", part, "--shard", f"{index}/3", "-q").returncode == 0
        parts.append(part)
    shuffled = tmp_path / "shuffled.jsonl"  # not in input order: the index, not the order, finds records
    shuffled.write_bytes(b"".join(reversed(parts[1].read_bytes().splitlines(keepends=True))))
    merged = tmp_path / "merged.jsonl"
    result = scripted_bon("merge", parts[0], shuffled, parts[2], "-o", merged, "--input", queries)
    assert result.returncode == 0, result.stderr
    assert merged.read_bytes() == reference
    assert not (tmp_path / "merged.jsonl.partial").exists() and not (tmp_path / "merged.jsonl.lock").exists()


# ---- status


def test_status_tells_a_reused_pid_from_the_run(tmp_path):
    out = tmp_path / "out.jsonl"
    mine = process_started(os.getpid())
    manifest = {"status": "running", "host": socket.gethostname(), "pid": os.getpid(), "pid_started": mine}
    assert job_state(manifest) == ("running", "")
    reused = manifest | {"pid_started": mine - 1}  # a live pid, but not the process that wrote the manifest
    state, why = job_state(reused)
    assert state == "interrupted" and "its pid now belongs to another process" in why
    (tmp_path / "out.jsonl.manifest.json").write_text(json.dumps(reused | {"command": ["run", "q.jsonl"]}))
    shown = scripted_bon("status", out)
    assert "interrupted (process" in shown.stdout and "continue with: bon run q.jsonl --resume" in shown.stdout


def test_records_on_stdout_end_in_one_line_on_a_full_disk_and_quietly_when_the_reader_goes(tmp_path):
    """`bon select … > out.jsonl` on a full disk (/dev/full) is one line, exit 1, no traceback;
    `bon select … | head -1` stops the run once the reader has gone (exit 141, like SIGPIPE)."""
    # Far more than a pipe's buffer holds (64 KiB): the run cannot end before the reader goes.
    src = write_jsonl(tmp_path / "q.jsonl", [dict(r, id=f"{r['id']}-{k}") for k in range(10) for r in LONG])
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            SCRIPTED_BON + SELECT + [str(src), "-q"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120
        )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == "bon: error: no space left on device writing stdout"

    process = start(*SELECT, src)
    first = process.stdout.readline()
    process.stdout.close()  # the reader goes away after one record
    process.wait(timeout=120)
    stderr = process.stderr.read()
    assert json.loads(first)["id"] == "q00-0"
    assert process.returncode == 128 + signal.SIGPIPE, stderr
    assert "Traceback" not in stderr and "stdout was closed by its reader; stopped" in stderr
