"""What a run is: records in, candidates sampled, tournaments judged, records out.

`Run` is the one implementation behind `bon.run` / `bon.arun` and the `run`, `sample` and
`select` commands. It validates the input before any model loads, owns the output file,
its sidecar of finished model work and its manifest (resume), and raises plain errors
for its caller to report. It never prints: progress goes to the hooks it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any, cast

from bon import config as defaults
from bon.config import RunConfig, TournamentConfig, validity_key
from bon.engines.base import Engine
from bon.errors import OutputError, UsageError, redact
from bon.io.output import SCHEMA_VERSION
from bon.io.records import FieldNames, InputError, LineFile, Record, RecordWriter, read_records
from bon.io.sources import input_rows
from bon.runs.checkpoint import (
    CachedEngine,
    Manifest,
    ReplayEngine,
    Sidecar,
    manifest_path,
    open_output,
    sidecar_path,
)
from bon.runs.judge import Sampler
from bon.runs.lock import OutputLock
from bon.runs.pipeline import LazyEngine, Pipeline, RunStats
from bon.runs.roles import Judge, Policy, Role, run_sync, tournament_config
from bon.runs.shards import in_shard, shard_text


class Run:
    """One run over `records`: a path (JSONL, `-` for stdin, Parquet, a saved Hugging Face
    dataset folder, `hf:ORG/NAME`) or an iterable of input dicts.

    `policy` alone samples, `judge` alone selects (records must carry candidates), both do
    both. Iterate it (`async for out in run`) for the output records in input order.
    """

    def __init__(
        self,
        records: str | Path | Iterable[dict[str, Any]],
        *,
        policy: Policy | None = None,
        judge: Judge | None = None,
        config: RunConfig = RunConfig(),
        tournament: TournamentConfig | None = None,
        bad_line: Callable[[InputError, str], None] | None = None,
        progress: Any = None,
        command: list[str] | None = None,
        update_every: float = defaults.DEFAULT_LOG_EVERY,
    ):
        if policy is None and judge is None:
            raise UsageError("a run needs a policy (to sample), a judge (to select) or both")
        if (config.resume or config.overwrite) and config.output is None:
            raise UsageError("--resume and --overwrite need -o OUTPUT")
        if config.on_bad_line not in ("fail", "skip"):
            raise UsageError(f"on_bad_line must be fail or skip, got {config.on_bad_line!r}")
        self.source = str(records) if isinstance(records, (str, Path)) else None
        self._items = None if self.source is not None else records
        self.policy, self.judge, self.config = policy, judge, config
        self.tournament = tournament or TournamentConfig(seed=config.seed)
        self.fields = FieldNames(query=config.query_field, candidates=config.candidates_field)
        self.bad_line = (bad_line or _log_bad_line) if config.on_bad_line == "skip" else None
        self.progress = progress
        self.command = command
        self.update_every = update_every  # seconds between the manifest's progress updates
        self.done: set = set()
        self.total: int | None = None
        self.status = "failed"
        self.torn_line_dropped = False
        self._sidecar: Sidecar | None = None
        self._manifest: Manifest | None = None
        self._stream: LineFile | None = None
        self._lock: OutputLock | None = None
        self.pipeline: Pipeline | None = None

    # ---- before any model loads ----

    def records(self, report_bad=None) -> Iterator[Record]:
        """The records to process: valid, in this shard, not already in OUTPUT. Input dicts
        are checked like JSONL lines (numbered from 1; ids default to the position)."""
        rows: Iterator[bytes | str | dict[str, Any]]
        if self.source is not None:
            rows = input_rows(self.source, self.config.split, self.config.config)
        else:
            rows = iter(cast(Iterable[dict[str, Any]], self._items))  # given as an iterable, not a path
        for record in read_records(rows, self.fields, report_bad):
            if self.judge is not None and self.policy is None and record.candidates is None:
                error = InputError(
                    record.line,
                    f"missing `{self.fields.candidates}` (bon select judges existing candidates; bon run samples them)",
                )
                if report_bad is None:
                    raise error
                report_bad(error, "")
                continue
            if record.id in self.done or not in_shard(record.id, self.config.shard):
                continue
            yield record

    def _quiet_bad(self):
        return (lambda error, text: None) if self.bad_line else None

    def check(self) -> int | None:
        """Validate a file's every line (a bad one costs no model work); the count to process."""
        if self.source is not None and self.source != "-":
            self.total = sum(1 for _ in self.records(self._quiet_bad()))
        return self.total

    def settings(self) -> dict[str, Any]:
        """What makes finished work reusable on resume (the sidecar checks it), in the keys
        earlier versions wrote, so their sidecars still resume."""
        out: dict[str, Any] = {
            "seed": self.config.seed,
            "query_field": self.config.query_field,
            "candidates_field": self.config.candidates_field,
        }
        if self.policy is not None:
            p = self.policy
            out["policy"] = {
                "policy": p.config.model,
                "n": self.config.n,
                **_decoding(p.sampling),
                "system": p.system,
                "engine_args": _engine_args_text(p),
            }
            out["policy_template"] = _template_hash(p.template)
        if self.judge is not None:
            j, t = self.judge, self.tournament
            out["judge"] = {
                "judge": j.config.model,
                **validity_key(t, leave_out=("seed",)),  # seed: above
                **_decoding(j.sampling),
                "engine_args": _engine_args_text(j),
            }
            if j.escalate is not None:  # only when there is one: sidecars without stay valid
                out["judge"]["escalate_judge"] = {
                    "judge": j.escalate.config.model,
                    "engine_args": _engine_args_text(j.escalate),
                }
            out["judge_template"] = _template_hash(j.template)
        return out

    def claim_output(self) -> None:
        """Take OUTPUT's one-writer lock: while another process writes OUTPUT this run is
        refused at once (CheckpointError), before its input is read. `close` lets it go."""
        if self.config.output is not None and self._lock is None:
            lock = OutputLock(Path(self.config.output))
            lock.acquire()
            self._lock = lock

    def open(self) -> None:
        """Open OUTPUT, its sidecar and manifest (or nothing, without an output)."""
        if self.config.output is None:
            return
        self.claim_output()
        output = Path(self.config.output)
        self._stream, self.done, self.torn_line_dropped = open_output(output, self.config.resume, self.config.overwrite)
        settings = self.settings()
        self._sidecar = Sidecar(sidecar_path(output), settings, self.config.resume)
        escalate = self.judge.escalate if self.judge else None
        self._manifest = Manifest(
            manifest_path(output),
            {
                "schema_version": SCHEMA_VERSION,  # of the records in OUTPUT (bon.io.output)
                "command": self.command,
                "input": self.source if self.source in (None, "-") else str(Path(self.source).resolve()),
                "output": str(output.resolve()),
                "shard": shard_text(self.config.shard),
                "policy": _manifest_role(self.policy),
                "judge": _manifest_role(self.judge),
                **({"escalate_judge": _manifest_role(escalate)} if escalate else {}),  # --escalate-judge
                # None: none named, so only api.openai.com was sent a key ($OPENAI_API_KEY)
                "api_key_env": _api_key_env(self.policy) or _api_key_env(self.judge),
                "settings": settings,
                "engine_log": next(
                    (r.config.log_file for r in (self.policy, self.judge) if r and r.config.log_file), None
                ),
            },
            update_every=self.update_every,
        )

    # ---- the run ----

    def _lazy(self, role: Role, name: str, release: bool) -> LazyEngine:
        sidecar = self._sidecar

        async def make():
            engine = await role.engine()
            _count_streamed_tokens(engine, getattr(self.progress, "on_tokens", None))
            return CachedEngine(engine, sidecar, name) if sidecar else engine

        return LazyEngine(make, role.aclose if release else None)

    def _build(self) -> Pipeline:
        policy, judge, config = self.policy, self.judge, self.config
        shared = policy is not None and judge is not None and policy.config == judge.config
        phased = bool(policy and judge and not shared and policy.local and judge.local)
        policy_engine = self._lazy(policy, "policy", release=phased) if policy else None
        judge_engine = policy_engine if shared else (self._lazy(judge, "judge", False) if judge else None)
        progress = self.progress
        make_sampler = make_referee = None
        if policy is not None:
            on_policy = getattr(progress, "on_policy", None)

            def make_sampler(engine):
                return Sampler(
                    engine, policy.template, policy.sampling, config.n, config.seed, policy.system, on_policy
                )

        if judge is not None:
            on_generation = getattr(progress, "on_generation", None)
            on_match = getattr(progress, "on_match", None)
            # The escalation judge's replies go to the sidecar too (role "escalate"), so a
            # resume reuses them; its engine still loads on the first match in doubt.
            escalate = self._lazy(judge.escalate, "escalate", False) if judge.escalate and self._sidecar else None

            def make_referee(engine):
                return judge.referee(
                    engine, self.tournament, on_generation, on_match, escalate.get if escalate else None
                )

        pipeline = Pipeline(
            writer=RecordWriter(self._stream) if self._stream else None,
            concurrency=config.concurrency,
            make_sampler=make_sampler,
            make_judge=make_referee,
            policy=policy_engine,
            judge=judge_engine,
            phased=phased,
            progress=getattr(progress, "on_record", None),
        )
        pipeline.stats.resumed = len(self.done)
        if phased and self._sidecar and self.source not in (None, "-"):
            assert policy is not None  # phased: both roles are there
            sidecar, name = self._sidecar, f"{policy.config.backend}:{policy.config.model}"
            pipeline.replay = lambda: self.records(self._quiet_bad())

            async def replay_engine():
                return ReplayEngine(sidecar, "policy", name)

            pipeline.replay_policy = LazyEngine(replay_engine)
        return pipeline

    async def stream(self) -> AsyncGenerator[dict[str, Any], None]:
        """The output records in input order, each written to OUTPUT first when there is one."""
        self.pipeline = pipeline = self._build()
        records = self.records(self.bad_line)
        source = _threaded(records) if self.source == "-" else records
        async with contextlib.aclosing(pipeline.stream(source)) as outputs:  # closed with this one
            async for out in outputs:
                yield out
        self.status = "interrupted" if pipeline.stats.interrupted else "complete"

    def request_stop(self) -> None:
        """Start nothing new; what is finished in order is still written (signal handlers)."""
        if self.pipeline is not None:
            self.pipeline.request_stop()

    @property
    def manifest(self) -> Manifest | None:
        return self._manifest

    @property
    def stats(self) -> RunStats:
        return self.pipeline.stats if self.pipeline else RunStats(resumed=len(self.done))

    def close(self, bad_lines_skipped: int = 0) -> None:
        """Close the files: the sidecar goes when the run completed; the manifest says how it ended.

        Each file is closed whatever happens to the others, and OUTPUT's lock goes last. One that
        cannot be finished (a full disk) raises OutputError then — unless the run had already
        failed: its own error is the one to report."""
        stats = self.stats
        stats.skipped = bad_lines_skipped
        outages = [role.outages() for role in (self.policy, self.judge) if role is not None]
        stats.outages = (sum(down for down, _ in outages), sum(back for _, back in outages))
        with contextlib.suppress(OutputError) if self.status == "failed" else contextlib.nullcontext():
            with contextlib.ExitStack() as closing:  # its callbacks run last-registered first
                if self._lock:
                    closing.callback(self._lock.release)
                if self._stream:
                    closing.callback(self._stream.close)
                if self._manifest:
                    counts = {
                        "records_written": stats.records,
                        "already_done": stats.resumed,
                        "sampled": stats.sampled,
                        "records_with_errors": stats.errors,
                        "bad_lines_skipped": stats.skipped,
                        "endpoint_outages": {"down": stats.outages[0], "back": stats.outages[1]},
                        "usage": stats.usage.to_json(),
                    }
                    closing.callback(self._manifest.finish, self.status, counts, self._progress_counters())
                if self._sidecar:
                    closing.callback(self._sidecar.close, remove=self.status == "complete")

    def _progress_counters(self) -> dict[str, Any] | None:
        counters = getattr(self.progress, "counters", None)
        return counters() if counters else None

    async def __aiter__(self) -> AsyncGenerator[dict[str, Any], None]:
        """check, open, stream, close: the whole run for library callers."""
        self.claim_output()
        try:
            self.check()
            self.open()
            async with contextlib.aclosing(self.stream()) as outputs:
                async for out in outputs:
                    yield out
        except (GeneratorExit, asyncio.CancelledError):  # the caller stopped early: resumable
            self.status = "interrupted"
            raise
        finally:
            self.close()


