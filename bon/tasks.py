"""Concurrency with owners: every task bon starts is cancelled and awaited by the code that
started it, before that code returns.

A task left running after its owner has returned can start a request on an engine that is
being closed ("Cannot send a request, as the client has been closed"), load a model again
during shutdown, or fail with nobody reading its error, which asyncio then prints at exit
as "Task exception was never retrieved" — a clean stop that reads as a crash. So bon runs
work side by side only through `gather` and `settle`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any


async def settle(futures: Iterable[asyncio.Future]) -> None:
    """Cancel whatever of `futures` is still running and wait until every one has ended.

    Their errors are read here and dropped: the error that ended the owner's work is the one
    it reports. If the caller is cancelled meanwhile, the wait still goes on to the end
    (the futures are cancelled already and end promptly), then the cancellation is raised.
    """
    futures = list(futures)
    for future in futures:
        future.cancel()
    pending = {f for f in futures if not f.done()}
    interrupted = False
    while pending:
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError:
            interrupted = True
    for future in futures:
        if not future.cancelled():
            future.exception()  # read: asyncio reports an unread one as "never retrieved"
    if interrupted:
        raise asyncio.CancelledError


async def gather(*awaitables: Awaitable[Any]) -> list[Any]:
    """asyncio.gather, except that when one fails (or the caller is cancelled) the others
    are cancelled and waited for before the error is raised; asyncio.gather leaves them
    running."""
    futures = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*futures))
    finally:
        await settle(futures)
