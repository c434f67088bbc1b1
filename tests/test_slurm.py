"""`--shard auto` from the schedulers users run, and the Slurm recipe in examples/slurm/ on a
real single-node Slurm cluster (slurmctld + slurmd + munged started here, scripted judge)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bon.errors import UsageError
from bon.runs.shards import auto_shard, in_shard, parse_shard
from conftest import wait_until, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
HELPER = [sys.executable, str(ROOT / "tests" / "scripted_bon.py")]
QUERIES = [{"id": f"q{i:02d}", "query": f"question number {i}"} for i in range(24)]
OPTIONS = ["--policy", "p", "--judge", "j", "-n", "4", "--votes", "3", "--concurrency", "1", "--seed", "7"]


def slurm_array(task, low, high, count, step=1):
    """The variables Slurm 22.05 sets in an array task (as measured on a real cluster)."""
    return {
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_MIN": str(low),
        "SLURM_ARRAY_TASK_MAX": str(high),
        "SLURM_ARRAY_TASK_COUNT": str(count),
        "SLURM_ARRAY_TASK_STEP": str(step),
        "SLURM_ARRAY_JOB_ID": "18",
    }


@pytest.mark.parametrize(
    "env, shard",
    [
        (slurm_array(2, 0, 3, 4), (2, 4)),
        (slurm_array(3, 1, 3, 3), (2, 3)),  # --array=1-3: task ids shifted by MIN
        (slurm_array(5, 0, 9, 10) | {"RANK": "0", "WORLD_SIZE": "2"}, (5, 10)),  # the array wins
        ({"RANK": "1", "WORLD_SIZE": "2"}, (1, 2)),
    ],
)
def test_shard_auto_reads_the_scheduler(env, shard):
    assert parse_shard("auto", environ=env) == shard


def test_a_kubernetes_indexed_job_needs_the_count_from_shards():
    assert parse_shard("auto", shards=4, environ={"JOB_COMPLETION_INDEX": "3"}) == (3, 4)
    with pytest.raises(UsageError, match="needs --shards N"):
        parse_shard("auto", environ={"JOB_COMPLETION_INDEX": "3"})
    with pytest.raises(UsageError, match="need 0 <= I < N"):
        parse_shard("auto", shards=3, environ={"JOB_COMPLETION_INDEX": "3"})


@pytest.mark.parametrize(
    "env, says",
    [
        (slurm_array(2, 0, 5, 3), "contiguous Slurm array"),  # --array=0,2,5: Slurm still says STEP=1
        (slurm_array(4, 0, 6, 4, step=2), "in steps of 2"),  # --array=0-6:2
        ({}, "found no scheduler"),
        ({"RANK": "0"}, "WORLD_SIZE is not"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "not a whole number"),
    ],
)
def test_shard_auto_refuses_what_would_lose_records(env, says):
    with pytest.raises(UsageError, match=says):
        auto_shard(env)


def test_shards_must_agree_and_explicit_shards_still_parse():
    assert parse_shard("1/3") == (1, 3) and parse_shard(None) is None
    with pytest.raises(UsageError, match="disagree"):
        parse_shard("1/3", shards=4)
    with pytest.raises(UsageError, match="disagrees"):
        parse_shard("auto", shards=5, environ=slurm_array(0, 0, 3, 4))
    with pytest.raises(UsageError, match="--shards goes with --shard auto"):
        parse_shard(None, shards=2)
    ids = [q["id"] for q in QUERIES]
    assert sorted(i for n in range(3) for i in ids if in_shard(i, (n, 3))) == sorted(ids)  # a partition


def test_shard_auto_with_no_scheduler_is_one_line_and_exit_2(tmp_path):
    queries = write_jsonl(tmp_path / "q.jsonl", QUERIES)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SLURM_") and k not in ("RANK", "WORLD_SIZE", "JOB_COMPLETION_INDEX")
    }
    result = subprocess.run(
        HELPER + ["run", str(queries), *OPTIONS, "--shard", "auto"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--shard auto found no scheduler" in result.stderr


# ---- a real Slurm cluster ----


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """A one-node Slurm cluster owned by the test: its own munged socket and key, config,
    state and ports under one temporary directory; stop() ends exactly the daemons it started."""

    def __init__(self, root: Path):
        self.root = root
        self.env = dict(os.environ, SLURM_CONF=str(root / "slurm.conf"))
        self.daemons: list[subprocess.Popen] = []

    def start(self) -> "Cluster":
        missing = [c for c in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(c)]
        assert not missing, f"{', '.join(missing)} missing: `make system-deps` installs slurm-wlm and munge"
        assert os.geteuid() == 0, "the test cluster runs slurmd, which needs root (CI runs as root)"
        munge = self.root / "munge"
        munge.mkdir(mode=0o700)
        (munge / "munge.key").write_bytes(os.urandom(1024))
        (munge / "munge.key").chmod(0o600)
        socket_path = munge / "munge.sock"
        self._daemon(
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={socket_path}",
                f"--key-file={munge / 'munge.key'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={munge / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
            "munged",
        )
        wait_until(socket_path.exists, "munged's socket")
        host = socket.gethostname()
        memory = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) // 2048
        for folder in ("state", "spool"):
            (self.root / folder).mkdir()
        # cred_expire: a requeued job may start only once its old credential has expired
        # (120 s by default); the test requeues one, so keep that short.
        (self.root / "slurm.conf").write_text(f"""\
