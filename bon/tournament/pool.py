"""A pool: every pair judged `votes` times in each order, so any strategy can be replayed offline.

`--strategy pool --votes K` asks the judge K samples with a shown first and K with b shown
first, for every pair of distinct texts (identical texts never meet, as in every strategy):
n(n−1)/2 × 2K samples a query, the RRM paper's evaluation design. The record keeps every
vote with the order it was shown in, so the pool holds, for each ordered pair, K votes in
the order the judge gave them.

Its own pick: a Bradley–Terry fit over every valid vote (each vote one game, as swiss
counts them; invalid votes are no game and are not redrawn: a pool records what the judge
said). Records carry `ranking` and `scores` as elo's, and `tournament.votes_per_order`.
Each pair's match is decided by its majority (a seeded coin on a tie), for `bon show` and
`bon pairs`; the ranking does not depend on those coins.

Replaying (`PoolAsk`): an `ask` that answers a request for k votes of (first, second) with
the next k recorded votes of that order, so a strategy played against it makes the very
choices it would have made live against a judge that gave those votes. Running out
**counts as spent**: the missing votes come back invalid (reason `pool_exhausted`), cost
their samples like any invalid vote (so budgets stay honest and a strategy re-votes as it
would), and `PoolAsk.short` counts them, so a pool too shallow for a setting shows instead
of failing the whole replay. A pool of K a side is deep enough for any knockout or elo of
up to K votes (extra votes on ties included: at most `max_votes` / 2 a side); swiss may
meet a pair again, so give it a deeper pool or watch `short`.

`--group-by-answer` and `--budget` are refused: a pool judges every pair, team-mates
included, and groups answers (or caps budgets) only when replayed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from bon.config import TournamentConfig
from bon.errors import UsageError
from bon.tasks import gather
from bon.tournament.elo import RoundRobin, bradley_terry
from bon.tournament.seeds import derive_seed
from bon.tournament.strategy import Tournament
from bon.tournament.voting import IDENTICAL, MAJORITY, TIEBREAK, Ask, Match, Vote

POOL = "pool"
VOTES_PER_ORDER = "votes_per_order"  # the trace's key: K
POOL_EXHAUSTED = "pool_exhausted"  # the reason of a replayed vote the pool did not hold


async def pool(
    candidates: list[str],
    ask: Ask,
    config: TournamentConfig,
    record_id: str | int,
    on_match: Callable[[Match], None] | None = None,
    teams: list[int] | None = None,
) -> Tournament:
    """Judge every pair of distinct texts `config.votes` times in each order (see the module)."""
    n, k = len(candidates), config.votes
    record_seed = derive_seed(config.seed, record_id, POOL)

    async def play(i: int, j: int) -> Match:
        if candidates[i] == candidates[j]:
            match = Match(i, j, i, IDENTICAL)
        else:
            i_first, j_first = await gather(
                ask(i, j, k, derive_seed(record_seed, i, j, "ab")), ask(j, i, k, derive_seed(record_seed, i, j, "ba"))
            )
            votes = list(i_first) + list(j_first)
            lead = sum(v.verdict == i for v in votes) - sum(v.verdict == j for v in votes)
            if lead:
                match = Match(i, j, i if lead > 0 else j, MAJORITY, votes)
            else:
                coin = random.Random(derive_seed(record_seed, i, j, "coin")).random() < 0.5
                match = Match(i, j, i if coin else j, TIEBREAK, votes)
        if on_match:
            on_match(match)
        return match

    matches = list(await gather(*(play(i, j) for i in range(n) for j in range(i + 1, n))))
    wins: dict[tuple[int, int], float] = {}
    for match in matches:
        assert match.b is not None
        if match.decided_by == IDENTICAL:  # a draw, unjudged, as elo counts it
            for x, y in ((match.a, match.b), (match.b, match.a)):
                wins[(x, y)] = wins.get((x, y), 0.0) + 0.5
        for vote in match.votes:
            if vote.verdict is not None:
                loser = vote.second if vote.verdict == vote.first else vote.first
                wins[(vote.verdict, loser)] = wins.get((vote.verdict, loser), 0.0) + 1.0
    result = Tournament(
        winner=0,
        seed=config.seed,
        rounds=[matches] if matches else [],
        strategy=POOL,
        scores=bradley_terry(n, wins) if n else [],
        details={VOTES_PER_ORDER: k},
    )
    if n:
        assert result.ranking is not None
        result.winner = result.ranking[0]
    return result


class Pool(RoundRobin):
    """Every pair, `votes` samples in each order, recorded for offline replay (`bon curve`)."""

    name = POOL
    summary = "every pair, --votes K in each order, for bon curve to replay any strategy from"
    fixed_spend = True

    async def play(
        self,
        candidates: list[str],
        ask: Ask,
        config: TournamentConfig,
        record_id: str | int,
        on_match: Callable[[Match], None] | None = None,
        teams: list[int] | None = None,
    ) -> Tournament:
        return await pool(candidates, ask, config, record_id, on_match, teams)

    def check(self, config: TournamentConfig) -> None:
        if config.group_by_answer is not None:
            raise UsageError(
                "--strategy pool judges every pair, team-mates included: leave out --group-by-answer "
                "(group answers when replaying the pool)"
            )
        if config.budget is not None:
            raise UsageError(
                "--strategy pool spends n(n-1) × votes samples a query by design: leave out --budget "
                "(budgets are replayed from the pool by bon curve)"
            )


class PoolAsk:
    """An `ask` answering from a recorded pool: `votes[(first, second)]` are that order's
    recorded votes, handed out in order across calls (see the module for running out).

    `samples`: every sample asked for; `short`: those the pool did not hold; `tokens`: the
    completion tokens of the recorded votes handed out (`untimed`: how many of those did
    not carry a count)."""

    def __init__(self, votes: Mapping[tuple[int, int], Sequence[Vote]]):
        self.votes = votes
        self.used: dict[tuple[int, int], int] = {}
        self.samples = self.short = self.tokens = self.untimed = 0

    async def __call__(self, first: int, second: int, k: int, seed: int) -> list[Vote]:
        recorded = self.votes.get((first, second), ())
        start = self.used.get((first, second), 0)
        taken = [replace(v) for v in recorded[start : start + k]]  # copies: a strategy may mark them
        self.used[(first, second)] = start + len(taken)
        self.samples += k
        self.short += k - len(taken)
        for vote in taken:
            if vote.completion_tokens is None:
                self.untimed += 1
            else:
                self.tokens += vote.completion_tokens
        missing = [Vote(first, second, None, "", POOL_EXHAUSTED, None, POOL_EXHAUSTED) for _ in range(k - len(taken))]
        return taken + missing
