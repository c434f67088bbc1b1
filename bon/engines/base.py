"""The one small async interface every backend implements.

A caller awaits `generate(request)` for one prompt and gets `request.n` completions.
Engines batch whatever requests are pending at once (the vLLM engine and a server do it
themselves; the transformers engine gathers them), so callers never batch by hand and a
thousand tournaments can simply await their own matches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bon.errors import BonError


class EngineError(BonError, RuntimeError):
    """A backend failure that ends the run (one line for the user, exit 1)."""


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


class Engine(Protocol):
    name: str  # "backend:model", for logs and records

    async def generate(self, request: GenerationRequest) -> Generation: ...

    async def close(self) -> None: ...


@runtime_checkable
class StreamingEngine(Protocol):
    """An engine that can also stream one sample: text pieces, then the whole Completion."""

    def stream(self, request: GenerationRequest) -> AsyncIterator[str | Completion]: ...
