"""OpenAI-compatible backend: chat completions on any such server (vllm serve, SGLang, ...).

The server applies the model's chat template. Votes of one order go out as one request
with `n` (shared prefill); a server that refuses n>1 gets separate requests from then on.

Every request is streamed (vLLM streams n>1 choices by index), for two reasons: a request
whose endpoint sends nothing for `stall_timeout` seconds is told from a slow one and
abandoned (a SIGTERMed `vllm serve` keeps its connections open and silent), and the
tokens can be counted as they come (`on_tokens`). The completions returned are exactly
what the non-streamed call gives. Transient failures are retried by the fleet
(bon/engines/fleet.py) for as long as an outage lasts, up to `give_up_after`; an abandoned
attempt's partial output is dropped, so each request yields one result.

A key goes only where it was meant to: the key in the variable the user names
(`api_key_env`) to the servers of that role, and with none named, `$OPENAI_API_KEY` to
api.openai.com alone — never a user's OpenAI key to whatever host a URL points at. A
`${NAME}` in a URL is read from the environment here, so the URL that bon shows and
records names the secret instead of holding it.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from bon.config import EngineConfig, ServerOptions
from bon.engines.admission import Admission, Ticket
from bon.engines.base import Completion, Engine, EngineError, Generation, GenerationRequest, RecordError
from bon.engines.fleet import Endpoint, Fleet, Transient
from bon.errors import ENV_REFERENCE, UsageError, redact
from bon.tasks import gather, settle

TRANSIENT_STATUS = (408, 409, 429)  # and every 5xx: the openai client's own retry set
OPENAI_HOST, OPENAI_KEY_ENV = "api.openai.com", "OPENAI_API_KEY"  # the default key, for its own host only


class NRefused(RecordError):
    """The server refused n>1 samples per request (its message names `n`)."""


class PriorityRefused(RecordError):
    """The server refused the `priority` field (its message names it)."""


_NAMES_N = re.compile(r"\bn\b", re.IGNORECASE)  # "only n=1 is supported", "`n` must be 1"
_NAMES_PRIORITY = re.compile(r"\bpriority\b", re.IGNORECASE)  # "Unrecognized request argument: priority"
_NAMES_CONTEXT = re.compile(r"context length|max_model_len", re.IGNORECASE)  # "This model's maximum context length"
# Local engines cut judge answers to fit; this one cannot count tokens, so it says so where it matters.
NO_FIT = " (the openai backend counts no tokens, so bon cannot cut a judge prompt's answers to fit)"


@dataclass
class _Choice:
    """One choice as it streams in: reasoning and answer kept apart, joined at the end."""

    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    finish_reason: str | None = None

    def completion(self, tokens: int | None) -> Completion:
        text = "".join(self.content)
        thinking = "".join(self.reasoning)
        # Servers with a reasoning parser split the thinking off; put it back so the
        # trace is whole and the verdict is read after `</think>` as the RRM intends.
        if thinking:
            text = f"{thinking}\n</think>\n\n{text}"
        return Completion(text, "length" if self.finish_reason == "length" else "stop", tokens)


def _delta_parts(delta) -> tuple[str | None, str | None]:
    reasoning = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
    return reasoning, delta.content


def key_variable(url: str, named: str | None) -> str | None:
    """The variable whose key `url` gets: the one the user named, else OPENAI_API_KEY for
    api.openai.com; None: the server gets no key."""
    if named:
        return named
    return OPENAI_KEY_ENV if urlsplit(url).hostname == OPENAI_HOST else None


def expand_url(url: str) -> str:
    """`url` with each `${NAME}` replaced by that variable's value (a missing one: UsageError)."""
    for name in ENV_REFERENCE.findall(url):
        if name not in os.environ:
            raise UsageError(f"the server URL {redact(url)} names ${{{name}}}, which is not set")
    return ENV_REFERENCE.sub(lambda match: os.environ[match.group(1)], url)


@dataclass
class Server(Endpoint):
    """An endpoint and the key it was sent (a 401 from one that got none says how to send one)."""

    key_from: str | None = None  # the variable its key was read from; None: no key was meant for it
    key: str = ""  # "" : it is sent no Authorization header at all


