"""The two model roles as the pipeline sees them: a Sampler (policy) and a Referee (runs the RRM-judged tournament).

They turn records into engine requests and engine completions into candidates or votes.
Prompt rendering goes through prompts.py, verdicts through verdict.py; the tournament
itself stays pure and only sees the `ask` function built here.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from bon.config import SamplingConfig, TournamentConfig
from bon.engines.base import Completion, Engine, GenerationRequest, RecordError
from bon.io.prompts import Template
from bon.io.records import Record
from bon.plugins import get_strategy
from bon.tournament import Ask, Vote, derive_seed
from bon.tournament.answers import Checker, group_answers, team_of
from bon.tournament.strategy import Strategy, Tournament
from bon.tournament.verdict import parse_verdict
from bon.tournament.voting import Escalating


@dataclass
class Usage:
    """Judge work spent on one record (and summed over a run)."""

    judge_requests: int = 0
    judge_samples: int = 0
    judge_prompt_tokens: int = 0
    judge_completion_tokens: int = 0
    invalid_votes: int = 0
    votes_saved: int = 0  # by --early-stop

    def add(self, other: Usage) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def to_vote(
    first: int, second: int, completion: Completion, usage: Usage, truncated_input: bool = False, thinking: bool = False
) -> Vote:
    """A judge completion as a vote for a candidate index (or an invalid vote with its reason);
    `thinking`: the judge's template says it thinks, so its verdict counts only after `</think>`."""
    verdict = parse_verdict(completion.text, completion.finish_reason, thinking)
    chosen = None if verdict.position is None else (first, second)[verdict.position - 1]
    usage.invalid_votes += chosen is None
    return Vote(
        first,
        second,
        chosen,
        completion.text,
        completion.finish_reason,
        completion.completion_tokens,
        verdict.reason,
        truncated_input,
    )


OMITTED = "\n\n[… {} characters omitted by bon: the answer did not fit the judge's context …]\n\n"


