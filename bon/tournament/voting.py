"""One match: several sampled judgments, split between the two orders, decided by majority.

Generative judges prefer a position measurably often, so a match's votes are split as
evenly as possible between "a shown first" and "b shown first"; with an odd count the
extra vote alternates between the orders from match to match. The side with more valid
votes wins. With early stopping, a first wave of ⌈K/2⌉ votes goes out, then only as many
as could still change the result (a unanimous judge settles K=5 with 3 samples). Without
a majority (a tie, or too many invalid votes), balanced pairs of extra votes are drawn
until the vote budget is spent; then a seeded coin decides. An invalid vote is recorded as
such, never counted as half a vote.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bon.config import TournamentConfig
from bon.tasks import gather
from bon.tournament.seeds import derive_seed

MAJORITY, TIEBREAK, BYE, IDENTICAL = "majority", "tiebreak", "bye", "identical"
SAME_ANSWER = "same_answer"  # team-mates (one final answer) meet: no judge call


@dataclass
class Vote:
    first: int  # candidate shown as Assistant 1
    second: int  # candidate shown as Assistant 2
    verdict: int | None  # candidate chosen, or None for an invalid vote
    reasoning: str  # the judge's full completion
    finish_reason: str
    completion_tokens: int | None
    reason: str | None = None  # why the vote is invalid: truncated, no_verdict, bad_verdict
    truncated_input: bool = False  # the judge saw shortened answers (they did not fit its context)
    judge: str | None = None  # which judge voted, where a match may have two (--escalate-judge)

    def to_json(self) -> dict[str, Any]:
        out = {
            "first": self.first,
            "verdict": self.verdict,
            "reasoning": self.reasoning,
            "finish_reason": self.finish_reason,
            "completion_tokens": self.completion_tokens,
        }
        if self.verdict is None:
            out["reason"] = self.reason
        if self.truncated_input:
            out["truncated_input"] = True
        if self.judge is not None:
            out["judge"] = self.judge
        return out


# ask(first, second, k, seed) -> k votes with `first` shown as Assistant 1
Ask = Callable[[int, int, int, int], Awaitable[list[Vote]]]


@dataclass
class Match:
    a: int
    b: int | None  # None for a bye
    winner: int
    decided_by: str
    votes: list[Vote] = field(default_factory=list)
    votes_saved: int = 0  # votes early stopping did not need to draw
    judge: str | None = None  # with --escalate-judge: the judge that decided it
    escalated: bool = False  # the first judge's votes left it in doubt; the escalation judge decided

    @property
    def tally(self) -> dict[str, int]:
        """The deciding judge's votes counted (every vote, where the match has one judge)."""
        votes = [v for v in self.votes if self.judge is None or v.judge == self.judge]
        return {
            "a": sum(v.verdict == self.a for v in votes),
            "b": sum(v.verdict == self.b for v in votes if self.b is not None),
            "invalid": sum(v.verdict is None for v in votes),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "winner": self.winner,
            "tally": self.tally,
            "decided_by": self.decided_by,
            "votes": [v.to_json() for v in self.votes],
        } | (
            ({"votes_saved": self.votes_saved} if self.votes_saved else {})
            | ({"judge": self.judge} if self.judge is not None else {})
            | ({"escalated": True} if self.escalated else {})
        )


class Escalating:
    """An `ask` (the judge) that carries a second judge for the matches its votes leave in
    doubt (`--escalate-judge`): called, it asks the first judge; `decide_match` turns to
    `escalate` when the first judge's votes do not all agree. `names`: the two judges, for the trace."""

    def __init__(self, ask: Ask, escalate: Ask, names: tuple[str, str]):
        self.ask, self.escalate, self.names = ask, escalate, names

    async def __call__(self, first: int, second: int, k: int, seed: int) -> list[Vote]:
        return await self.ask(first, second, k, seed)


def counting(ask: Ask, spend: Callable[[int], None]) -> Ask:
    """`ask`, telling `spend` how many samples each call asks for (either judge's, when it escalates)."""

    async def counted_by(inner: Ask, first: int, second: int, k: int, seed: int) -> list[Vote]:
        spend(k)
        return await inner(first, second, k, seed)

    if isinstance(ask, Escalating):
        first, second = ask.ask, ask.escalate
        return Escalating(lambda *call: counted_by(first, *call), lambda *call: counted_by(second, *call), ask.names)
    return lambda *call: counted_by(ask, *call)


