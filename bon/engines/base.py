"""The one small async interface every backend implements.

A caller awaits `generate(request)` for one prompt and gets `request.n` completions.
Engines batch whatever requests are pending at once (the vLLM engine and a server do it
themselves; the transformers engine gathers them), so callers never batch by hand and a
thousand tournaments can simply await their own matches.

Besides `generate`, an engine may offer capabilities: its context limit, counting a
prompt's tokens (so the judge can cut answers to fit), streaming, endpoint health. `Engine`
names each one with a default that says what bon does without it; `EngineWrapper` is the
base of engines that stand in front of another and forward all of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import Any

from bon.errors import BonError


class EngineError(BonError, RuntimeError):
    """A backend failure that ends the run (one line for the user, exit 1)."""

    resume_command: str | None = None  # set by the command line: how to continue the run


class RecordError(EngineError):
    """A request failed for this record alone (e.g. the server rejects its prompt): the
    record gets an `error` field and the run goes on."""


class ServerGaveUp(EngineError):
    """Every endpoint stayed down (or stalled) past the give-up limit: the run ends, its
    finished work kept, and the message says what failed last (`reason`)."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason


class BackendUnavailable(EngineError):
    """A backend that cannot run as asked (not installed, missing URL): a usage error, exit 2."""


@dataclass(frozen=True)
class GenerationRequest:
    messages: list[dict[str, str]]  # chat messages; the engine applies the model's template
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None = None  # engines derive distinct per-sample seeds from it
    # Lower runs sooner (vLLM's convention). A scheduling hint only: it never changes the
    # text, so it is no part of a request's identity (checkpoint.request_key leaves it out).
    priority: int = 0


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" or "length"
    completion_tokens: int | None  # None where the backend does not report it per sample


@dataclass(frozen=True)
class Generation:
    completions: list[Completion]
    prompt_tokens: int
    completion_tokens: int  # all samples together


def chat_prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """The prompt as the model was trained to see it: its own chat template with the
    generation prompt, as token ids. The rendered template already holds any BOS token,
    so tokenizing must add no special tokens a second time."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False).input_ids


class Engine(ABC):
    """What every backend is: `generate` is the one thing it must do; the capabilities after
    it are optional, and their defaults here say what bon does without them.

    Callers ask the interface, never probe for attributes, so a backend that lacks a
    capability gets the documented fallback rather than silently losing a feature.
    """

    name: str  # "backend:model", for logs and records; an engine that sets none is named by its class

    # The most tokens (prompt and completion) one request may hold; None: unknown, so the
    # judge prompt is sent whole (see count_prompt_tokens). Fixed once the engine has loaded.
    context_limit: int | None = None

    # Whether `stream` yields text as the model writes it (`bon compare` shows it live);
    # False: streaming falls back to one whole generation, and compare shows each vote when done.
    can_stream: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not hasattr(cls, "name"):  # records and logs name every engine: a third party's that sets none, by its class
            cls.name = cls.__name__

    @abstractmethod
    async def generate(self, request: GenerationRequest) -> Generation:
        """`request.n` completions of one prompt. RecordError fails that record alone; any
        other EngineError ends the run."""

    async def close(self) -> None:
        """Free what the engine holds (GPU memory, connections); nothing by default."""

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int | None:
        """Tokens of `messages` as the model sees them (its chat template applied); None: this
        engine cannot count. The judge then cannot cut answers to fit `context_limit`: a
        prompt too long for the model goes out whole, the backend rejects it, and that
        record is written with the backend's reason as its `error` (the run goes on)."""
        return None

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[str | Completion, None]:
        """One sample: text pieces, then the whole Completion. By default one generation,
        yielded as a single piece when it is done (`can_stream` is False)."""
        (completion,) = (await self.generate(replace(request, n=1))).completions
        yield completion.text
        yield completion

    def health(self) -> tuple[int, int] | None:
        """(endpoints taking requests, endpoints) for the progress line; None: no endpoints (a local engine)."""
        return None

    def outages(self) -> tuple[int, int]:
        """(times an endpoint went down, times one came back) so far, for the run's summary."""
        return 0, 0

    def count_tokens_with(self, on_tokens: Callable[[int], None]) -> bool:
        """Call `on_tokens(count)` as generated tokens arrive, for a live tokens/s. Returns
        whether this engine can (False by default: its tokens count when a generation ends)."""
        return False


class EngineWrapper(Engine):
    """An engine in front of another, which it serves as it is: every capability is the
    inner engine's. A wrapper overrides what it changes (caching, gating, another loop)."""

    def __init__(self, inner: Engine):
        self.inner = inner
        # Facts about the loaded model, copied once: they do not change while it runs.
        self.name, self.context_limit, self.can_stream = inner.name, inner.context_limit, inner.can_stream

    async def generate(self, request: GenerationRequest) -> Generation:
        return await self.inner.generate(request)

    async def close(self) -> None:
        await self.inner.close()

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int | None:
        return self.inner.count_prompt_tokens(messages)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[str | Completion, None]:
        async for piece in self.inner.stream(request):
            yield piece

    def health(self) -> tuple[int, int] | None:
        return self.inner.health()

    def outages(self) -> tuple[int, int]:
        return self.inner.outages()

    def count_tokens_with(self, on_tokens: Callable[[int], None]) -> bool:
        return self.inner.count_tokens_with(on_tokens)
