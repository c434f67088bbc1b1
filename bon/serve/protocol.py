"""OpenAI's wire format, as bon serve speaks it: request bodies in, the openai package's types out.

A chat request's `messages` become a record's `messages` (as `bon run` reads them), a
completion request's `prompt` its `query`. OpenAI's `temperature`, `top_p`, `max_tokens`
(`max_completion_tokens`), `stop` and `seed` set the policy's sampling; bon's own knobs ride
in an extension object `bon` (`n` candidates, `votes`, `strategy`, `group_by_answer`,
`seed`, `trace`), checked against the operator's limits. A request is one choice (the
winner): OpenAI's `n` above 1, tools and logprobs are refused with a 400 naming them.
"""

from __future__ import annotations

import importlib
import math
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from bon.config import SamplingConfig, ServeConfig, TournamentConfig
from bon.errors import BonError, UsageError

EXTENSION = "bon"  # the request's and the answer's extension field
OVERRIDES = ("n", "votes", "strategy", "group_by_answer", "seed", "trace")
REFUSED = {  # OpenAI fields bon cannot honour: a 400 rather than a silently different answer
    "tools": "bon serve answers with text only: `tools` are not supported",
    "functions": "bon serve answers with text only: `functions` are not supported",
    "logprobs": "bon serve returns no logprobs (the winner is a whole candidate, not a token stream)",
    "top_logprobs": "bon serve returns no logprobs",
    "echo": "bon serve does not echo prompts",
    "suffix": "bon serve does not take a suffix",
    "best_of": "bon serve's best-of is bon.n (candidates judged by the RRM)",
}
SERVE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "prometheus_client": "prometheus_client"}


def missing_packages() -> list[str]:
    """The packages of the `serve` extra that cannot be imported (serving imports them all anyway)."""
    missing = []
    for name, module in SERVE_PACKAGES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(name)
    return missing


def check_installed() -> None:
    missing = missing_packages()
    if missing:
        raise UsageError(f'bon serve needs {", ".join(missing)}: pip install "bon[serve]"')


