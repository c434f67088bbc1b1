"""The knockout bracket: shuffle, pair neighbours, winners advance until one is left.

n candidates take n-1 matches (fewer when identical texts meet) over ceil(log2 n) rounds.
The order is shuffled with a generator seeded from the run seed and the record id. With an
odd count, one candidate sits the round out (a bye): never the one that sat out the last round,
then the one with the fewest byes so far, the latest in the order among those.
Candidates with identical text never play each other: the lower index goes through
without a judge call.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from bon.config import TournamentConfig
from bon.tournament.seeds import derive_seed
from bon.tournament.voting import BYE, IDENTICAL, Ask, Match, decide_match


@dataclass
class Tournament:
    winner: int
    seed: int
    rounds: list[list[Match]] = field(default_factory=list)
    strategy: str = "knockout"

    @property
    def votes(self):
        return [v for matches in self.rounds for m in matches for v in m.votes]

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "seed": self.seed,
            "rounds": [[m.to_json() for m in matches] for matches in self.rounds],
        }


async def knockout(
    candidates: list[str], ask: Ask, config: TournamentConfig, record_id: str | int,
    on_match: Callable[[Match], None] | None = None,
) -> Tournament:
    """Play the bracket; `on_match` (optional) hears of every decided match, e.g. for progress."""
    record_seed = derive_seed(config.seed, record_id)
    order = list(range(len(candidates)))
    random.Random(record_seed).shuffle(order)
    byes = [0] * len(candidates)
    tournament = Tournament(winner=order[0], seed=config.seed)
    matches_played = 0
    last_bye = None

    async def play(a: int, b: int, round_no: int, slot: int, match_no: int) -> Match:
        if candidates[a] == candidates[b]:
            match = Match(a, b, min(a, b), IDENTICAL)
        else:
            seed = derive_seed(record_seed, round_no, slot)
            match = await decide_match(a, b, ask, config, seed, extra_to_a_first=match_no % 2 == 0)
        if on_match:
            on_match(match)
        return match

    while len(order) > 1:
        bye = None
        if len(order) % 2:
            # Fewest byes first, never last round's bye again; min() keeps the first
            # minimum it meets, so walking from the end makes the latest one win ties.
            pick = min(reversed(range(len(order))), key=lambda i: (order[i] == last_bye, byes[order[i]]))
            bye = order.pop(pick)
            byes[bye] += 1
        last_bye = bye
        pairs = [(order[i], order[i + 1]) for i in range(0, len(order), 2)]
        round_no = len(tournament.rounds)
        matches = list(
            await asyncio.gather(
                *(play(a, b, round_no, slot, matches_played + slot) for slot, (a, b) in enumerate(pairs))
            )
        )
        matches_played += len(pairs)
        order = [m.winner for m in matches]
        if bye is not None:
            matches.append(Match(bye, None, bye, BYE))
            order.append(bye)
        tournament.rounds.append(matches)
    tournament.winner = order[0]
    return tournament
