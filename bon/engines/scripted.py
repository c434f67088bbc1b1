"""A scripted engine: deterministic judgments without a model.

For logic tests and scheduling benchmarks (bracket, voting, resume), where what matters
is that the judge's preferences are known. Not a backend a user selects.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from bon.engines.base import Completion, Engine, Generation, GenerationRequest

# decide(answer_shown_first, answer_shown_second, rng) -> the text the judge "writes"
Decide = Callable[[str, str, random.Random], str]


def prefers_longer(first: str, second: str, rng: random.Random) -> str:
    """A judge that always prefers the longer answer (ties: the first shown)."""
    return f"<think>compare lengths</think>\\boxed{{Assistant {1 if len(first) >= len(second) else 2}}}"


def seeded_coin(first: str, second: str, rng: random.Random) -> str:
    """A judge that flips a coin seeded by the request's seed: its choices follow the seeds
    bon derives, so two runs agree exactly when they sent the same seeds."""
    return f"<think>flip a coin</think>\\boxed{{Assistant {rng.randint(1, 2)}}}"


def split_judge_prompt(user: str) -> tuple[str, str]:
    """The two answers out of a rendered RRM user message."""
    _, rest = user.split("### Assistant 1\n\n", 1)
    first, rest = rest.rsplit("\n\n\n### Assistant 2\n\n", 1)
    second = rest.rsplit("\n\n## Analysis\n\n", 1)[0]
    return first, second


class ScriptedEngine(Engine):
    """Judges with `decide`; answers policy prompts with `candidate {i}` texts.

    `latency(request)` (seconds) lets scheduling tests and benchmarks make some requests slow.
    """

    name = "scripted"
    can_stream = True

    def __init__(
        self,
        decide: Decide = prefers_longer,
        latency: Callable[[GenerationRequest], float] | None = None,
        keep_requests: bool = True,
    ):
        self.decide = decide
        self.latency = latency
        self.keep_requests = keep_requests  # tests inspect them; benchmarks must not grow
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> Generation:
        if self.keep_requests:
            self.requests.append(request)
        if self.latency:
            await asyncio.sleep(self.latency(request))
        user = request.messages[-1]["content"]
        rng = random.Random(request.seed)
        if "### Assistant 1" in user:
            first, second = split_judge_prompt(user)
            texts = [self.decide(first, second, rng) for _ in range(request.n)]
        else:
            texts = [f"answer {i} to: {user}" + "!" * i for i in range(request.n)]
        completions = [Completion(t, "stop", len(t.split())) for t in texts]
        return Generation(completions, len(user.split()), sum(c.completion_tokens or 0 for c in completions))

    async def close(self) -> None:
        pass

    async def stream(self, request: GenerationRequest):
        """The same judgment as generate() with n=1, in word-sized pieces."""
        generation = await self.generate(
            GenerationRequest(request.messages, 1, request.temperature, request.top_p, request.max_tokens, request.seed)
        )
        (completion,) = generation.completions
        for piece in completion.text.split(" "):
            yield piece + " "
            await asyncio.sleep(0)
        yield completion