class RequestError(BonError):
    """A request bon answers with an OpenAI error object: `status`, one-line message, the
    field at fault (`param`) and OpenAI's error `type`."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}
    TYPES |= {429: "rate_limit_error", 503: "service_unavailable", 500: "internal_error"}

    def __init__(self, status: int, message: str, param: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.retry_after = status, message, param, retry_after

    def body(self) -> dict[str, Any]:
        kind = self.TYPES.get(self.status, "error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.status}}

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


def bad(message: str, param: str | None = None) -> RequestError:
    return RequestError(400, message, param)


@dataclass(frozen=True)
class Defaults:
    """What a request gets for what it does not say, and what it may ask for at most."""

    model: str  # the served name
    n: int
    tournament: TournamentConfig
    sampling: SamplingConfig  # the policy's
    limits: ServeConfig


@dataclass(frozen=True)
class Ask:
    """One request, read: the record's input, its settings, and how to answer."""

    kind: str  # "chat" or "text"
    data: dict[str, Any]  # the record's input object ({"messages": …} or {"query": …})
    n: int
    tournament: TournamentConfig
    sampling: SamplingConfig
    stop: tuple[str, ...]
    trace: bool
    stream: bool
    include_usage: bool

    def settings(self) -> dict[str, Any]:
        """The request's settings, for its trace record."""
        t, s = self.tournament, self.sampling
        out: dict[str, Any] = {
            "n": self.n,
            "votes": t.votes,
            "max_votes": t.max_votes,
            "strategy": t.strategy,
            "seed": t.seed,
        }
        out |= {"group_by_answer": t.group_by_answer, "early_stop": t.early_stop, "max_pairs": t.max_pairs}
        out |= {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
        return out | ({"stop": list(self.stop)} if self.stop else {})


def _number(body: dict, name: str, low: float, high: float, integer: bool = False, within: str = "") -> Any:
    value = body.get(name)
    if value is None:
        return None
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        what = "an integer" if integer else "a number"
        raise bad(
            f"`{within}{name}` must be {what} from {low:g} to {high:g}, got {value!r}", within.rstrip(".") or name
        )
    return value


def _text_content(content: Any, i: int) -> str:
    """A message's content as text: a string, or a list of text parts (OpenAI's content parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(f"`messages[{i}].content`: bon serve takes text parts only", "messages")
            texts.append(part["text"])
        return "".join(texts)
    raise bad(f"`messages[{i}].content` must be a string or a list of text parts", "messages")


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise bad("`messages` must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise bad(f"`messages[{i}]` must be an object", "messages")
        role = "system" if message.get("role") == "developer" else message.get("role")
        out.append({"role": role, "content": _text_content(message.get("content"), i)})
    return out  # roles and the final user turn are checked as `bon run` checks its input


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise bad("`stop` must be a string or a list of up to 4 non-empty strings", "stop")
    return tuple(stops)


def _overrides(value: Any, defaults: Defaults) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(f"`{EXTENSION}` must be an object with any of: {', '.join(OVERRIDES)}", EXTENSION)
    unknown = sorted(set(value) - set(OVERRIDES))
    if unknown:
        raise bad(f"`{EXTENSION}` does not take {', '.join(unknown)} (it takes {', '.join(OVERRIDES)})", EXTENSION)
    limits = defaults.limits
    out: dict[str, Any] = {}
    for name, high in (("n", limits.limit_n), ("votes", limits.limit_votes)):
        if name in value:
            number = _number(value, name, 1, high, integer=True, within=f"{EXTENSION}.")
            if number is None:
                raise bad(f"`{EXTENSION}.{name}` must be an integer from 1 to {high}", EXTENSION)
            out[name] = number
    if "seed" in value:
        if isinstance(value["seed"], bool) or not isinstance(value["seed"], int):
            raise bad(f"`{EXTENSION}.seed` must be an integer", EXTENSION)
        out["seed"] = value["seed"]
    for name in ("strategy", "group_by_answer"):
        if name in value:
            if value[name] is not None and not isinstance(value[name], str):
                raise bad(f"`{EXTENSION}.{name}` must be a string", EXTENSION)
            out[name] = value[name]
    if "trace" in value:
        if not isinstance(value["trace"], bool):
            raise bad(f"`{EXTENSION}.trace` must be true or false", EXTENSION)
        out["trace"] = value["trace"]
    return out


def parse(body: Any, kind: str, defaults: Defaults) -> Ask:
    """A chat (`kind` "chat") or completion ("text") request body, checked: its Ask, or a 400."""
    from bon.runs.roles import tournament_config

    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    model = body.get("model")
    if model != defaults.model:
        raise RequestError(404, f"the model `{model}` does not exist: this server serves `{defaults.model}`", "model")
    for name, why in REFUSED.items():
        if body.get(name) not in (None, False, [], 0) and not (name == "best_of" and body.get(name) == 1):
            raise bad(why, name)
    if body.get("n") not in (None, 1):
        raise bad("bon serve answers with one choice, the winner: set bon.n for the number of candidates", "n")
    if kind == "chat":
        data: dict[str, Any] = {"messages": _messages(body.get("messages"))}
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt.strip():
            raise bad("`prompt` must be one non-empty string", "prompt")
        data = {"query": prompt}

    sampling = defaults.sampling
    temperature = _number(body, "temperature", 0.0, 2.0)
    top_p = _number(body, "top_p", 0.0, 1.0)
    most = defaults.limits.limit_max_tokens or 1 << 30
    max_tokens = _number(body, "max_completion_tokens", 1, most, integer=True)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", 1, most, integer=True)
    sampling = SamplingConfig(
        temperature=sampling.temperature if temperature is None else temperature,
        top_p=sampling.top_p if top_p is None else top_p,
        max_tokens=sampling.max_tokens if max_tokens is None else max_tokens,
    )
    if defaults.limits.limit_max_tokens and sampling.max_tokens > defaults.limits.limit_max_tokens:
        sampling = replace(sampling, max_tokens=defaults.limits.limit_max_tokens)

    extension = _overrides(body.get(EXTENSION), defaults)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad("`seed` must be an integer", "seed")
    tournament = defaults.tournament
    changes: dict[str, Any] = {k: extension[k] for k in ("votes", "strategy", "group_by_answer") if k in extension}
    if "votes" in changes and tournament.max_votes is not None and tournament.max_votes < changes["votes"]:
        changes["max_votes"] = None  # the operator's budget was for fewer votes: 2 × the request's
    if "seed" in extension or seed is not None:
        changes["seed"] = extension.get("seed", seed)
    if changes:
        try:
            fields = {f: getattr(tournament, f) for f in tournament.__dataclass_fields__}
            tournament = tournament_config(**(fields | changes))
        except UsageError as exc:
            raise bad(f"`{EXTENSION}`: {exc}", EXTENSION) from None
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise bad("`stream` must be true or false", "stream")
    options = body.get("stream_options") or {}
    return Ask(
        kind=kind,
        data=data,
        n=extension.get("n", defaults.n),
        tournament=tournament,
        sampling=sampling,
        stop=_stop(body.get("stop")),
        trace=extension.get("trace", True),
        stream=stream,
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
    )


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """`text` up to the first of `stops` (the stop string left out, as OpenAI's servers do)."""
    ends = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(ends)], True) if ends else (text, False)


