"""The server without HTTP: which requests are admitted, each one's selection, and what it leaves behind.

A request admitted waits for one of `max_concurrency` selection slots (at most `max_queue`
wait; more get 429 with a Retry-After from recent answer times). Its selection is one
record through the session, in a task of its own that the HTTP layer cancels when the
client leaves and that a drain waits for. An answered request is counted in the metrics
and appended to the traces file as one bon output record (whole and flushed: `bon show`
reads the file while the server writes it). Nothing is kept per request once it is
answered, so memory stays flat however long the server runs.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from pathlib import Path
from typing import Any

from bon.config import ServeConfig
from bon.engines.base import EngineError
from bon.io.records import InputError, Record, RecordWriter
from bon.runs.session import Session
from bon.serve.metrics import Metrics
from bon.serve.protocol import Ask, RequestError, cut_at_stop
from bon.tasks import settle

log = logging.getLogger("bon")


class Service:
    def __init__(self, session: Session, config: ServeConfig, metrics: Metrics):
        self.session, self.config, self.metrics = session, config, metrics
        self.waiting = 0  # admitted, waiting for a slot
        self.in_flight = 0  # in selection
        self.draining = False
        self.tasks: set[asyncio.Task] = set()  # every admitted request's selection, until it ends
        self.answer_seconds = 1.0  # a moving average of time in selection, for Retry-After
        self._slots: asyncio.Semaphore | None = None
        self._starting: asyncio.Future | None = None
        self._traces: RecordWriter | None = None
        self._traces_file: Any = None
        metrics.waiting.set_function(lambda: self.waiting)
        metrics.in_flight.set_function(lambda: self.in_flight)

    def open_traces(self) -> None:
        if self.config.traces is not None:
            path = Path(self.config.traces)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._traces_file = open(path, "a", encoding="utf-8")  # open while serving: one line per answer
            self._traces = RecordWriter(self._traces_file)

    async def start(self) -> None:
        """Open the traces file and load the engines, once: the CLI starts it before the app's
        lifespan does, and a mounted app (whose lifespan its parent does not run) on its first request."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        self.open_traces()
        await self.session.start()
        self._slots = asyncio.Semaphore(self.config.max_concurrency)

    # ---- admission ----

    def record(self, ask: Ask) -> Record:
        """The request's record, checked as `bon run` checks an input line (400 when not valid)."""
        try:
            return self.session.record(ask.data)
        except InputError as exc:
            raise RequestError(400, exc.problem, "messages" if ask.kind == "chat" else "prompt") from None

    def admit(self) -> None:
        """Take a place in the queue, or say why not (503 while draining, 429 when full)."""
        if self.draining:
            raise RequestError(503, "the server is shutting down")
        if self.in_flight + self.waiting >= self.config.max_concurrency + self.config.max_queue:
            raise RequestError(
                429,
                f"too many requests: {self.in_flight} in selection and {self.waiting} waiting; retry later",
                retry_after=self.answer_seconds,
            )
        self.waiting += 1

    def start_selection(self, ask: Ask, record: Record, response_id: str) -> asyncio.Task:
        """The admitted request's selection, as a task (cancel it to cancel its work)."""
        task = asyncio.ensure_future(self._selection(ask, record, response_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _selection(self, ask: Ask, record: Record, response_id: str) -> tuple[dict[str, Any], bool]:
        assert self._slots is not None
        waiting = True
        try:
            async with self._slots:
                self.waiting, waiting = self.waiting - 1, False
                self.in_flight += 1
                started = time.monotonic()
                try:
                    return await self._select(ask, record, response_id)
                finally:
                    self.in_flight -= 1
                    self.answer_seconds = 0.8 * self.answer_seconds + 0.2 * (time.monotonic() - started)
        finally:
            if waiting:  # cancelled in the queue
                self.waiting -= 1

    async def _select(self, ask: Ask, record: Record, response_id: str) -> tuple[dict[str, Any], bool]:
        cut: set[int] = set()

        def at_stops(record: Record) -> None:  # OpenAI's `stop`: each candidate ends before its first stop string
            for i, text in enumerate(record.candidates or ()):
                shortened, hit = cut_at_stop(text, ask.stop)
                if hit:
                    record.candidates[i] = shortened  # type: ignore[index]
                    cut.add(i)

        try:
            out = await self.session.process(
                record,
                n=ask.n,
                tournament=ask.tournament,
                sampling=ask.sampling,
                on_candidates=at_stops if ask.stop else None,
                on_match=lambda match: self.metrics.match(match.decided_by),
            )
        except EngineError as exc:
            log.warning("request %s: %s", response_id, exc)
            raise RequestError(503, f"an upstream model server failed: {exc}") from None
        self.metrics.record(out)
        if "error" in out:
            raise RequestError(400, out["error"], "messages" if ask.kind == "chat" else "prompt")
        trace = {
            "id": response_id,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "request": {"endpoint": ask.kind, **ask.settings()},
        } | {k: v for k, v in out.items() if k != "id"}
        if self._traces is not None:
            self._traces.write(trace)
        return trace, out.get("best_index") in cut

    # ---- health and stopping ----

    def health(self) -> tuple[bool, dict[str, Any]]:
        upstreams = self.session.health()
        ok = not self.draining and all(u["ok"] for u in upstreams.values())
        status = "draining" if self.draining else "ok" if ok else "unavailable"
        body: dict[str, Any] = {"status": status, "upstreams": upstreams}
        down = [
            f"{name} ({', '.join(u['base_urls']) or u['model']}): {u['error']}"
            for name, u in upstreams.items()
            if not u["ok"]
        ]
        if down:
            body["down"] = down
        body |= {"requests_in_flight": self.in_flight, "requests_waiting": self.waiting}
        return ok, body

    async def drain(self, seconds: float) -> int:
        """Admit nothing more, let the requests admitted finish for up to `seconds`,
        then cancel the rest (they get 503): how many were cancelled."""
        self.draining = True
        pending = set(self.tasks)
        if pending:
            await asyncio.wait(pending, timeout=seconds)
        left = [task for task in pending if not task.done()]
        for task in left:
            task.cancel()
        await settle(left)
        return len(left)

    async def close(self) -> None:
        """Cancel whatever still runs, close the engines and the traces file."""
        self.draining = True
        left = list(self.tasks)
        for task in left:
            task.cancel()
        await settle(left)
        try:
            await self.session.aclose()
        finally:
            if self._traces is not None:
                self._traces.close()
                self._traces_file.close()
                self._traces = None
