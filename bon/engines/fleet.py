"""Riding out what servers do: which endpoint gets a request, and how long to keep trying.

A `Fleet` holds one or more endpoints (replicas of one server) and runs each request as a
series of attempts until one succeeds:
- each attempt goes to the endpoint with the fewest outstanding requests among those up;
- a transient failure (429, 5xx, a refused or dropped connection, a stall) is retried with
  capped exponential backoff and jitter, at once on another endpoint when one is healthy,
  and never sooner than the server's Retry-After;
- an endpoint that fails `FAILURES_BEFORE_REST` times in a row rests (1 s, doubling to
  `REST_CAP`); after its rest one request at a time probes it, and its first success brings
  it back for everyone — so a restarted server rejoins within a rest of coming back;
- the fleet gives up only when nothing has succeeded for `give_up_after` seconds (counted
  from the last successful output of any endpoint, or from when requests started again
  after an idle spell), or, when nothing has ever succeeded, after `START_UP_LIMIT`
  seconds: a server unreachable from the very start fails fast.

An endpoint going down, and coming back, is said once each on the `bon` logger (the CLI
shows it on stderr) and counted (`outages`, `recoveries`), so a replica that is worked
around is never worked around silently.

This module knows nothing of HTTP or openai: attempts are plain coroutines that raise
`Transient` for what may pass. That keeps the timing rules readable and testable alone.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bon.engines.base import ServerGaveUp
from bon.errors import redact

FAILURES_BEFORE_REST = 3  # in a row, with no success between: one unlucky 503 rests nothing
REST_FIRST, REST_CAP = 1.0, 10.0  # an endpoint's rests grow 1, 2, 4, 8, 10, 10 … seconds
BACKOFF_FIRST, BACKOFF_CAP = 0.5, 10.0  # a request's waits grow the same way, with jitter
START_UP_LIMIT = 60.0  # seconds to the first success before the fleet is called unreachable

T = TypeVar("T")
log = logging.getLogger("bon")


class Transient(Exception):
    """An attempt failed in a way that may pass: retry it (`retry_after`: the server's wish)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class Endpoint:
    url: str  # what the client connects to: may hold credentials
    client: Any
    name: str = ""  # the URL as every message shows it, credentials redacted (default: from `url`)
    outstanding: int = 0
    failures: int = 0  # consecutive, since its last success
    rests: int = 0  # consecutive rests: each one twice as long
    resting_until: float = 0.0
    probing: bool = False  # down and being tried by one request
    last_output: float = 0.0  # when it last sent anything: stalls are judged per endpoint

    def __post_init__(self) -> None:
        self.name = self.name or redact(self.url)

    @property
    def down(self) -> bool:
        return self.failures >= FAILURES_BEFORE_REST


class Fleet:
    def __init__(
        self,
        endpoints: list[Endpoint],
        give_up_after: float,
        clock: Callable[[], float] = time.monotonic,
        serving: str = "",
    ):
        self.endpoints = endpoints
        self.give_up_after = give_up_after
        self.clock = clock
        self.serving = serving  # what the endpoints serve (the model), for the down and back lines
        self.outages = 0  # times an endpoint went down
        self.recoveries = 0  # times a down endpoint answered again
        self.last_success: float | None = None
        self.busy_since: float | None = None  # when requests last started after none were running
        self._running = 0
        self.retries = 0  # attempts after a failed one: the work asked for again
        self._recovered: asyncio.Event | None = None  # set when a down endpoint answers again

    # ---- what the progress display and the engine read ----

    def healthy(self) -> int:
        """Endpoints taking requests now (not down)."""
        return sum(not e.down for e in self.endpoints)

    def deadline(self) -> float:
        """When to give up: give_up_after past the last answer, or past the moment requests
        started again after an idle spell (an hour-long policy phase is no outage)."""
        busy_since = self.busy_since if self.busy_since is not None else self.clock()
        if self.last_success is not None:
            return max(self.last_success, busy_since) + self.give_up_after
        return busy_since + min(START_UP_LIMIT, self.give_up_after)

    # ---- health bookkeeping ----

    def alive(self, endpoint: Endpoint) -> None:
        """The endpoint sent output (a chunk, a response): it is up, and the fleet is not in
        an outage. A probe's first chunk is enough: waiting for its whole answer would hold
        every other request back for a full generation after a restart."""
        endpoint.last_output = self.last_success = self.clock()
        if endpoint.failures:
            was_down = endpoint.down
            endpoint.failures = endpoint.rests = 0
            endpoint.resting_until, endpoint.probing = 0.0, False
            if was_down:
                self.recoveries += 1
                log.warning("%s is back", self._describe(endpoint))
                self._wake()

    def failed(self, endpoint: Endpoint, reason: str = "") -> None:
        now = self.clock()
        endpoint.failures += 1
        endpoint.probing = False
        if endpoint.failures == FAILURES_BEFORE_REST:  # it just went down: said once, not per failure
            self.outages += 1
            log.warning("%s is down: %s", self._describe(endpoint), reason or "failing")
        # Requests that were in flight when it died fail together: one rest, not one each.
        if endpoint.down and endpoint.resting_until <= now:
            endpoint.resting_until = now + min(REST_CAP, REST_FIRST * 2**endpoint.rests)
            endpoint.rests += 1

    def _describe(self, endpoint: Endpoint) -> str:
        return f"server {endpoint.name}" + (f" ({self.serving})" if self.serving else "")

    def pick(self) -> Endpoint | None:
        """A down endpoint whose rest is over and nobody is probing (this request probes it),
        else the least-loaded endpoint that is up; None: all are down, wait."""
        now = self.clock()
        rested = [e for e in self.endpoints if e.down and e.resting_until <= now and not e.probing]
        if rested:
            endpoint = min(rested, key=lambda e: e.resting_until)
            endpoint.probing = True
            return endpoint
        up = [e for e in self.endpoints if not e.down]
        return min(up, key=lambda e: e.outstanding) if up else None

    # ---- running one request ----

    async def run(self, attempt: Callable[[Endpoint], Awaitable[T]], what: str) -> T:
        """attempt(endpoint) until one succeeds; ServerGaveUp (naming `what` and the last
        failure) when the fleet has produced nothing for too long."""
        if self._running == 0:
            self.busy_since = self.clock()
        self._running += 1
        try:
            return await self._run(attempt, what)
        finally:
            self._running -= 1

    async def _run(self, attempt: Callable[[Endpoint], Awaitable[T]], what: str) -> T:
        failures = 0
        last: Transient | None = None
        while True:
            endpoint = self.pick()
            if endpoint is None:
                self._check_deadline(last, what)
                await self._wait(self._next_wake() - self.clock(), wake_early=True)
                continue
            self.retries += failures > 0
            endpoint.outstanding += 1
            try:
                result = await attempt(endpoint)
            except Transient as exc:
                self.failed(endpoint, exc.reason)
                failures += 1
                last = Transient(f"{endpoint.name}: {exc.reason}", exc.retry_after)
                self._check_deadline(last, what)
                if exc.retry_after is not None:  # the server said when: not sooner
                    await self._wait(exc.retry_after, wake_early=False)
                elif not self._another_is_up(endpoint):
                    await self._wait(self._backoff(failures), wake_early=True)
                continue
            finally:
                endpoint.outstanding -= 1
                endpoint.probing = False  # whatever ended the attempt (a refusal, a cancel), the probe is over
            self.alive(endpoint)
            return result

    def _check_deadline(self, last: Transient | None, what: str) -> None:
        if self.clock() < self.deadline():
            return
        since = "since its last answer" if self.last_success is not None else "from the start"
        limit = self.give_up_after if self.last_success is not None else min(START_UP_LIMIT, self.give_up_after)
        reason = last.reason if last else "no endpoint could be tried"
        raise ServerGaveUp(
            f"{what}: gave up after {limit:g} s without an answer {since} (last: {reason})", reason=reason
        )

    def _another_is_up(self, failed: Endpoint) -> bool:
        return any(e is not failed and not e.down for e in self.endpoints)

    def _backoff(self, failures: int) -> float:
        return min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)

    def _next_wake(self) -> float:
        resting = [e.resting_until for e in self.endpoints if not e.probing]
        return min(resting) if resting else self.clock() + REST_FIRST

    async def _wait(self, seconds: float, wake_early: bool) -> None:
        """Sleep, but never past the give-up deadline; `wake_early`: also until a down
        endpoint answers again, so the pause after a restart ends with the first answer."""
        seconds = max(0.0, min(seconds, self.deadline() - self.clock()))
        if not wake_early:
            await asyncio.sleep(seconds)
            return
        if self._recovered is None:
            self._recovered = asyncio.Event()
        try:
            await asyncio.wait_for(self._recovered.wait(), max(seconds, 0.01))
        except TimeoutError:
            pass

    def _wake(self) -> None:
        if self._recovered is not None:
            self._recovered.set()
            self._recovered = None
