"""The knockout bracket: shuffle, pair neighbours, winners advance until one is left.

n candidates take n-1 matches (fewer when identical texts meet) over ceil(log2 n) rounds.
The order is shuffled with a generator seeded from the run seed and the record id.
Neighbours meet; in a round with an odd count the last slot sits out (a bye) and moves to
the front of the next round, so nobody gets two byes in a row.

The bracket's shape is fixed before any match is played (which slot feeds which match),
so each match starts the moment its two feeder matches are decided: a slow
(long-thinking) match delays only its own path to the final, never its neighbours, and
the engine always holds every match that is ready. With `--budget B`, each match may spend
⌊B / (n − 1)⌋ judge samples at most (its votes and its extra votes both), so the bracket
never spends more than B; a budget under one sample a match is refused. Candidates with identical text never
play each other: the lower index goes through without a judge call.

Answer-aware (`teams`: each candidate's answer group, the PairJudge RM design): a slot
carries a squad — one or more team-mates, in bracket order — instead of one candidate.
- The first round is arranged so team-mates meet only where the counts force it (a team
  larger than half the field); later rounds keep the fixed bracket, so scheduling stays
  continuous.
- Two squads of one team merge and advance together, unjudged (`same_answer`).
- Squads of different teams play a relay: their first members meet, the loser is out and
  the next member of its squad steps in, until one squad is spent. Every judged match thus
  eliminates one candidate, and a team with more members has more chances.
- The tournament ends the moment every candidate still in shares one answer; the winner
  is the first of them in bracket order. Without teams every candidate is its own team,
  and this is the plain knockout above.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from bon.config import TournamentConfig
from bon.errors import UsageError
from bon.tasks import settle
from bon.tournament.seeds import derive_seed
from bon.tournament.strategy import Strategy, Tournament
from bon.tournament.voting import BYE, IDENTICAL, SAME_ANSWER, Ask, Match, capped, decide_match


def separate_teams(order: list[int], teams: list[int], rng: random.Random) -> list[int]:
    """A first-round order in which neighbours are of different teams wherever the counts allow.

    Candidates sorted by team size (largest first; ties and members keep the shuffled
    order) are split in halves and the halves zipped: a team meets itself only in the
    pairs its size beyond half the field forces. With an odd count the bye goes to the
    largest team, which leaves the fewest forced pairs. The pairs are then shuffled.
    """
    size = Counter(teams[c] for c in order)
    first_seen: dict[int, int] = {}
    for position, c in enumerate(order):
        first_seen.setdefault(teams[c], position)
    ranked = sorted(order, key=lambda c: (-size[teams[c]], first_seen[teams[c]]))
    bye = [ranked.pop(0)] if len(ranked) % 2 else []
    half = len(ranked) // 2
    pairs = [[ranked[i], ranked[half + i]] for i in range(half)]
    rng.shuffle(pairs)
    for pair in pairs:
        rng.shuffle(pair)
    return [c for pair in pairs for c in pair] + bye


async def knockout(
    candidates: list[str],
    ask: Ask,
    config: TournamentConfig,
    record_id: str | int,
    on_match: Callable[[Match], None] | None = None,
    teams: list[int] | None = None,
) -> Tournament:
    """Play the bracket; `on_match` (optional) hears of every decided match, e.g. for progress.

    `teams` (optional): each candidate's answer group (equal numbers: one final answer).
    """
    record_seed = derive_seed(config.seed, record_id)
    order = list(range(len(candidates)))
    random.Random(record_seed).shuffle(order)
    if teams is None:
        team = list(range(len(candidates)))  # everyone alone: the plain knockout
    else:
        team = teams
        order = separate_teams(order, team, random.Random(derive_seed(record_seed, "teams")))
    position = {c: p for p, c in enumerate(order)}
    tournament = Tournament(winner=order[0] if order else 0, seed=config.seed)
    if len({team[c] for c in order}) <= 1:  # one candidate, or one answer for all
        return tournament
    match_config = config
    if config.budget is not None:  # every match the same share: n - 1 at most are judged
        share = config.budget // (len(candidates) - 1)
        if share < 1:
            raise UsageError(
                f"--budget {config.budget} is less than one judge sample for each of a knockout's "
                f"{len(candidates) - 1} matches ({len(candidates)} candidates): raise it, or use --strategy swiss"
            )
        match_config = capped(config, share)
    recorded: list[list[tuple[int, int, Match]]] = []  # per round: (slot, nth in slot, match)
    started: list[asyncio.Future] = []
    matches_before = [0]  # matches in earlier rounds, to number matches bracket-wide
    loop = asyncio.get_running_loop()
    alive = set(order)
    ended: asyncio.Future = loop.create_future()  # set when the survivors share one answer

    def record(round_no: int, slot: int, nth: int, match: Match) -> None:
        recorded[round_no].append((slot, nth, match))
        if on_match and match.decided_by != BYE:
            on_match(match)

    def eliminate(loser: int) -> None:
        alive.discard(loser)
        if len({team[c] for c in alive}) == 1 and not ended.done():
            ended.set_result(min(alive, key=position.__getitem__))

    async def play(left: asyncio.Future, right: asyncio.Future, round_no: int, slot: int) -> list[int]:
        squads = [list(await left), list(await right)]  # both feeders decided: this match starts now
        if ended.done():  # the tournament is over; nothing left to decide
            return squads[0] + squads[1]
        if team[squads[0][0]] == team[squads[1][0]]:
            merged = sorted(squads[0] + squads[1], key=position.__getitem__)
            record(round_no, slot, 0, Match(squads[0][0], squads[1][0], merged[0], SAME_ANSWER))
            return merged
        nth = 0
        while squads[0] and squads[1]:  # a relay: the loser is out, its next team-mate steps in
            a, b = squads[0][0], squads[1][0]
            if candidates[a] == candidates[b]:
                match = Match(a, b, min(a, b), IDENTICAL)
            else:
                seed = derive_seed(record_seed, round_no, slot, *([nth] if nth else []))
                match_no = matches_before[round_no] + slot + nth
                match = await decide_match(a, b, ask, match_config, seed, extra_to_a_first=match_no % 2 == 0)
            loser = b if match.winner == a else a
            squads[0 if loser == a else 1].remove(loser)
            record(round_no, slot, nth, match)
            eliminate(loser)
            nth += 1
        return squads[0] or squads[1]

    async def sit_out(feeder: asyncio.Future, round_no: int, slot: int) -> list[int]:
        squad = await feeder
        if not ended.done():
            record(round_no, slot, 0, Match(squad[0], None, squad[0], BYE))
        return squad

    def start(coroutine: Coroutine[Any, Any, list[int]]) -> asyncio.Future:
        started.append(asyncio.ensure_future(coroutine))
        return started[-1]

    level = []
    for candidate in order:
        level.append(loop.create_future())
        level[-1].set_result([candidate])
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
        await asyncio.wait([level[0], ended], return_when=asyncio.FIRST_COMPLETED)
        tournament.winner = ended.result() if ended.done() else level[0].result()[0]
    finally:
        await settle(started)  # on an error, a cancel or an early end, nothing of this bracket keeps running
    tournament.rounds = [[m for _, _, m in sorted(matches, key=lambda snm: snm[:2])] for matches in recorded if matches]
    return tournament


class Knockout(Strategy):
    """The RRM paper's knockout: n-1 matches over ceil(log2 n) rounds (see `knockout`)."""

    name = "knockout"
    summary = "n-1 matches"

    async def play(
        self,
        candidates: list[str],
        ask: Ask,
        config: TournamentConfig,
        record_id: str | int,
        on_match: Callable[[Match], None] | None = None,
        teams: list[int] | None = None,
    ) -> Tournament:
        return await knockout(candidates, ask, config, record_id, on_match, teams)