def _count_streamed_tokens(engine: Engine, on_tokens: Callable[[int], None] | None) -> None:
    """Hand the progress display every token as it streams in (engines that can: the openai
    and vllm backends), so tokens/s moves while long generations run."""
    if on_tokens is not None:
        engine.count_tokens_with(on_tokens)


def _log_bad_line(error: InputError, text: str) -> None:
    logging.getLogger("bon").warning("skipped line %s: %s", error.line, error.problem)


async def _threaded(iterator: Iterator):
    """Pull a blocking iterator (stdin) on a thread so engines keep working meanwhile.

    A daemon thread of its own, not asyncio's executor: asyncio waits for its executor's
    threads at exit, so a stop while stdin is still open (the program upstream has not
    finished) would hang until that program wrote another line.
    """
    loop = asyncio.get_running_loop()
    end = object()
    wanted: queue.SimpleQueue = queue.SimpleQueue()  # a future per item asked for; None: stop

    def pull() -> None:
        while (future := wanted.get()) is not None:
            try:
                outcome = (future.set_result, next(iterator, end))
            except Exception as exc:  # a bad line: raised where the item was asked for
                outcome = (future.set_exception, exc)
            try:
                loop.call_soon_threadsafe(_fulfil, future, *outcome)
            except RuntimeError:  # the loop has closed: nobody is waiting
                return

    threading.Thread(target=pull, name="bon-stdin", daemon=True).start()
    try:
        while True:
            future = loop.create_future()
            wanted.put(future)
            if (item := await future) is end:
                return
            yield item
    finally:
        wanted.put(None)


