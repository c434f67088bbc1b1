"""OpenAI-compatible backend: chat completions on any such server (vllm serve, SGLang, ...).

The server applies the model's chat template. Votes of one order go out as one request
with `n` (shared prefill); a server that refuses n>1 gets separate requests from then on.
Retries with exponential backoff and jitter on 429, 5xx, timeouts and dropped connections
are the openai client's own (`max_retries`); what still fails ends the run with one line.

Several base URLs (a fleet of `vllm serve` replicas) share the load: each request goes to
the endpoint with the fewest outstanding requests; an endpoint that fails twice in a row
rests for a while and its request is retried on the others.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass, replace

from bon.config import EngineConfig
from bon.engines.base import Completion, EngineError, Generation, GenerationRequest, RecordError

DEFAULT_CONCURRENCY = 256
FAILURES_BEFORE_REST = 2
REST_SECONDS = 30.0


class NRefused(RecordError):
    """The server refused n>1 samples per request (its message names `n`)."""


_NAMES_N = re.compile(r"\bn\b", re.IGNORECASE)  # "only n=1 is supported", "`n` must be 1"


@dataclass
class Endpoint:
    url: str
    client: object
    outstanding: int = 0
    failures: int = 0  # consecutive
    resting_until: float = 0.0


class OpenAIEngine:
    def __init__(self, config: EngineConfig):
        import openai

        self._openai = openai
        self.name = f"openai:{config.model}"
        self.model = config.model
        urls = list(config.base_urls or (config.base_url,))
        self.base_url = ", ".join(urls)
        # A local server needs no key; the client insists on one, so send a placeholder.
        self._key = os.environ.get(config.api_key_env) or ""
        self.endpoints = [
            Endpoint(url, openai.AsyncOpenAI(base_url=url, api_key=self._key or "EMPTY",
                                             timeout=config.request_timeout, max_retries=config.max_retries))
            for url in urls
        ]
        self._slots = asyncio.Semaphore(int(config.extra.get("concurrency", DEFAULT_CONCURRENCY)))
        self._n_supported = True
        self._send_seed = config.request_seed

    def _scrub(self, text: str) -> str:
        """Error text never carries the API key, whatever the server echoed."""
        return text.replace(self._key, "***") if self._key else text

    async def generate(self, request: GenerationRequest) -> Generation:
        if request.n > 1 and self._n_supported:
            try:
                return await self._call(request)
            except NRefused:
                self._n_supported = False  # e.g. "only n=1 is supported": fall back for good
        if request.n == 1:
            return await self._call(request)
        parts = await asyncio.gather(*(
            self._call(replace(request, n=1, seed=None if request.seed is None else request.seed + i))
            for i in range(request.n)
        ))
        return Generation(
            [c for g in parts for c in g.completions],
            parts[0].prompt_tokens,
            sum(g.completion_tokens for g in parts),
        )

    def _pick(self) -> Endpoint:
        """The endpoint with the fewest outstanding requests among those not resting."""
        now = time.monotonic()
        awake = [e for e in self.endpoints if e.resting_until <= now]
        if not awake:  # all resting: try the one that wakes first
            return min(self.endpoints, key=lambda e: e.resting_until)
        return min(awake, key=lambda e: e.outstanding)

    async def _on_endpoint(self, send):
        """send(client) on an endpoint; a failing endpoint's request moves to the others."""
        last: Exception | None = None
        for _ in range(2 * len(self.endpoints) if len(self.endpoints) > 1 else 1):
            endpoint = self._pick()
            endpoint.outstanding += 1
            try:
                result = await send(endpoint.client)
            except (self._openai.APIConnectionError, self._openai.InternalServerError,
                    self._openai.RateLimitError) as exc:
                endpoint.failures += 1
                if endpoint.failures >= FAILURES_BEFORE_REST:
                    endpoint.resting_until = time.monotonic() + REST_SECONDS
                last = exc
                continue
            except self._openai.APIError as exc:
                raise self._error(exc) from None
            finally:
                endpoint.outstanding -= 1
            endpoint.failures = 0
            return result
        raise self._error(last) from None

    async def _call(self, request: GenerationRequest) -> Generation:
        extra = {"seed": request.seed} if self._send_seed and request.seed is not None else {}
        async with self._slots:
            response = await self._on_endpoint(lambda client: client.chat.completions.create(
                model=self.model,
                messages=request.messages,
                n=request.n,
                temperature=request.temperature,
                top_p=request.top_p,
                max_tokens=request.max_tokens,
                **extra,
            ))
        usage = response.usage
        completions = []
        for choice in response.choices:
            text = choice.message.content or ""
            # Servers with a reasoning parser split the thinking off; put it back so the
            # trace is whole and the verdict is read after `</think>` as the RRM intends.
            thinking = getattr(choice.message, "reasoning_content", None) or getattr(choice.message, "reasoning", None)
            if thinking:
                text = f"{thinking}\n</think>\n\n{text}"
            finish = "length" if choice.finish_reason == "length" else "stop"
            # Servers report tokens per request, not per choice: exact only for n=1.
            tokens = usage.completion_tokens if usage and len(response.choices) == 1 else None
            completions.append(Completion(text, finish, tokens))
        return Generation(
            completions,
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
        )

    async def stream(self, request: GenerationRequest):
        """One sample, streamed: text pieces as they come, then the whole Completion."""
        extra = {"seed": request.seed} if self._send_seed and request.seed is not None else {}
        pieces: list[str] = []
        finish, tokens, thinking = "stop", None, False
        try:
            stream = await self._pick().client.chat.completions.create(
                model=self.model, messages=request.messages, n=1, temperature=request.temperature,
                top_p=request.top_p, max_tokens=request.max_tokens, stream=True,
                stream_options={"include_usage": True}, **extra,
            )
            async for chunk in stream:
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    delta = choice.delta
                    reasoning = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
                    piece = reasoning or ""
                    thinking = thinking or bool(reasoning)
                    if delta.content:
                        if thinking:  # close the thinking a reasoning parser split off
                            piece += "\n</think>\n\n"
                            thinking = False
                        piece += delta.content
                    if piece:
                        pieces.append(piece)
                        yield piece
                    if choice.finish_reason:
                        finish = "length" if choice.finish_reason == "length" else "stop"
        except self._openai.APIError as exc:
            raise self._error(exc) from None
        yield Completion("".join(pieces), finish, tokens)

    def _error(self, exc: Exception) -> EngineError:
        if isinstance(exc, self._openai.BadRequestError) and _NAMES_N.search(str(exc.message)):
            return NRefused(self._scrub(f"server {self.base_url} ({self.model}) refused n>1: {exc.message}"))
        if isinstance(exc, self._openai.APIStatusError) and exc.status_code in (400, 413, 422):
            # The server rejects this request (too long, bad content): this record's problem only.
            return RecordError(self._scrub(f"server {self.base_url} ({self.model}) rejected the request: {exc.message}"))
        if isinstance(exc, self._openai.APITimeoutError):
            what = "timed out"
        elif isinstance(exc, self._openai.APIConnectionError):
            what = "cannot be reached"
        elif isinstance(exc, self._openai.APIStatusError):
            what = f"answered {exc.status_code}: {exc.message}"
        else:
            what = f"failed: {exc}"
        return EngineError(self._scrub(f"server {self.base_url} ({self.model}) {what}"))

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.client.close()
