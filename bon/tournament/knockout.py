"""The knockout bracket: shuffle, pair neighbours, winners advance until one is left.

n candidates take n-1 matches (fewer when identical texts meet) over ceil(log2 n) rounds.
The order is shuffled with a generator seeded from the run seed and the record id.
Neighbours meet; in a round with an odd count the last slot sits out (a bye) and moves to
the front of the next round, so nobody gets two byes in a row.

The bracket's shape is fixed before any match is played (which slot feeds which match),
so each match starts the moment its two feeder matches are decided: a slow
(long-thinking) match delays only its own path to the final, never its neighbours, and
the engine always holds every match that is ready. Candidates with identical text never
play each other: the lower index goes through without a judge call.
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
    tournament = Tournament(winner=order[0], seed=config.seed)
    recorded: list[list[tuple[int, Match]]] = []  # per round: (slot, match), in the order decided
    started: list[asyncio.Future] = []
    matches_before = [0]  # matches in earlier rounds, to number matches bracket-wide

    async def play(left: asyncio.Future, right: asyncio.Future, round_no: int, slot: int) -> int:
        a, b = await left, await right  # both feeders decided: this match starts now
        if candidates[a] == candidates[b]:
            match = Match(a, b, min(a, b), IDENTICAL)
        else:
            seed = derive_seed(record_seed, round_no, slot)
            match_no = matches_before[round_no] + slot
            match = await decide_match(a, b, ask, config, seed, extra_to_a_first=match_no % 2 == 0)
        recorded[round_no].append((slot, match))
        if on_match:
            on_match(match)
        return match.winner

    async def sit_out(feeder: asyncio.Future, round_no: int, slot: int) -> int:
        candidate = await feeder
        recorded[round_no].append((slot, Match(candidate, None, candidate, BYE)))
        return candidate

    def start(coroutine) -> asyncio.Future:
        started.append(asyncio.ensure_future(coroutine))
        return started[-1]

    loop = asyncio.get_running_loop()
    level = []
    for candidate in order:
        level.append(loop.create_future())
        level[-1].set_result(candidate)
    try:
        while len(level) > 1:
            round_no = len(recorded)
            recorded.append([])
            bye = level.pop() if len(level) % 2 else None
            pairs = len(level) // 2
            matches_before.append(matches_before[-1] + pairs)
            level = [start(play(level[2 * i], level[2 * i + 1], round_no, i)) for i in range(pairs)]
            if bye is not None:
                level.insert(0, start(sit_out(bye, round_no, pairs)))  # first next round: no second bye
        tournament.winner = await level[0]
    finally:
        for future in started:  # on an error, nothing of this bracket keeps running
            future.cancel()
    tournament.rounds = [[m for _, m in sorted(matches, key=lambda sm: sm[0])] for matches in recorded]
    return tournament
