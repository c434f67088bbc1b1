"""Swiss pairing within a judge budget: votes go where the leader is still in doubt.

A knockout spends `votes` on every match, lopsided or not; a round-robin judges every
pair. Swiss (V1-Infer's pairing, with Bradley–Terry ratings as OpenDeepThink and Reasoning
Arena fit them from sparse pairs) spends a budget of B judge samples per query adaptively:

- Ratings: a Bradley–Terry fit (bon.tournament.elo.bradley_terry, with its weak prior) over
  every valid vote so far, each vote one game won by the candidate it chose, whichever
  order the pair was shown in. Invalid votes are no game: they cost budget and say nothing.
  Team-mates (`--group-by-answer`) and identical texts draw once, unjudged, as elo counts
  them, so a team's members stay close.
- The leader is the top rated (equal ratings: the earlier in a seeded shuffle of the
  record, never simply the first candidate). A rival is in doubt while the fit gives it at
  least DOUBT chance of beating the leader (a 2–0 head-to-head, or a 1–0 win over someone
  who beat it, puts a rival out of doubt; a single 1–0 does not).
- A round pairs the leader and the rivals in doubt, best rated first, each with the
  closest rated one still free that is not a team-mate (or an identical text); among
  equally close ones, the one it has met least. A player left over sits the round out.
  Each pair plays a match as a knockout does (`votes` split across both orders, early
  stopping, extra votes while no side leads), and the round's matches run at once.
- It stops when no rival is in doubt (the leader is decided) or the budget is spent.

Budget accounting: a round hands each of its matches `votes` samples (fewer in the last
round when fewer remain; pairs beyond what remains wait), and splits what is left of the
budget evenly among them as their allowance for extra votes on a tie or invalid verdicts.
A match never draws more than its allowance, so a record never spends more than B; what a
match leaves unspent (early stopping) goes to the next round. Allowances are fixed before
a round is played, so results never depend on which reply came back first.

Without `--budget`, B is what a knockout usually spends: (n − 1) × votes.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from bon.config import TournamentConfig
from bon.tasks import gather
from bon.tournament.elo import RoundRobin, bradley_terry
from bon.tournament.seeds import derive_seed
from bon.tournament.strategy import Tournament
from bon.tournament.voting import Ask, Match, capped, counting, decide_match

DOUBT = 0.2  # a rival is in doubt while the fit gives it this chance of beating the leader


def beats_chance(ratings: list[float], rival: int, leader: int) -> float:
    """The Bradley–Terry chance that `rival` beats `leader` (Elo-scale ratings)."""
    return 1.0 / (1.0 + 10 ** ((ratings[leader] - ratings[rival]) / 400))


def default_budget(n: int, config: TournamentConfig) -> int:
    return config.budget if config.budget is not None else max(1, (n - 1) * config.votes)


def pair_round(
    pool: list[int], ratings: list[float], group: list[int], met: dict[tuple[int, int], int], position: list[int]
) -> list[tuple[int, int]]:
    """Pairs of `pool`, best rated first, each with the closest rated free player of another
    group (ties: the one met least, then the earlier in the shuffle)."""
    free = sorted(pool, key=lambda c: (-ratings[c], position[c]))
    pairs = []
    while free:
        x = free.pop(0)
        options = [y for y in free if group[y] != group[x]]
        if not options:
            continue
        y = min(options, key=lambda y: (abs(ratings[x] - ratings[y]), met.get((min(x, y), max(x, y)), 0), position[y]))
        free.remove(y)
        pairs.append((x, y))
    return pairs


def allowances(pairs: int, left: int, votes: int) -> list[int]:
    """Samples each of a round's matches may spend: `votes` each while `left` lasts, then
    the rest split evenly (the earlier pairs take the remainder). Never more than `left`."""
    base: list[int] = []
    for _ in range(pairs):
        if left - sum(base) < 1:
            break
        base.append(min(votes, left - sum(base)))
    slack = left - sum(base)
    return [b + slack // len(base) + (k < slack % len(base)) for k, b in enumerate(base)] if base else []


async def swiss(
    candidates: list[str],
    ask: Ask,
    config: TournamentConfig,
    record_id: str | int,
    on_match: Callable[[Match], None] | None = None,
    teams: list[int] | None = None,
) -> Tournament:
    """Play swiss rounds until the leader is decided or the budget is spent (see the module)."""
    n = len(candidates)
    record_seed = derive_seed(config.seed, record_id, "swiss")
    order = list(range(n))
    random.Random(record_seed).shuffle(order)
    position = [0] * n
    for p, c in enumerate(order):
        position[c] = p
    # Who may never be judged against whom: team-mates, and identical texts.
    # (Identical texts share a final answer, so teams keep them apart too.)
    first_with_text: dict[str, int] = {}
    group = list(teams) if teams is not None else [first_with_text.setdefault(t, c) for c, t in enumerate(candidates)]
    wins: dict[tuple[int, int], float] = {}
    for i in range(n):
        for j in range(i + 1, n):
            if group[i] == group[j]:  # an unjudged draw, as elo counts it
                wins[(i, j)] = wins.get((i, j), 0.0) + 0.5
                wins[(j, i)] = wins.get((j, i), 0.0) + 0.5
    budget = default_budget(n, config)
    spent = 0
    met: dict[tuple[int, int], int] = {}
    rounds: list[list[Match]] = []
    decided = True

    def spend(samples: int) -> None:
        nonlocal spent
        spent += samples  # what was asked for is spent, whatever comes back

    counted = counting(ask, spend)

    async def play(round_no: int, slot: int, a: int, b: int, cap: int) -> Match:
        match = await decide_match(
            a,
            b,
            counted,
            capped(config, cap),
            derive_seed(record_seed, round_no, slot),
            extra_to_a_first=(round_no + slot) % 2 == 0,
        )
        if on_match:
            on_match(match)
        return match

    def rate() -> list[float]:
        return bradley_terry(n, wins) if n else []

    def leader_of(ratings: list[float]) -> int:
        return min(range(n), key=lambda c: (-ratings[c], position[c]))

    ratings = rate()
    while n > 1:
        leader = leader_of(ratings)
        doubted = [c for c in range(n) if group[c] != group[leader] and beats_chance(ratings, c, leader) >= DOUBT]
        if not doubted:
            break
        left = budget - spent
        pairs = pair_round([leader, *doubted], ratings, group, met, position)
        caps = allowances(len(pairs), left, config.votes)
        if not caps:
            decided = False
            break
        round_no = len(rounds)
        matches = list(
            await gather(*(play(round_no, slot, a, b, cap) for slot, ((a, b), cap) in enumerate(zip(pairs, caps))))
        )
        for match in matches:
            assert match.b is not None
            key = (min(match.a, match.b), max(match.a, match.b))
            met[key] = met.get(key, 0) + 1
            for vote in match.votes:
                if vote.verdict is not None:
                    loser = vote.second if vote.verdict == vote.first else vote.first
                    wins[(vote.verdict, loser)] = wins.get((vote.verdict, loser), 0.0) + 1.0
        rounds.append(matches)
        ratings = rate()
    return Tournament(
        winner=leader_of(ratings) if n else 0,
        seed=config.seed,
        rounds=rounds,
        strategy="swiss",
        scores=ratings,
        tiebreak=position,
        details={"budget": budget, "spent": spent, "decided": decided},
    )


class Swiss(RoundRobin):
    """Swiss rounds of close-rated pairs within a judge budget; Bradley–Terry ratings rank
    the candidates (record fields and `bon pairs` evidence as elo's)."""

    name = "swiss"
    summary = "close-rated pairs where the leader is in doubt, within --budget samples"

    async def play(
        self,
        candidates: list[str],
        ask: Ask,
        config: TournamentConfig,
        record_id: str | int,
        on_match: Callable[[Match], None] | None = None,
        teams: list[int] | None = None,
    ) -> Tournament:
        return await swiss(candidates, ask, config, record_id, on_match, teams)