ClusterName=bontest
SlurmctldHost={host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket_path},cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=1
StateSaveLocation={self.root / "state"}
SlurmdSpoolDir={self.root / "spool"}
SlurmctldPidFile={self.root / "slurmctld.pid"}
SlurmdPidFile={self.root / "slurmd.pid"}
SlurmctldLogFile={self.root / "slurmctld.log"}
SlurmdLogFile={self.root / "slurmd.log"}
SlurmUser=root
ReturnToService=2
NodeName={host} CPUs={os.cpu_count()} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        conf = str(self.root / "slurm.conf")
        self._daemon(["slurmctld", "-D", "-f", conf], "slurmctld")
        self._daemon(["slurmd", "-D", "-f", conf], "slurmd")
        wait_until(lambda: self.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle", "the node to be idle")
        return self

    def _daemon(self, command: list[str], name: str) -> None:
        log = open(self.root / f"{name}.out", "w")
        self.daemons.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env))

    def run(self, *command: str, cwd=None) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, env=self.env, cwd=cwd, timeout=60)

    def queue(self) -> list[str]:
        return self.run("squeue", "-h", "-o", "%i %T").stdout.split("\n")[:-1]

    def stop(self) -> None:
        if len(self.daemons) == 3:  # jobs run under slurmstepd, outside slurmd: cancel them first
            self.run("scancel", "--user", "root")
            wait_until(lambda: not self.queue(), "the test cluster's jobs to end", tries=300)
        for daemon in reversed(self.daemons):
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def test_a_slurm_array_with_a_task_stopped_and_requeued_merges_into_the_single_run(slurm, tmp_path):
    queries = write_jsonl(tmp_path / "q.jsonl", QUERIES)
    reference = tmp_path / "reference.jsonl"
    single = subprocess.run(
        HELPER + ["run", str(queries), "-o", str(reference), "-q", *OPTIONS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert single.returncode == 0, single.stderr

    out = tmp_path / "out"
    slurm.env |= {"BON": " ".join(HELPER), "BON_TEST_LATENCY": "0.2", "BON_LOG_EVERY": "1"}
    submitted = slurm.run(
        str(ROOT / "examples" / "slurm" / "submit.sh"), "3", str(queries), str(out), *OPTIONS, cwd=tmp_path
    )
    assert submitted.returncode == 0, submitted.stderr
    array = submitted.stdout.split()[2]

    part = out / "part.1.jsonl"
    wait_until(lambda: part.exists() and part.read_text().count("\n") >= 2, "task 1 to write records")
    # What Slurm does two minutes before the time limit (--signal=B:TERM@120): SIGTERM to the
    # batch script, which passes it on to bon and requeues the task.
    signalled = slurm.run("scancel", "--batch", "--signal=TERM", f"{array}_1")
    assert signalled.returncode == 0, signalled.stderr
    merged = out / "merged.jsonl"
    wait_until(lambda: merged.exists() and not slurm.queue(), "the array and the merge job to finish", tries=1800)

    assert merged.read_bytes() == reference.read_bytes()
    assert "Restarts=1" in slurm.run("scontrol", "show", "job", f"{array}_1").stdout
    log = (tmp_path / f"bon-{array}_1.log").read_text()
    stopped, _, resumed = log.partition("bon: stopped; continue with: ")
    assert resumed, log  # bon stopped cleanly on the signal and said how to continue…
    assert "already done" in resumed  # …and the requeued task resumed, not restarted
    assert "rec/s" in log  # the status lines of --log-every
    for task in (0, 2):
        assert "Restarts=0" in slurm.run("scontrol", "show", "job", f"{array}_{task}").stdout


def test_the_array_script_reports_the_exit_status_of_a_bon_that_ends_at_once(slurm, tmp_path):
    # bon refuses a missing input before it reads anything (exit 2): the task must fail with 2, not
    # record 0 because bon ended before the script first looked (`kill -0`) at it.
    slurm.env |= {"BON": " ".join(HELPER)}
    script = ROOT / "examples" / "slurm" / "bon-array.sbatch"
    submitted = slurm.run(
        "sbatch",
        "--parsable",
        "--array=0-0",
        str(script),
        str(tmp_path / "absent.jsonl"),
        str(tmp_path / "out"),
        *OPTIONS,
        cwd=tmp_path,
    )
    assert submitted.returncode == 0, submitted.stderr
    array = submitted.stdout.strip().split(";")[0]
    wait_until(lambda: not slurm.queue(), "the task to end", tries=600)
    shown = slurm.run("scontrol", "show", "job", f"{array}_0").stdout
    assert "ExitCode=2:0" in shown, shown
    assert "input file not found" in (tmp_path / f"bon-{array}_0.log").read_text()