def shorten(text: str, keep: int) -> str:
    """Head and tail of `text`, `keep` characters in all, with a visible marker between."""
    if keep >= len(text):
        return text
    head = keep - keep // 2
    return text[:head] + OMITTED.format(len(text) - keep) + (text[len(text) - keep // 2 :] if keep // 2 else "")


def fit_answers(render, count_tokens, budget: int, answer1: str, answer2: str) -> tuple[list[dict], bool]:
    """Judge messages that fit `budget` prompt tokens, shortening both answers if needed.

    Both answers keep the same share of their length (largest that fits, by bisection), so
    neither is favoured. Raises RecordError when even empty answers do not fit.
    """
    messages = render(answer1, answer2)
    if count_tokens(messages) <= budget:
        return messages, False

    def at(share: float) -> list[dict]:
        return render(shorten(answer1, int(len(answer1) * share)), shorten(answer2, int(len(answer2) * share)))

    if count_tokens(at(0.0)) > budget:
        raise RecordError(
            f"the judge prompt does not fit the model's context ({budget} tokens after the "
            "thinking budget) even with the answers cut: the query is too long"
        )
    low, high = 0.0, 1.0
    for _ in range(14):
        middle = (low + high) / 2
        low, high = (middle, high) if count_tokens(at(middle)) <= budget else (low, middle)
    return at(low), True


# Engines that honour priorities (vLLM with scheduling_policy="priority") run lower values
# first. Earlier records go first so records finish — and are written — in input order as
# early as possible, instead of every record's deep rounds queueing behind everyone's first
# round; within a record, deeper rounds first. Measured in benchmarks/simulate.py.
ROUNDS_PER_RECORD = 64  # depth slots per record: more rounds than any bracket has


def request_priority(position: int, depth: int = 0) -> int:
    """The priority of a request for the record at `position` (input order), `depth`
    matches into its tournament."""
    return position * ROUNDS_PER_RECORD - min(depth, ROUNDS_PER_RECORD - 1)


class Sampler:
    """Samples N candidates per record from the policy: one request with `n=N`."""

    def __init__(
        self,
        engine: Engine,
        template: Template,
        sampling: SamplingConfig,
        n: int,
        seed: int,
        system: str | None = None,
        on_generation=None,
    ):
        self.engine, self.template, self.sampling = engine, template, sampling
        self.n, self.seed, self.system = n, seed, system
        self.on_generation = on_generation  # progress callback(samples, completion_tokens)

    def messages(self, record: Record) -> list[dict[str, str]]:
        if record.messages is not None:
            messages = list(record.messages)
            has_system = messages[0]["role"] == "system"
        else:
            messages = self.template.render(query=record.question)
            has_system = messages[0]["role"] == "system"
            if self.system is not None and has_system:
                messages = messages[1:]
                has_system = False
        if self.system and not has_system:
            messages.insert(0, {"role": "system", "content": self.system})
        return messages

    async def sample(self, record: Record) -> None:
        request = GenerationRequest(
            messages=self.messages(record),
            n=self.n,
            temperature=self.sampling.temperature,
            top_p=self.sampling.top_p,
            max_tokens=self.sampling.max_tokens,
            seed=derive_seed(self.seed, record.id, "policy"),
            priority=request_priority(record.line),
        )
        generation = await self.engine.generate(request)
        if self.on_generation:
            self.on_generation(len(generation.completions), generation.completion_tokens)
        record.candidates = [c.text for c in generation.completions]
        record.output["candidates"] = record.candidates
        record.output["sampling"] = {
            "policy": self.engine.name,
            "finish_reasons": [c.finish_reason for c in generation.completions],
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
        }


class Referee:
    """Runs a record's tournament, by the configured strategy, with the RRM as the judge of every match."""

    def __init__(
        self,
        engine: Engine,
        template: Template,
        sampling: SamplingConfig,
        tournament: TournamentConfig,
        on_generation=None,
        on_match=None,
        escalate=None,
        escalate_engine: Callable[[], Awaitable[Engine]] | None = None,
    ):
        self.engine, self.template, self.sampling, self.tournament = engine, template, sampling, tournament
        # --escalate-judge: a bon.Judge whose engine loads on the first match in doubt;
        # `escalate_engine` (a run with a sidecar): where to get that engine instead, so
        # its replies are kept in the sidecar and a resume reuses them
        self.escalate = escalate
        self.escalate_engine = escalate_engine
        self.on_generation = on_generation  # progress callback(samples, completion_tokens, invalid votes)
        self.on_match = on_match  # progress callback(match)
        # Answer-aware tournaments: built once, so a missing math-verify fails before any work.
        self.checker = Checker(tournament.group_by_answer) if tournament.group_by_answer else None
        self.strategy = get_strategy(tournament.strategy)

    def messages(self, question: str, answer1: str, answer2: str) -> tuple[list[dict], bool]:
        """The judge prompt, its answers cut to fit the engine's context when the engine knows
        its limit and counts tokens; else whole (see Engine.count_prompt_tokens)."""
        render = lambda x, y: self.template.render(question=question, answer1=x, answer2=y)  # noqa: E731
        messages = render(answer1, answer2)
        if not self.engine.context_limit:
            return messages, False
        budget = self.engine.context_limit - self.sampling.max_tokens
        tokens = self.engine.count_prompt_tokens(messages)
        if tokens is None or tokens <= budget:
            return messages, False
        return fit_answers(render, self.engine.count_prompt_tokens, budget, answer1, answer2)

    def asker(self, question: str, candidates: list[str], usage: Usage, position: int = 0) -> Ask:
        """The tournament's `ask` for one record; `position` (its place in the input) and
        the match's depth set each request's priority."""
        # The depth is read off the asks themselves, so no bracket code has to pass it:
        # a match is as deep as the most opponents either side has already faced (a
        # knockout round's matches all see the same count; repeated asks of one pair,
        # such as its two orders or tie-break waves, keep their depth).
        opponents: dict[int, set[int]] = {}

        async def ask(first: int, second: int, k: int, seed: int) -> list[Vote]:
            faced_first, faced_second = opponents.setdefault(first, set()), opponents.setdefault(second, set())
            depth = max(len(faced_first - {second}), len(faced_second - {first}))
            faced_first.add(second)
            faced_second.add(first)
            messages, shortened = self.messages(question, candidates[first], candidates[second])
            request = GenerationRequest(
                messages,
                k,
                self.sampling.temperature,
                self.sampling.top_p,
                self.sampling.max_tokens,
                seed,
                priority=request_priority(position, depth),
            )
            generation = await self.engine.generate(request)
            usage.judge_requests += 1
            usage.judge_samples += len(generation.completions)
            usage.judge_prompt_tokens += generation.prompt_tokens
            usage.judge_completion_tokens += generation.completion_tokens
            votes = [
                to_vote(first, second, completion, usage, shortened, self.template.thinking)
                for completion in generation.completions
            ]
            if self.on_generation:
                self.on_generation(len(votes), generation.completion_tokens, sum(v.verdict is None for v in votes))
            return votes

        return ask

    def escalation_asker(self, record: Record, usage: Usage) -> Ask:
        """The escalation judge's `ask` for one record: its engine is loaded by the first
        match that needs it (a run whose first judge always agrees never loads it)."""
        escalate, asks = self.escalate, {}

        async def ask(first: int, second: int, k: int, seed: int) -> list[Vote]:
            if "ask" not in asks:
                engine = await (self.escalate_engine or escalate.engine)()
                referee = Referee(engine, escalate.template, escalate.sampling, self.tournament, self.on_generation)
                assert record.candidates is not None
                asks["ask"] = referee.asker(record.question, record.candidates, usage, position=record.line)
            return await asks["ask"](first, second, k, seed)

        return ask

    async def select(self, record: Record) -> Usage:
        assert record.candidates is not None
        usage = Usage()
        ask = self.asker(record.question, record.candidates, usage, position=record.line)
        if self.escalate is not None:
            ask = Escalating(ask, self.escalation_asker(record, usage), (self.engine.name, self.escalate.config.model))
        result = await play(
            self.strategy, record.candidates, ask, self.tournament, record.id, self.checker, self.on_match
        )
        usage.votes_saved = sum(m.votes_saved for matches in result.rounds for m in matches)
        record.output.update(
            candidates=record.candidates,
            best=record.candidates[result.winner],
            best_index=result.winner,
            **self.strategy.record_fields(result),
            tournament=result.to_json() | {"judge": self.engine.name},
            usage=usage.to_json(),
        )
        return usage


async def play(
    strategy: Strategy,
    candidates: list[str],
    ask: Ask,
    tournament: TournamentConfig,
    record_id: str | int,
    checker: Checker | None = None,
    on_match=None,
) -> Tournament:
    """One record's tournament by `strategy`; with a `checker` (answer-aware runs) candidates
    with one final answer form a team, and the trace lists the teams."""
    groups = teams = None
    if checker is not None:
        groups = group_answers(candidates, checker)
        teams = team_of(groups, len(candidates))
    result = await strategy.play(candidates, ask, tournament, record_id, on_match, teams)
    if groups is not None:
        result.answer_groups = [group.to_json() for group in groups]
    return result


async def compare(judge: Referee, question: str, answers: list[str], on_vote=None, on_text=None):
    """One match between two answers, for a person watching: votes run one at a time and,
    where the engine streams, their text arrives through `on_text` as it is generated.

    on_vote(number, first, second) is called before each vote. Returns (Match, Usage).
    """
    from bon.tournament import decide_match

    usage = Usage()
    batch_ask = judge.asker(question, answers, usage)
    one_at_a_time = asyncio.Lock()
    counter = itertools.count(1)
    streaming = judge.engine.can_stream and on_text is not None

    async def ask(first: int, second: int, k: int, seed: int) -> list[Vote]:
        async with one_at_a_time:
            if not streaming:
                votes = []
                for i in range(k):
                    if on_vote:
                        on_vote(next(counter), first, second)
                    votes += await batch_ask(first, second, 1, seed + i)
                return votes
            votes = []
            messages, shortened = judge.messages(question, answers[first], answers[second])
            for i in range(k):
                if on_vote:
                    on_vote(next(counter), first, second)
                request = GenerationRequest(
                    messages, 1, judge.sampling.temperature, judge.sampling.top_p, judge.sampling.max_tokens, seed + i
                )
                completion = None
                async for piece in judge.engine.stream(request):
                    if isinstance(piece, Completion):
                        completion = piece
                    else:
                        on_text(piece)
                if completion is None:
                    raise RecordError("the judge's stream ended without its completion")
                usage.judge_requests += 1
                usage.judge_samples += 1
                usage.judge_completion_tokens += completion.completion_tokens or 0
                votes.append(to_vote(first, second, completion, usage, shortened, judge.template.thinking))
            return votes

    match = await decide_match(0, 1, ask, judge.tournament, derive_seed(judge.tournament.seed, "compare"))
    return match, usage
