"""bon's own order of requests, in front of a server that serves in arrival order.

A first-come-first-served server (`vllm serve` by default, SGLang, hosted APIs) runs
requests in the order they arrive. Sent all at once, every record's deep rounds wait
behind everyone's first rounds and no record is finished until the very end. An
`Admission` gate keeps only as many requests in flight as keep the server busy and holds
the rest in bon's own queue, lowest `priority` first (earlier records, deeper rounds: see
bon/runs/judge.py `request_priority`), so the server sees them in bon's order.

How many is enough is found, not configured (`pinned` fixes it). Every period (at least
`MIN_PERIOD` seconds) the gate looks at two things it can measure without knowing the
server:
- *queueing at the server*: a request that waits for its first token longer than a
  no-queue time to first token (twice the shortest lately seen, plus `SLACK`) is waiting
  in the server's queue; the time such requests spent waiting, over the period, is the
  mean number of bon's requests queued there (Little's law).
- *throughput*: tokens streamed per second.
The rule: while requests were held back and nothing queues at the server beyond an
allowance (one request, or 1/16 of the limit: a request ready the moment a slot frees),
grow — doubling at first, then by an eighth — as long as the last step up paid for
itself in throughput (at least a third of the proportional gain); a step that bought
nothing stops the growth for `HOLD_PERIODS`, after which it is tried again (servers
change). When more requests queue at the server than the allowance, the limit drops by
that excess at once: those requests only wait there, out of bon's order, and the server
is busy without them. So the limit settles one or two requests above the server's
slots: the server never idles waiting for bon, and bon's order decides what it runs next.

This module knows nothing of HTTP: an engine wraps each attempt in `admit(priority)` and
reports the tokens as they stream (`Ticket.output`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

START = 8  # requests in flight before anything is measured
MIN_PERIOD = 0.5  # seconds: a period also lasts four no-queue times to first token
SLACK = 0.02  # seconds a first token may take beyond twice the shortest and count as not queued
GAIN = 1 / 3  # of the proportional throughput gain a step up must bring to go on growing
HOLD_PERIODS = 8  # periods without growth after a step up that bought nothing, or a step down


class Ticket:
    """One admitted request: `output(tokens)` as its tokens stream in (the first marks its start)."""

    __slots__ = ("admitted", "first", "gate", "queued")

    def __init__(self, gate: Admission, admitted: float):
        self.gate, self.admitted = gate, admitted
        self.first: float | None = None  # when its first token came
        self.queued = 0.0  # seconds of its wait already counted as queued at the server

    def output(self, tokens: int = 1) -> None:
        self.gate._output(self, tokens)


class Admission:
    """At most `limit` requests in flight; the rest wait in a heap by (priority, arrival).
    `pinned`: a fixed limit; None: found as the module docstring says, from `start`, never
    above `ceiling`. `changes` keeps (time, limit) at each change."""

    def __init__(
        self,
        pinned: int | None = None,
        ceiling: int = 256,
        start: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.clock = clock
        self.adaptive = pinned is None
        self.ceiling = max(1, ceiling if pinned is None else pinned)
        self.limit = pinned if pinned is not None else min(self.ceiling, start or START)
        self.in_flight: set[Ticket] = set()
        self._reserved = 0  # slots granted to waiters that have not taken them yet
        self._waiting: list[tuple[int, int, asyncio.Future]] = []
        self.waiting = 0  # requests held back now
        self._arrivals = itertools.count()
        now = clock()
        self.changes: deque[tuple[float, int]] = deque([(now, self.limit)], maxlen=1000)
        self.tokens = 0  # streamed through this gate, all told
        self._ttfts: deque[float] = deque(maxlen=64)  # recent times to first token
        # the period being measured
        self._period_start = self._last = now
        self._period_tokens = 0
        self._queued_s = 0.0  # request-seconds spent queued at the server
        self._pressed_s = 0.0  # seconds during which requests waited in this gate
        self._in_flight_s = 0.0  # request-seconds in flight
        # the decision state
        self._growing = True  # doubling until a step buys nothing or the server queues
        self._hold = 0
        self._previous: tuple[int, float] | None = None  # (limit, tokens/s) of the last pressed period

    # ---- admission ----

    @contextlib.asynccontextmanager
    async def admit(self, priority: int = 0) -> AsyncIterator[Ticket]:
        """Hold a slot for one request (waiting by `priority`, lower sooner, while all are taken)."""
        await self._enter(priority)
        ticket = Ticket(self, self.clock())
        self.in_flight.add(ticket)
        try:
            yield ticket
        finally:
            self._leave(ticket)

    async def _enter(self, priority: int) -> None:
        self._advance()
        if not self._waiting and len(self.in_flight) + self._reserved < self.limit:
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._arrivals), future))
        self.waiting += 1
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted as it was cancelled: pass it on
                self._reserved -= 1
                self._grant()
            else:  # still in the heap, done (cancelled): _grant skips it
                self._advance()
                self.waiting -= 1
            raise
        self._reserved -= 1

    def _leave(self, ticket: Ticket) -> None:
        self._advance()
        self.in_flight.discard(ticket)
        if ticket.first is None:  # ended without a token (failed, cancelled): its wait still counts
            self._queued_s += self._queued_part(ticket, self.clock())
        self._grant()
        self._maybe_decide()

    def _grant(self) -> None:
        while self._waiting and len(self.in_flight) + self._reserved < self.limit:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                self._advance()
                future.set_result(None)
                self._reserved += 1
                self.waiting -= 1

    # ---- measuring ----

    def _threshold(self) -> float:
        """A wait for the first token longer than this is a wait in the server's queue."""
        return 2 * (min(self._ttfts) if self._ttfts else 0.0) + SLACK

    def _queued_part(self, ticket: Ticket, until: float) -> float:
        """Seconds of `ticket`'s wait for its first token, up to `until`, not yet counted as queued."""
        queued = max(0.0, until - ticket.admitted - self._threshold())
        part, ticket.queued = max(0.0, queued - ticket.queued), max(queued, ticket.queued)
        return part

    def _output(self, ticket: Ticket, tokens: int) -> None:
        self._advance()
        if ticket.first is None:
            now = self.clock()
            self._queued_s += self._queued_part(ticket, now)
            ticket.first = now
            self._ttfts.append(now - ticket.admitted)
        self.tokens += tokens
        self._period_tokens += tokens
        self._maybe_decide()

    def count(self, tokens: int) -> None:
        """Tokens that streamed, told in bulk rather than by request (a simulated batch step)."""
        self.tokens += tokens
        self._period_tokens += tokens
        self._maybe_decide()

    def _advance(self) -> None:
        now = self.clock()
        self._in_flight_s += len(self.in_flight) * (now - self._last)
        if self.waiting:
            self._pressed_s += now - self._last
        self._last = now

    # ---- deciding ----

    def _period(self) -> float:
        return max(MIN_PERIOD, 4 * (min(self._ttfts) if self._ttfts else 0.0))

    def _maybe_decide(self) -> None:
        now = self.clock()
        span = now - self._period_start
        if not self.adaptive or span < self._period():
            return
        for ticket in self.in_flight:  # still waiting for a first token: queued so far
            if ticket.first is None:
                self._queued_s += self._queued_part(ticket, now)
        self._advance()
        queued = self._queued_s / span  # mean requests waiting at the server
        served = self._in_flight_s / span - queued  # mean requests the server was working on
        throughput = self._period_tokens / span
        pressed = self._pressed_s > span / 2  # the limit, not the demand, held the work back
        self._period_start, self._period_tokens = now, 0
        self._queued_s = self._pressed_s = self._in_flight_s = 0.0
        self._decide(queued, served, throughput, pressed)

    def _decide(self, queued: float, served: float, throughput: float, pressed: bool) -> None:
        allowance = max(1.0, self.limit / 16)
        if queued > allowance:  # latency climbs at the server: those requests only wait there
            # as many as it served at once, and the allowance (the queue measured may stem
            # from a higher limit earlier in the period: the limit minus the queue would undershoot)
            self._set(max(1, min(self.limit, math.ceil(served + allowance))))
            self._growing, self._hold, self._previous = False, HOLD_PERIODS, None
            return
        if not pressed:  # fewer requests than the limit: nothing to learn about it
            return
        previous, self._previous = self._previous, (self.limit, throughput)
        if previous is not None and previous[0] < self.limit:
            wanted = GAIN * (self.limit / previous[0] - 1)
            if throughput < previous[1] * (1 + wanted):  # the step up bought no throughput
                self._growing, self._hold = False, HOLD_PERIODS
                return
        if self._hold:
            self._hold -= 1
            return
        step = self.limit if self._growing else max(1, self.limit // 8)
        self._set(min(self.ceiling, self.limit + step))

    def _set(self, limit: int) -> None:
        if limit != self.limit:
            self.limit = limit
            self.changes.append((self.clock(), limit))
            self._grant()