def retry_after(headers) -> float | None:
    """Seconds the server asked us to wait (Retry-After in seconds or as a date, or retry-after-ms)."""
    if headers is None:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class OpenAIEngine(Engine):
    """Hooks for the progress display: `on_tokens(count)` is called as tokens arrive (one per
    streamed delta, corrected to the server's count when a request ends; tokens of abandoned
    attempts stay counted, they were generated); `health()` gives (endpoints up, endpoints);
    `fleet.retries` counts requests sent again.

    It knows neither the server's context limit nor its tokenizer (the server applies the
    chat template; counting would cost a request per try), so judge answers are never cut
    to fit: a prompt too long for the served model fails its record with the server's reason."""

    can_stream = True

    def __init__(self, config: EngineConfig):
        import openai

        self._openai = openai
        self.name = f"openai:{config.model}"
        self.model = config.model
        options: ServerOptions = config.options
        self.options = options
        urls = list(options.base_url)
        self.base_url = ", ".join(redact(url) for url in urls)
        self.endpoints: list[Server] = []
        for url in urls:
            key_from = key_variable(url, options.api_key_env)
            key = os.environ.get(key_from, "") if key_from else ""
            # The fleet retries; the client's own retries would hide failures from it. The
            # client's timeout bounds each read of the stream; request_timeout caps the attempt.
            # The client insists on a key: a keyless server gets a placeholder, and no header (`_arguments`).
            address = expand_url(url)
            client = openai.AsyncOpenAI(
                base_url=address, api_key=key or "EMPTY", timeout=options.request_timeout, max_retries=0
            )
            self.endpoints.append(Server(address, client, redact(url), key_from=key_from, key=key))
        self.fleet = Fleet(list(self.endpoints), options.give_up_after, serving=self.model)
        # bon's own order per endpoint: only as many requests in flight as keep it busy
        self.gates = {e.url: Admission(options.max_in_flight, options.max_concurrent_requests) for e in self.endpoints}
        self._n_supported = True
        self._priority_supported = True
        self._send_seed = options.request_seed
        self.on_tokens: Callable[[int], None] | None = None

    def health(self) -> tuple[int, int]:
        return self.fleet.healthy(), len(self.endpoints)

    def count_tokens_with(self, on_tokens: Callable[[int], None]) -> bool:
        self.on_tokens = on_tokens  # every request is streamed: tokens count as they arrive
        return True

    def outages(self) -> tuple[int, int]:
        return self.fleet.outages, self.fleet.recoveries

    def _scrub(self, text: str) -> str:
        """Error text never carries a key or a URL's credentials, whatever the server echoed."""
        for endpoint in self.endpoints:
            if endpoint.key:
                text = text.replace(endpoint.key, "***")
        return redact(text)

    async def generate(self, request: GenerationRequest) -> Generation:
        if request.n > 1 and self._n_supported:
            try:
                return await self._call(request)
            except NRefused:
                self._n_supported = False  # e.g. "only n=1 is supported": fall back for good
        if request.n == 1:
            return await self._call(request)
        parts = await gather(
            *(
                self._call(replace(request, n=1, seed=None if request.seed is None else request.seed + i))
                for i in range(request.n)
            )
        )
        return Generation(
            [c for g in parts for c in g.completions],
            parts[0].prompt_tokens,
            sum(g.completion_tokens for g in parts),
        )

    async def _call(self, request: GenerationRequest) -> Generation:
        for last_try in (False, True):
            try:
                return await self.fleet.run(
                    lambda endpoint: self._attempt(endpoint, request),  # type: ignore[arg-type]  # a Server
                    f"server {self.base_url} ({self.model})",
                )
            except PriorityRefused:
                if last_try:  # refused again without it: something else is wrong with this one
                    raise
                # A server without priority scheduling: send none from now on.
                self._priority_supported = False
        raise AssertionError("unreachable: the last try returns or raises")

    def _arguments(self, endpoint: Server, request: GenerationRequest) -> dict:
        extra: dict[str, Any] = {"seed": request.seed} if self._send_seed and request.seed is not None else {}
        if not endpoint.key:  # no key was meant for this server: send no Authorization header
            extra["extra_headers"] = {"Authorization": self._openai.Omit()}
        if request.priority and self._priority_supported:
            extra["extra_body"] = {"priority": request.priority}
        return dict(
            model=self.model,
            messages=request.messages,
            n=request.n,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            **extra,
        )

    async def _attempt(self, endpoint: Server, request: GenerationRequest) -> Generation:
        """One try on one endpoint, sent when bon's admission lets it go (bon/engines/admission.py:
        the endpoint's requests in bon's priority order, only as many at once as keep it busy)."""
        async with self.gates[endpoint.url].admit(request.priority) as ticket:
            return await self._watched(endpoint, request, ticket)

    async def _watched(self, endpoint: Server, request: GenerationRequest, ticket: Ticket) -> Generation:
        """One try, watched: silence from the endpoint for stall_timeout abandons it
        (Transient); request_timeout caps it."""
        progress = {"started": time.monotonic(), "last": 0.0}
        task = asyncio.ensure_future(self._stream(endpoint, request, progress, ticket))
        stall, cap = self.options.stall_timeout, self.options.request_timeout
        try:
            while True:
                # Output from any request on this endpoint proves it alive: a request that
                # waits in the server's queue behind others is slow, not stalled.
                heard = max(progress["started"], progress["last"], endpoint.last_output)
                stalled_at, capped_at = heard + stall, progress["started"] + cap
                done, _ = await asyncio.wait({task}, timeout=max(min(stalled_at, capped_at) - time.monotonic(), 0.0))
                if done:
                    return task.result()
                now = time.monotonic()
                if now >= capped_at:
                    if progress["last"]:  # it was answering, just not within the cap
                        raise RecordError(
                            self._scrub(
                                f"server {endpoint.name} ({self.model}) did not finish a request within "
                                f"the request timeout ({cap:g} s)"
                            )
                        )
                    raise Transient(f"timed out after {cap:g} s")
                if now >= max(progress["started"], progress["last"], endpoint.last_output) + stall:
                    raise Transient(f"stalled: no output for {stall:g} s")
        finally:
            await settle([task])  # unfinished: the stream is closed and its partial output dropped

    async def _stream(
        self, endpoint: Server, request: GenerationRequest, progress: dict, ticket: Ticket | None = None
    ) -> Generation:
        choices: dict[int, _Choice] = {}
        usage = None
        counted = 0
        try:
            stream = await endpoint.client.chat.completions.create(**self._arguments(endpoint, request))
            async with stream:
                async for chunk in stream:
                    progress["last"] = time.monotonic()
                    self.fleet.alive(endpoint)
                    if chunk.usage:
                        usage = chunk.usage
                    for choice in chunk.choices:
                        state = choices.setdefault(choice.index, _Choice())
                        reasoning, content = _delta_parts(choice.delta) if choice.delta else (None, None)
                        if reasoning:
                            state.reasoning.append(reasoning)
                        if content:
                            state.content.append(content)
                        if reasoning or content:
                            counted += 1
                            if ticket is not None:
                                ticket.output(1)
                            if self.on_tokens:
                                self.on_tokens(1)
                        if choice.finish_reason:
                            state.finish_reason = choice.finish_reason
        except self._openai.APIError as exc:
            raise self._classify(endpoint, exc) from None
        if len(choices) < request.n or any(c.finish_reason is None for c in choices.values()):
            raise Transient("the stream ended before every choice finished")
        if usage and self.on_tokens and usage.completion_tokens != counted:
            self.on_tokens(usage.completion_tokens - counted)  # the server's count is the true one
        # Servers report tokens per request, not per choice: exact only for n=1.
        tokens = usage.completion_tokens if usage and request.n == 1 else None
        return Generation(
            [choices[i].completion(tokens) for i in sorted(choices)],
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
        )

    async def stream(self, request: GenerationRequest):
        """One sample, streamed: text pieces as they come, then the whole Completion (for
        `bon compare`; a failure here ends the command, there is no batch to ride out)."""
        request = replace(request, n=1)
        pieces: list[str] = []
        finish, tokens, thinking = "stop", None, False
        endpoint = self.endpoints[0]
        try:
            stream = await endpoint.client.chat.completions.create(**self._arguments(endpoint, request))
            async for chunk in stream:
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    reasoning, content = _delta_parts(choice.delta)
                    piece = reasoning or ""
                    thinking = thinking or bool(reasoning)
                    if content:
                        if thinking:  # close the thinking a reasoning parser split off
                            piece += "\n</think>\n\n"
                            thinking = False
                        piece += content
                    if piece:
                        pieces.append(piece)
                        yield piece
                    if choice.finish_reason:
                        finish = "length" if choice.finish_reason == "length" else "stop"
        except self._openai.APIError as exc:
            error = self._classify(endpoint, exc)
            raise (
                EngineError(f"server {endpoint.name} ({self.model}) {error.reason}")
                if isinstance(error, Transient)
                else error
            ) from None
        yield Completion("".join(pieces), finish, tokens)

    def _classify(self, endpoint: Server, exc: Exception) -> Exception:
        """A failed attempt: Transient (retry), a per-record RecordError, or an EngineError."""
        where = f"server {endpoint.name} ({self.model})"
        if isinstance(exc, self._openai.APITimeoutError):
            return Transient("timed out")
        if isinstance(exc, self._openai.APIConnectionError):
            return Transient("cannot be reached")
        if isinstance(exc, self._openai.APIStatusError):
            status, message = exc.status_code, self._scrub(str(exc.message))
            if status in TRANSIENT_STATUS or status >= 500:
                return Transient(f"answered {status}: {message}", retry_after(exc.response.headers))
            self.fleet.alive(endpoint)  # a refusal is still an answer: the server is up
            if status == 400 and _NAMES_N.search(message):
                return NRefused(f"{where} refused n>1: {message}")
            if status == 400 and _NAMES_PRIORITY.search(message):
                return PriorityRefused(f"{where} refused priority: {message}")
            if status in (400, 413, 422):
                # The server rejects this request (too long, bad content): this record's problem only.
                return RecordError(
                    f"{where} rejected the request: {message}" + (NO_FIT if _NAMES_CONTEXT.search(message) else "")
                )
            if status == 401 and not endpoint.key:
                how = (
                    f"${endpoint.key_from} is empty or not set"
                    if endpoint.key_from
                    else "name the variable holding it with --api-key-env NAME"
                )
                return EngineError(f"{where} answered 401 and bon sent it no key: {how}")
            return EngineError(f"{where} answered {status}: {message}")
        # An error event inside the stream (vLLM's engine died mid-request): may pass.
        return Transient(f"failed mid-stream: {self._scrub(str(exc))}")

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.client.close()
