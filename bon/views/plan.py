"""What a judge job will cost, before it runs: matches, judge samples, tokens, hours.

Nothing is loaded or sent. The counts come from bon's own tournament code: each record's
tournament is played by its strategy, with answer teams as a run forms them, against a
stand-in `ask` whose votes are unanimous, so identical texts that meet, byes, elo's pair
budget and early stopping count exactly as a run counts them. What no plan can know is how often a
real judge disagrees with itself; that spread is what min / usual / max bracket:

- min: every vote agrees (with early stopping, a match then needs only ⌈votes/2⌉);
- usual: `votes` per match;
- max: the vote budget per match (ties drawing extra votes until it is spent).

With `--budget`, matches may get fewer samples than `votes` and swiss plays on while its
judge disagrees with itself, so usual is the stand-in's spend without early stopping and
max the spend of a stand-in whose every vote is invalid (for swiss: the budget). A strategy
whose matches spend a fixed count (`fixed_spend`: the pool, 2 × votes a pair) is counted the
same way: min, usual and max are then one figure.

Records that carry candidates are planned with their own texts (identical ones never meet
a judge; with answer grouping, their own answers form the teams); the others with `n`
distinct candidates still to be sampled — for answer-aware runs an upper bound, since
sampled candidates that agree save matches. With grouping, how many matches a bracket
needs also depends on which answers win; the plan counts the stand-in judge's outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from bon.config import TournamentConfig
from bon.errors import UsageError
from bon.io.output import read_output
from bon.io.records import InputError, Record
from bon.plugins import get_strategy
from bon.runs.judge import play
from bon.tournament import Vote
from bon.tournament.answers import Checker


@dataclass
class Plan:
    queries: int = 0
    candidates: int = 0
    matches: int = 0  # matches that need the judge
    min_samples: int = 0
    usual_samples: int = 0
    max_samples: int = 0
    tokens_per_sample: float | None = None  # measured in a previous output
    tokens_per_second: float | None = None  # the judge engine's throughput, if given

    @property
    def judge_tokens(self) -> int | None:
        return None if self.tokens_per_sample is None else round(self.usual_samples * self.tokens_per_sample)

    @property
    def hours(self) -> float | None:
        if self.judge_tokens is None or not self.tokens_per_second:
            return None
        return self.judge_tokens / self.tokens_per_second / 3600

    def to_json(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "candidates": self.candidates,
            "matches": self.matches,
            "judge_samples": {"min": self.min_samples, "usual": self.usual_samples, "max": self.max_samples},
            "judge_tokens": self.judge_tokens,
            "hours": self.hours,
        }


class Planner:
    """Plays each record's tournament against the stand-in judge and adds up its work."""

    def __init__(self, n: int, tournament: TournamentConfig):
        self.n, self.tournament = n, tournament
        self.strategy = get_strategy(tournament.strategy)
        self.checker = Checker(tournament.group_by_answer) if tournament.group_by_answer else None
        self._by_size: dict[int, tuple[int, int, int, int]] = {}  # distinct candidates -> counts

    async def _play(
        self, record_id: str | int, candidates: list[str], tournament: TournamentConfig, valid: bool = True
    ) -> tuple[int, int]:
        """(judged matches, judge samples) against a stand-in judge: unanimous, or (`valid`
        False) one whose every vote is invalid, so every match spends all it may."""
        samples = 0

        async def stand_in(first: int, second: int, k: int, seed: int) -> list[Vote]:
            """A judge that agrees with itself in both orders: the alphabetically first answer wins."""
            nonlocal samples
            samples += k
            chosen = (first if candidates[first] <= candidates[second] else second) if valid else None
            return [Vote(first, second, chosen, "plan", "stop", None) for _ in range(k)]

        result = await play(self.strategy, candidates, stand_in, tournament, record_id, self.checker)
        return sum(1 for matches in result.rounds for m in matches if m.votes), samples

    async def _count(self, record_id: str | int, candidates: list[str]) -> tuple[int, int, int, int]:
        """(judged matches, min, usual, max judge samples) for one record's candidates.

        Unbudgeted: usual is `votes` a match and max the vote budget a match. With --budget,
        a match may get less than either, and swiss plays more matches when the judge
        disagrees with itself: usual is the stand-in's spend without early stopping, max
        the spend of a judge that never gives a valid verdict (all a match or a record may)."""
        config = self.tournament
        matches, fewest = await self._play(record_id, candidates, config)
        if config.budget is None and not self.strategy.fixed_spend:
            return matches, fewest, matches * config.votes, matches * config.vote_budget
        _, usual = await self._play(record_id, candidates, replace(config, early_stop=False))
        _, most = await self._play(record_id, candidates, config, valid=False)
        return matches, fewest, usual, most

    async def work(self, record: Record) -> tuple[int, int, int, int, int]:
        """(candidates, judged matches, min, usual, max judge samples) for one record."""
        candidates = record.candidates
        if candidates is not None and (len(set(candidates)) < len(candidates) or self.tournament.group_by_answer):
            # Which identical texts (or same answers) meet depends on the bracket: play this record's own.
            return len(candidates), *await self._count(record.id, list(candidates))
        # All distinct: the work depends on the count alone (the bracket's order does not matter).
        size = self.n if candidates is None else len(candidates)
        if size not in self._by_size:
            self._by_size[size] = await self._count("plan", [f"candidate {i}" for i in range(size)])
        return size, *self._by_size[size]


async def _plan(records: Iterable[Record], n: int, tournament: TournamentConfig) -> Plan:
    planner, plan = Planner(n, tournament), Plan()
    for record in records:
        candidates, matches, fewest, usual, most = await planner.work(record)
        plan.queries += 1
        plan.candidates += candidates
        plan.matches += matches
        plan.min_samples += fewest
        plan.usual_samples += usual
        plan.max_samples += most
    return plan


def make_plan(
    records: Iterable[Record],
    n: int,
    tournament: TournamentConfig,
    tokens_per_sample: float | None = None,
    tokens_per_second: float | None = None,
) -> Plan:
    """The plan for `records` judged as `tournament` says (`n` for records without candidates)."""
    # "min" is what the tournament's own early-stop setting needs when every vote agrees.
    plan = asyncio.run(_plan(records, n, tournament))
    plan.tokens_per_sample, plan.tokens_per_second = tokens_per_sample, tokens_per_second
    return plan


def judge_work_per_record(size: int, tournament: TournamentConfig) -> tuple[int, int]:
    """(judged matches, judge samples) a record of `size` distinct candidates usually takes
    (the plan's "usual": judged matches × votes), for a run's ETA from work."""
    planner = Planner(size, tournament)
    matches, _, usual, _ = asyncio.run(planner._count("plan", [f"candidate {i}" for i in range(size)]))
    return matches, usual


def measured_tokens_per_sample(path: str, lines: Iterable[str]) -> float:
    """Judge completion tokens per judge sample over a previous bon output's records."""
    samples = tokens = 0
    try:
        for record in read_output(lines):
            usage = record.usage
            if usage and usage.judge_samples and usage.judge_completion_tokens is not None:
                samples += usage.judge_samples
                tokens += usage.judge_completion_tokens
    except InputError as exc:
        raise UsageError(f"{path} line {exc.line} is not a bon record ({exc.problem})") from None
    if not samples:
        raise UsageError(f"{path} holds no judged record with token counts to measure from")
    return tokens / samples
