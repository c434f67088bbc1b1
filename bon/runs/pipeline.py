"""Phases, the concurrency window, ordered output.

Each record is a coroutine (sample, then its tournament); up to `concurrency` of them are
in flight and the engines batch whatever they have pending. Records are written in input
order, each as soon as it and every record before it are done.

Two local engines (policy and judge on the same GPUs) run as sequential phases: all
sampling first, then the policy engine is closed before the judge engine loads. A shared
engine, or remote servers, stream records straight through both steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bon.engines.base import Completion, Engine, EngineWrapper, Generation, GenerationRequest, RecordError
from bon.io.records import Record, RecordWriter, output_record
from bon.io.stats import Summary
from bon.runs.judge import Referee, Sampler, Usage
from bon.tasks import settle

T = TypeVar("T")
R = TypeVar("R")

_END = object()
WINDOW_PER_SLOT = 4  # the ordered-output window holds this many records per concurrency slot


async def ordered_map(
    source: AsyncIterable[T],
    fn: Callable[[T], Awaitable[R]],
    concurrency: int,
    stop: asyncio.Event | None = None,
) -> AsyncGenerator[R, None]:
    """fn over source, at most `concurrency` calls running, results in source order.

    An error from `source` (a bad input line) or from `fn` surfaces at its place in the
    order, after every earlier result has been yielded. Once `stop` is set, nothing new
    starts; results already finished in order are still yielded. However it ends (the end,
    an error, a stop, the caller's cancel or early close), every call it started has ended
    before it returns: an engine closed after it never sees another request.
    """
    running = asyncio.Semaphore(concurrency)
    # Finished-but-unwritten results wait here behind a slow head; the bound keeps memory flat.
    window: asyncio.Queue = asyncio.Queue(maxsize=WINDOW_PER_SLOT * concurrency)
    started: set[asyncio.Future] = set()  # every call not yet yielded, owned here until it ends
    loop = asyncio.get_running_loop()
    stopped = asyncio.ensure_future(stop.wait()) if stop is not None else loop.create_future()

    async def guarded(item: T) -> R:
        async with running:
            if stopped.done():  # stopped while it waited for its turn: it starts nothing
                raise asyncio.CancelledError
            return await fn(item)

    async def produce() -> None:
        items: contextlib.AbstractAsyncContextManager[Any] = (
            contextlib.aclosing(source) if isinstance(source, AsyncGenerator) else contextlib.nullcontext(source)
        )
        try:
            async with items:  # closed here, not by the garbage collector after the loop is gone
                async for item in source:
                    if stopped.done():
                        break
                    task = asyncio.ensure_future(guarded(item))
                    started.add(task)
                    await window.put(task)
        except Exception as exc:  # delivered in order, after the records before it
            failed = loop.create_future()
            failed.set_exception(exc)
            started.add(failed)
            await window.put(failed)
        await window.put(_END)

    producer = asyncio.ensure_future(produce())
    getting: asyncio.Future | None = None
    try:
        while True:
            if window.empty():  # waiting for input (stdin may be a pipe that stays open): a stop ends the wait
                getting = asyncio.ensure_future(window.get())
                await asyncio.wait({getting, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    break
                task = getting.result()
            else:
                task = window.get_nowait()
            if task is _END:
                break
            if not task.done():
                await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stopped.done() and (not task.done() or task.cancelled()):
                break
            result = await task
            started.discard(task)
            yield result
    finally:
        await settle([producer, stopped, *started, *([getting] if getting else [])])


def iterate(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterable[T]:
    """`items` as an async iterable: an async one as it is, so whoever closes it closes it
    (stdin's reader included), not a wrapper around it."""
    return items if isinstance(items, AsyncIterable) else _from_sync(items)


async def _from_sync(items: Iterable[T]) -> AsyncGenerator[T, None]:
    for item in items:
        yield item


class LazyEngine:
    """Loads its engine on first use, so a run that needs no policy never loads one.

    `release` (optional) frees the engine when the pipeline is done with it — a policy
    engine before the judge loads; without it the engine's owner closes it.
    """

    def __init__(self, factory: Callable[[], Awaitable[Engine]], release: Callable[[], Awaitable[None]] | None = None):
        self._factory = factory
        self._release = release
        self._engine: Engine | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Engine:
        async with self._lock:
            if self._engine is None:
                self._engine = await self._factory()
            return self._engine

    async def close(self) -> None:
        if self._engine is not None and self._release is not None:
            await self._release()
        self._engine = None


class StopGate(EngineWrapper):
    """The engine as a record sees it: once the run is stopping it sends nothing more.

    A stop is noticed by the concurrency window on its next turn; until then, a match
    whose vote just came back would start its next request. Here that request is
    cancelled instead, so nothing reaches an engine after the stop.
    """

    def __init__(self, engine: Engine, stop: asyncio.Event | None):
        super().__init__(engine)
        self._stop = stop

    def _check(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise asyncio.CancelledError

    async def generate(self, request: GenerationRequest) -> Generation:
        self._check()
        return await self.inner.generate(request)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[str | Completion, None]:
        self._check()
        async for piece in self.inner.stream(request):
            yield piece

    async def close(self) -> None:  # a record does not own the engine: the pipeline closes it
        pass


@dataclass
class RunStats:
    sampled: int = 0
    skipped: int = 0  # bad input lines skipped (--on-bad-line skip)
    resumed: int = 0  # records already in OUTPUT (--resume)
    interrupted: bool = False
    usage: Usage = field(default_factory=Usage)
    judged: Summary = field(default_factory=Summary)
    started: float = field(default_factory=time.monotonic)
    outages: tuple[int, int] = (0, 0)  # (server endpoints gone down, come back), over the run

    @property
    def records(self) -> int:
        """Records written in this run."""
        return self.judged.records

    @property
    def errors(self) -> int:
        """Records written with an `error` field."""
        return self.judged.errors

    def summary(self) -> str:
        """One line for stderr at the end of a run."""
        parts = [self.judged.line()]
        if self.resumed:
            parts.append(f"{self.resumed} already done")
        if self.skipped:
            parts.append(f"{self.skipped} bad lines skipped")
        if self.sampled:
            parts.append(f"{self.sampled} sampled")
        if self.usage.judge_completion_tokens:
            parts.append(f"{self.usage.judge_completion_tokens} judge tokens")
        if self.outages[0]:
            down, back = self.outages
            parts.append(f"{down} endpoint outage{'s' if down > 1 else ''} ({back} back)")
        parts.append(f"{time.monotonic() - self.started:.1f}s")
        return "bon: " + ", ".join(parts)


@dataclass
class Pipeline:
    """What a command asks for: sample (if a sampler is given) and/or judge (if a judge is)."""

    writer: RecordWriter | None
    concurrency: int
    make_sampler: Callable[[Engine], Sampler] | None = None
    make_judge: Callable[[Engine], Referee] | None = None
    policy: LazyEngine | None = None
    judge: LazyEngine | None = None
    phased: bool = False  # sample everything, close the policy engine, then judge
    # With a file and a sidecar, the judge phase re-reads the input and replays the sampled
    # candidates from the sidecar (memory stays flat); otherwise sampled records wait in memory.
    replay: Callable[[], Iterable[Record]] | None = None
    replay_policy: LazyEngine | None = None
    progress: Callable[[Record], None] | None = None
    stats: RunStats = field(default_factory=RunStats)
    _stop: asyncio.Event | None = None

    async def _sample(self, record: Record) -> Record:
        if record.candidates is None and self.make_sampler is not None:
            assert self.policy is not None
            try:
                await self.make_sampler(StopGate(await self.policy.get(), self._stop)).sample(record)
            except RecordError as exc:
                record.output["error"] = str(exc)
                return record
            self.stats.sampled += 1
        return record

    async def _judge(self, record: Record) -> Record:
        if self.make_judge is not None and "error" not in record.output:
            assert self.judge is not None
            judge = self.make_judge(StopGate(await self.judge.get(), self._stop))
            try:
                self.stats.usage.add(await judge.select(record))
            except RecordError as exc:
                record.output["error"] = str(exc)
        return record

    async def _sample_and_judge(self, record: Record) -> Record:
        return await self._judge(await self._sample(record))

    def request_stop(self) -> None:
        """Stop starting work; what is finished in order is still written (signal handlers)."""
        self.stats.interrupted = True
        if self._stop is not None:
            self._stop.set()

    def _emit(self, record: Record) -> dict:
        out = output_record(record)
        if self.writer is not None:
            self.writer.write(out)
        self.stats.judged.add(out)
        if self.progress:
            self.progress(record)
        return out

    async def run(self, records: Iterable[Record] | AsyncIterable[Record]) -> RunStats:
        """Every record through, nothing yielded (writing is the writer's): the run's stats."""
        async for _ in self.stream(records):
            pass
        return self.stats

    def _window(self, records, step):
        """`step` over records in order through the concurrency window, closed on leaving the
        `async with` (whatever ends it), so no record's work outlives it into the engines' close."""
        return contextlib.aclosing(ordered_map(iterate(records), step, self.concurrency, self._stop))

    async def stream(self, records: Iterable[Record] | AsyncIterable[Record]) -> AsyncGenerator[dict, None]:
        """The output records in input order, each written (when there is a writer) before it is yielded."""
        self._stop = stop = asyncio.Event()
        if self.stats.interrupted:
            stop.set()
        try:
            if self.phased and self.make_sampler and self.make_judge and self.replay is not None:
                async with self._window(records, self._sample) as written:
                    async for _ in written:
                        pass  # each record's candidates are in the sidecar now
                if self.policy:
                    await self.policy.close()  # free its memory before the judge loads
                if not stop.is_set():
                    self.stats.sampled, self.policy = 0, self.replay_policy
                    async with self._window(self.replay(), self._sample_and_judge) as judged:
                        async for record in judged:
                            yield self._emit(record)
            elif self.phased and self.make_sampler and self.make_judge:
                sampled: list[Record] = []
                failed: Exception | None = None
                try:
                    async with self._window(records, self._sample) as window:
                        async for record in window:
                            sampled.append(record)
                except Exception as exc:  # e.g. a bad stdin line: still judge what came before it
                    failed = exc
                if self.policy:
                    await self.policy.close()  # free its memory before the judge loads
                if not stop.is_set():  # interrupted while sampling: the sidecar keeps the candidates
                    async with self._window(sampled, self._judge) as judged:
                        async for record in judged:
                            yield self._emit(record)
                if failed is not None:
                    raise failed
            else:
                # One window for both steps: at most `concurrency` records in flight in all.
                async with self._window(records, self._sample_and_judge) as judged:
                    async for record in judged:
                        yield self._emit(record)
        finally:
            for engine in (self.policy, self.judge):
                if engine:
                    await engine.close()
            if self.writer is not None:
                self.writer.close()