def _fulfil(future: asyncio.Future, setter, value) -> None:
    if not future.cancelled():
        setter(value)


def _decoding(sampling) -> dict[str, Any]:
    return {"temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_tokens}


def _template_hash(template) -> str:
    return hashlib.sha256((template.system + "\0" + template.user).encode()).hexdigest()


def _engine_args_text(role: Role) -> str | None:
    """vLLM's free-form engine arguments as the sidecar has always recorded them (JSON text)."""
    extra = dict(getattr(role.config.options, "engine_args", None) or {})
    return json.dumps(extra) if extra else None


def _manifest_role(role: Role | None) -> dict[str, Any] | None:
    if role is None:
        return None
    urls = getattr(role.config.options, "base_url", ()) or ()
    return {"backend": role.config.backend, "model": role.config.model, "base_urls": [redact(u) for u in urls]}


def _api_key_env(role: Role | None) -> str | None:
    return getattr(role.config.options, "api_key_env", None) if role else None


# ---- the public functions ----

RUN_KEYS = {f.name for f in fields(RunConfig)}
TOURNAMENT_KEYS = {f.name for f in fields(TournamentConfig)} - {"seed"}


def make_run(records, policy: Policy | None = None, judge: Judge | None = None, **settings: Any) -> Run:
    unknown = set(settings) - RUN_KEYS - TOURNAMENT_KEYS
    if unknown:
        raise UsageError(f"unknown setting{'s' if len(unknown) > 1 else ''}: {', '.join(sorted(unknown))}")
    if settings.get("output") is not None:
        settings["output"] = Path(settings["output"])
    config = RunConfig(**{k: v for k, v in settings.items() if k in RUN_KEYS})
    tournament = tournament_config(seed=config.seed, **{k: v for k, v in settings.items() if k in TOURNAMENT_KEYS})
    return Run(records, policy=policy, judge=judge, config=config, tournament=tournament)


async def arun(
    records, policy: Policy | None = None, judge: Judge | None = None, **settings: Any
) -> AsyncGenerator[dict[str, Any], None]:
    """Sample and/or select over `records`, yielding each output record in input order.

    Settings are keywords with the CLI's defaults: n, seed, votes, max_votes, strategy,
    max_pairs, early_stop, group_by_answer, concurrency, query_field, candidates_field,
    output, resume, overwrite, on_bad_line, shard.
    """
    async with contextlib.aclosing(make_run(records, policy, judge, **settings).__aiter__()) as outputs:
        async for out in outputs:  # closed at once when the caller stops early: files end clean
            yield out


def run(records, policy: Policy | None = None, judge: Judge | None = None, **settings: Any) -> Iterator[dict[str, Any]]:
    """The sync form of `arun` (works where an event loop already runs, e.g. Jupyter)."""
    stream = arun(records, policy, judge, **settings)
    end = object()

    async def step():
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return end

    try:
        while (out := run_sync(step())) is not end:
            yield out
    finally:
        run_sync(stream.aclose())
