"""SIGINT and SIGTERM over a whole run (Ctrl-C, and what Slurm and Kubernetes send).

The handlers cover the run from its first step to its last, not only the event loop: a
signal that lands during start-up, or a second one while a stopping run shuts its engines
down (vLLM can take seconds), must never end in a traceback or a stray exit status.

- Start-up (checking the input): the first signal interrupts it (`Interrupted`); nothing
  has been written yet.
- Opening the output, sidecar and manifest: the first signal is noted and acted on when the
  pipeline starts, so those files are never left half-written.
- The pipeline: the first signal asks it to stop; finished records are still written.
- A second signal, at any point: exit at once with 128 + its number.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """A signal arrived before the run did any work."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class RunSignals:
    def __init__(self) -> None:
        self.received: list[int] = []
        self._interruptible = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._request_stop: Callable[[], None] | None = None
        self._previous: dict = {}

    def __enter__(self) -> RunSignals:
        try:
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: the caller keeps its own handlers
            pass
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def defer(self) -> None:
        """From here on a first signal is only noted: files are being opened."""
        self._interruptible = False

    def stop_with(self, request_stop: Callable[[], None]) -> None:
        """Inside the running event loop: a first signal (including one already noted) stops the pipeline."""
        self._loop = asyncio.get_running_loop()
        self._request_stop = request_stop
        if self.received:
            request_stop()

    def _handle(self, signum: int, frame) -> None:
        if self.received:
            os._exit(128 + signum)
        self.received.append(signum)
        if self._interruptible:
            raise Interrupted(signum)  # the caller says what happened
        print(f"bon: {signal.Signals(signum).name}: finishing what is written, stopping", file=sys.stderr, flush=True)
        if self._loop is not None and not self._loop.is_closed() and self._request_stop is not None:
            # The handler runs between two bytecodes of the loop's own thread: hand the stop
            # to the loop rather than touching its state from here.
            self._loop.call_soon_threadsafe(self._request_stop)