def capped(config: TournamentConfig, samples: int) -> TournamentConfig:
    """`config` for a match that may spend at most `samples` judge samples (≥ 1): its votes
    and its vote budget (extra votes on a tie or invalid verdicts) both within `samples`."""
    if samples >= config.vote_budget:
        return config
    return replace(config, votes=min(config.votes, samples), max_votes=samples)


def split_votes(votes: int, extra_to_a_first: bool) -> tuple[int, int]:
    """How many of `votes` show a first and how many show b first."""
    a_first = (votes + 1) // 2 if extra_to_a_first else votes // 2
    return a_first, votes - a_first


async def decide_match(
    a: int, b: int, ask: Ask, config: TournamentConfig, match_seed: int, extra_to_a_first: bool = True
) -> Match:
    if isinstance(ask, Escalating):
        return await escalating_match(a, b, ask, config, match_seed, extra_to_a_first)
    waves = 0
    shown_a_first = shown_b_first = 0

    async def wave(a_first: int, b_first: int) -> list[Vote]:
        nonlocal waves, shown_a_first, shown_b_first
        waves += 1
        shown_a_first, shown_b_first = shown_a_first + a_first, shown_b_first + b_first
        asks = []
        if a_first:
            asks.append(ask(a, b, a_first, derive_seed(match_seed, waves - 1, "ab")))
        if b_first:
            asks.append(ask(b, a, b_first, derive_seed(match_seed, waves - 1, "ba")))
        return [vote for votes in await gather(*asks) for vote in votes]

    def balanced(count: int) -> tuple[int, int]:
        """Split `count` votes so the two orders stay as even as possible overall."""
        if shown_a_first == shown_b_first:
            return split_votes(count, extra_to_a_first)
        return split_votes(count, shown_a_first < shown_b_first)

    saved = 0
    if config.early_stop:
        # First ⌈K/2⌉ votes; then only as many as could still change the result.
        votes = await wave(*split_votes((config.votes + 1) // 2, extra_to_a_first))
        remaining = config.votes - len(votes)
        while remaining > 0:
            lead = abs(_lead(votes, a, b))
            if lead > remaining:  # even every remaining vote for the other side cannot catch up
                saved = remaining
                break
            draw = (remaining - lead) // 2 + 1  # the fewest that could settle it
            votes += await wave(*balanced(draw))
            remaining -= draw
    else:
        votes = await wave(*split_votes(config.votes, extra_to_a_first))
    while _lead(votes, a, b) == 0 and len(votes) + 2 <= config.vote_budget:
        votes += await wave(1, 1)

    lead = _lead(votes, a, b)
    if lead:
        return Match(a, b, a if lead > 0 else b, MAJORITY, votes, saved)
    coin = random.Random(derive_seed(match_seed, "coin")).random() < 0.5
    return Match(a, b, a if coin else b, TIEBREAK, votes, saved)


def _lead(votes: list[Vote], a: int, b: int) -> int:
    return sum(v.verdict == a for v in votes) - sum(v.verdict == b for v in votes)


async def escalating_match(
    a: int, b: int, ask: Escalating, config: TournamentConfig, match_seed: int, extra_to_a_first: bool
) -> Match:
    """The first judge draws the match's `votes`; where every one is valid and for the same
    side, it decides. Otherwise the escalation judge plays the match as `decide_match` does
    (its votes, extra votes while no side leads, the coin) within what is left of the match's
    vote budget, which counts both judges' samples; with nothing left, the first judge's
    votes decide as they would alone."""
    first_judge, second_judge = ask.names
    first = await decide_match(a, b, ask.ask, replace(config, max_votes=config.votes), match_seed, extra_to_a_first)
    for vote in first.votes:
        vote.judge = first_judge
    tally = first.tally
    if tally["invalid"] == 0 and 0 in (tally["a"], tally["b"]) and first.decided_by == MAJORITY:
        first.judge = first_judge
        return first
    left = config.vote_budget - len(first.votes)
    if left < 1:
        first.judge = first_judge
        return first
    second = await decide_match(
        a, b, ask.escalate, capped(config, left), derive_seed(match_seed, "escalate"), extra_to_a_first
    )
    for vote in second.votes:
        vote.judge = second_judge
    return Match(
        a,
        b,
        second.winner,
        second.decided_by,
        first.votes + second.votes,
        first.votes_saved + second.votes_saved,
        judge=second_judge,
        escalated=True,
    )