# ---- answers, in the openai package's own types ----


def new_id(kind: str) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"


def usage_of(record: dict[str, Any]) -> dict[str, Any]:
    """What a request cost, in tokens: the policy's (one prompt, N candidates) plus the judge's
    (every match's prompts and every vote's reasoning)."""
    sampling = record.get("sampling") or {}
    judge = record.get("usage") or {}
    prompt = (sampling.get("prompt_tokens") or 0) + (judge.get("judge_prompt_tokens") or 0)
    completion = (sampling.get("completion_tokens") or 0) + (judge.get("judge_completion_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(record: dict[str, Any], stopped: bool) -> str:
    if stopped:
        return "stop"
    reasons = (record.get("sampling") or {}).get("finish_reasons") or []
    index = record.get("best_index")
    if isinstance(index, int) and 0 <= index < len(reasons):
        return "length" if reasons[index] == "length" else "stop"
    return "stop"


def answer(ask: Ask, response_id: str, model: str, record: dict[str, Any], stopped: bool) -> Any:
    """The whole answer: a ChatCompletion or a Completion. The record (`bon`) is the caller's
    to add: a dict of its size costs more to pass through pydantic than to serialize."""
    from openai.types.chat import ChatCompletion, ChatCompletionMessage
    from openai.types.chat.chat_completion import Choice
    from openai.types.completion import Completion
    from openai.types.completion_choice import CompletionChoice
    from openai.types.completion_usage import CompletionUsage

    usage = CompletionUsage(**usage_of(record))
    reason: Any = finish_reason(record, stopped)
    created = int(time.time())
    if ask.kind == "chat":
        message = ChatCompletionMessage(role="assistant", content=record["best"])
        choice = Choice(index=0, finish_reason=reason, message=message)
        return ChatCompletion(
            id=response_id,
            object="chat.completion",
            created=created,
            model=model,
            choices=[choice],
            usage=usage,
        )
    text_choice = CompletionChoice(index=0, finish_reason=reason, text=record["best"])
    return Completion(
        id=response_id,
        object="text_completion",
        created=created,
        model=model,
        choices=[text_choice],
        usage=usage,
    )


def chunks(ask: Ask, response_id: str, model: str, record: dict[str, Any] | None, stopped: bool = False) -> list[Any]:
    """Streamed pieces: with no record, the opening one (the assistant's role); with the
    record, the winner's text, the finish (carrying `bon`), and the usage when asked for."""
    from openai.types.chat import ChatCompletionChunk
    from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta
    from openai.types.completion import Completion
    from openai.types.completion_choice import CompletionChoice
    from openai.types.completion_usage import CompletionUsage

    created = int(time.time())
    if ask.kind == "chat":

        def chunk(delta: ChoiceDelta | None, reason: Any = None, **extra: Any) -> Any:
            choices = [] if delta is None else [Choice(index=0, delta=delta, finish_reason=reason)]
            return ChatCompletionChunk(
                id=response_id, object="chat.completion.chunk", created=created, model=model, choices=choices, **extra
            )

        if record is None:
            return [chunk(ChoiceDelta(role="assistant", content=""))]
        out = [chunk(ChoiceDelta(content=record["best"]))]
        out.append(chunk(ChoiceDelta(), finish_reason(record, stopped), **({EXTENSION: record} if ask.trace else {})))
        if ask.include_usage:
            out.append(chunk(None, usage=CompletionUsage(**usage_of(record))))
        return out

    def text_chunk(text: str | None, reason: Any = None, **extra: Any) -> Any:
        choices = [] if text is None else [CompletionChoice(index=0, text=text, finish_reason=reason)]
        return Completion(
            id=response_id, object="text_completion", created=created, model=model, choices=choices, **extra
        )

    if record is None:
        return []
    out = [text_chunk(record["best"], finish_reason(record, stopped), **({EXTENSION: record} if ask.trace else {}))]
    if ask.include_usage:
        out.append(text_chunk(None, usage=CompletionUsage(**usage_of(record))))
    return out
