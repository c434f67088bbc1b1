"""The ASGI app (FastAPI): OpenAI's routes over a Service, plus /health and /metrics.

Each selection runs in a task of its own; the handler waits for it and for the client at
once, so a client that disconnects cancels its request's work (no engine request is sent
for it afterwards). A streamed answer sends SSE comment lines every `keep_alive` seconds
while the winner is chosen — clients and proxies with read timeouts keep the connection —
then the winner's text in OpenAI's chunk format and `data: [DONE]`.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at runtime.

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import fields
from typing import Any

from bon import config as defaults
from bon.config import ServeConfig
from bon.engines.base import EngineError
from bon.errors import UsageError
from bon.runs.roles import Judge, Policy, tournament_config
from bon.runs.session import Session
from bon.serve.metrics import Metrics
from bon.serve.protocol import (
    EXTENSION,
    Ask,
    Defaults,
    RequestError,
    answer,
    check_installed,
    chunks,
    new_id,
    parse,
)
from bon.serve.service import Service
from bon.tasks import settle

log = logging.getLogger("bon")
CLIENT_CLOSED = 499  # nginx's status for a request whose client went away (counted, never sent)


def create_app(policy: Policy | None = None, judge: Judge | None = None, **settings: Any) -> Any:
    """See `bon.serve.create_app`."""
    check_installed()
    import openai.types.chat  # noqa: F401 - the answers' types, loaded now rather than by the first answer
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    if policy is None or judge is None:
        raise UsageError("bon serve needs a policy (to sample candidates) and a judge (to pick the best)")
    serve_names = {f.name for f in fields(ServeConfig)}
    config = ServeConfig(**{k: v for k, v in settings.items() if k in serve_names})
    rest = {k: v for k, v in settings.items() if k not in serve_names}
    n = rest.pop("n", defaults.DEFAULT_N)
    if not isinstance(n, int) or not 1 <= n <= config.limit_n:
        raise UsageError(f"n must be from 1 to the request limit ({config.limit_n}), got {n}")
    tournament = tournament_config(**rest)  # an unknown keyword is a UsageError naming it
    key = None
    if config.server_key_env:
        key = os.environ.get(config.server_key_env)
        if not key:
            raise UsageError(f"--server-key-env {config.server_key_env}: that variable is empty or not set")
    session = Session(policy, judge, n=n, tournament=tournament)
    metrics = Metrics()
    service = Service(session, config, metrics)
    request_defaults = Defaults(config.served_model_name, n, tournament, policy.sampling, config)
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.close()

    app = FastAPI(title="bon", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.bon = service

    def error(exc: RequestError, endpoint: str) -> Any:
        metrics.answered(endpoint, exc.status)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    def authorize(request: Request) -> None:
        if key is None:
            return
        sent = request.headers.get("authorization", "")
        scheme, _, token = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise RequestError(401, "missing or wrong API key: send Authorization: Bearer <key>")

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        from openai.types.model import Model

        try:
            authorize(request)
        except RequestError as exc:
            return error(exc, "/v1/models")
        model = Model(id=config.served_model_name, object="model", created=created, owned_by="bon")
        return {"object": "list", "data": [model.model_dump(mode="json", exclude_none=True)]}

    @app.get("/health")
    async def health() -> Any:
        ok, body = service.health()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Any:
        data, content_type = metrics.exposition()
        return Response(data, media_type=content_type)

    async def _started() -> None:
        """At once, unless the app is mounted in one that ran no lifespan for it: then the
        first request loads the engines."""
        try:
            await service.start()
        except EngineError as exc:
            raise RequestError(503, f"the models could not load: {exc}") from None

    async def handle(request: Request, kind: str) -> Any:
        endpoint = request.url.path
        arrived = time.monotonic()
        try:
            authorize(request)
            try:
                body = await request.json()
            except ValueError:
                raise RequestError(400, "the request body is not JSON") from None
            ask = parse(body, kind, request_defaults)
            record = service.record(ask)
            await _started()
            service.admit()
        except RequestError as exc:
            return error(exc, endpoint)
        response_id = new_id(kind)
        work = service.start_selection(ask, record, response_id)
        left = asyncio.ensure_future(_disconnected(request))
        try:
            # A streamed answer waits up to one keep-alive interval before its first byte, so
            # a request that fails at once still gets its own HTTP status.
            await asyncio.wait(
                {work, left}, timeout=config.keep_alive if ask.stream else None, return_when="FIRST_COMPLETED"
            )
        except BaseException:
            await settle([work, left])
            raise
        if left.done() and not work.done():  # the client has gone: its work goes too
            await settle([work, left])
            metrics.answered(endpoint, CLIENT_CLOSED)
            return Response(status_code=CLIENT_CLOSED)
        if work.done() or not ask.stream:
            await settle([left])
            try:
                trace, stopped = _outcome(work)
            except RequestError as exc:
                return error(exc, endpoint)
            metrics.answered(endpoint, 200, time.monotonic() - arrived)
            if ask.stream:
                events = [_event(c) for c in chunks(ask, response_id, config.served_model_name, None)]
                events += [_event(c) for c in chunks(ask, response_id, config.served_model_name, trace, stopped)]
                return StreamingResponse(_replay([*events, "data: [DONE]\n\n"]), media_type="text/event-stream")
            payload = _dump(answer(ask, response_id, config.served_model_name, trace, stopped))
            return JSONResponse(payload | ({EXTENSION: trace} if ask.trace else {}))
        return StreamingResponse(
            _stream(ask, response_id, work, left, endpoint, arrived), media_type="text/event-stream"
        )

    async def _stream(
        ask: Ask, response_id: str, work: asyncio.Task, left: asyncio.Future, endpoint: str, arrived: float
    ) -> AsyncIterator[str]:
        name = config.served_model_name
        answered = False
        try:
            for c in chunks(ask, response_id, name, None):
                yield _event(c)
            while True:
                await asyncio.wait({work, left}, timeout=config.keep_alive, return_when="FIRST_COMPLETED")
                if work.done():
                    break
                if left.done():
                    return  # the client has gone (finally cancels its work)
                yield ": keep-alive\n\n"
            try:
                trace, stopped = _outcome(work)
            except RequestError as exc:
                answered = True
                metrics.answered(endpoint, exc.status)
                yield f"data: {json.dumps(exc.body())}\n\n"
                return
            answered = True
            metrics.answered(endpoint, 200, time.monotonic() - arrived)
            for c in chunks(ask, response_id, name, trace, stopped):
                yield _event(c)
            yield "data: [DONE]\n\n"
        finally:
            if not answered:
                metrics.answered(endpoint, CLIENT_CLOSED)
            await settle([work, left])

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        return await handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await handle(request, "text")

    return app


def _outcome(work: asyncio.Task) -> tuple[dict[str, Any], bool]:
    """A finished selection's (trace record, winner cut at a stop string), or its RequestError."""
    if work.cancelled():
        raise RequestError(503, "the server is shutting down: the request was cancelled")
    exc = work.exception()
    if exc is None:
        return work.result()
    if isinstance(exc, RequestError):
        raise exc
    log.error("request failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
    raise RequestError(500, f"bon failed on this request: {type(exc).__name__}: {exc}")


def _event(chunk: Any) -> str:
    return f"data: {json.dumps(_dump(chunk), ensure_ascii=False)}\n\n"


def _dump(payload: Any) -> dict[str, Any]:
    """An openai type as JSON: its unset (None) fields left out; the `bon` extra stays whole."""
    return payload.model_dump(mode="json", exclude_none=True)


async def _replay(events: list[str]) -> AsyncIterator[str]:
    for event in events:
        yield event


async def _disconnected(request: Any) -> None:
    """Returns when the client disconnects (the body has been read: the next message is that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
