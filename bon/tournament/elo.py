"""Round-robin ("ELO" in the RRM paper): every pair meets, ratings come from the results.

Ratings are a Bradley–Terry fit, not sequential Elo updates: sequential Elo depends on the
order results arrive in (and so on scheduling); a Bradley–Terry maximum-likelihood fit
depends only on the win counts. A weak prior — every candidate drew one virtual game
(a win and a loss) against a fixed reference of strength 1 — keeps ratings finite when one
candidate wins everything. Ratings are reported on an Elo-like scale:
1500 + 400·log10(strength), so 400 points mean 10:1 odds.

Candidates with exactly equal records (the same wins, the same games against every other
candidate) have equal strength in the fit, but the iteration reaches it through sums in
different orders, so their floats differ in the last bits; those are set equal, so the
ranking's promise (equal scores: the lower index first) holds instead of float noise.

With answer groups (`teams`), team-mates are not judged: their pair counts as a draw.

With `--budget B`, at most ⌊B / votes⌋ pairs are played (chosen as `--max-pairs` chooses
them), each allowed ⌊B / pairs⌋ judge samples at most, so a record never spends more than B.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from bon.config import TournamentConfig
from bon.tasks import gather
from bon.tournament.seeds import derive_seed
from bon.tournament.strategy import RATING_GAP, Evidence, Strategy, Tournament
from bon.tournament.voting import IDENTICAL, SAME_ANSWER, Ask, Match, capped, decide_match

PRIOR_GAMES = 1.0  # virtual wins and losses against the reference, per candidate


def bradley_terry(n: int, wins: dict[tuple[int, int], float], iterations: int = 10_000) -> list[float]:
    """Elo-scale ratings from wins[(i, j)] = how often i beat j (draws count half to each).

    Hunter's MM algorithm with the reference player anchored at strength 1.
    """
    strength = [1.0] * n
    games: dict[tuple[int, int], float] = {}
    for (i, j), w in wins.items():
        games[(min(i, j), max(i, j))] = games.get((min(i, j), max(i, j)), 0.0) + w
    opponents: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for (i, j), g in games.items():
        opponents[i].append((j, g))
        opponents[j].append((i, g))
    total_wins = [PRIOR_GAMES + sum(w for (i, _), w in wins.items() if i == k) for k in range(n)]
    for _ in range(iterations):
        updated = []
        for k in range(n):
            denominator = 2 * PRIOR_GAMES / (strength[k] + 1.0)
            denominator += sum(g / (strength[k] + strength[j]) for j, g in opponents[k])
            updated.append(total_wins[k] / denominator)
        change = max(abs(u - s) / s for u, s in zip(updated, strength))
        strength = updated
        if change < 1e-12:
            break
    ratings = [1500 + 400 * math.log10(s) for s in strength]
    for same in equal_records(n, wins):
        shared = math.fsum(ratings[k] for k in same) / len(same)
        for k in same:
            ratings[k] = shared
    return ratings


def equal_records(n: int, wins: dict[tuple[int, int], float]) -> list[list[int]]:
    """Classes of candidates whose records are exactly equal: as many wins, and as many
    games against each other candidate. (Swapping two of them leaves the likelihood
    unchanged, so the maximum gives them one strength.) Counts are halves: exact floats."""
    games: dict[tuple[int, int], float] = defaultdict(float)
    won = [0.0] * n
    for (i, j), w in wins.items():
        games[(i, j)] += w
        games[(j, i)] += w
        won[i] += w
    classes: list[list[int]] = []
    for k in range(n):
        same = next(
            (
                c
                for c in classes
                if won[c[0]] == won[k]
                and all(games[(c[0], j)] == games[(k, j)] for j in range(n) if j not in (c[0], k))
            ),
            None,
        )
        if same is None:
            classes.append([k])
        else:
            same.append(k)
    return classes


def choose_pairs(n: int, max_pairs: int | None, rng: random.Random) -> list[tuple[int, int]]:
    """All pairs, or `max_pairs` of them chosen so every candidate plays about equally often.

    The subset is built in rounds where everyone plays at most once (a random matching of
    unplayed pairs), so game counts never differ by more than one.
    """
    pairs = list(itertools.combinations(range(n), 2))
    rng.shuffle(pairs)
    if max_pairs is None or max_pairs >= len(pairs):
        return pairs
    used: set[tuple[int, int]] = set()
    played = [0] * n
    chosen: list[tuple[int, int]] = []
    while len(chosen) < max_pairs:
        best_round: list[tuple[int, int]] = []
        for _ in range(64):  # a few random matchings; keep the one that pairs the most
            people = sorted(range(n), key=lambda c: (played[c], rng.random()))
            free, round_pairs = list(people), []
            while len(free) > 1:
                first = free.pop(0)
                partner = next((c for c in free if (min(first, c), max(first, c)) not in used), None)
                if partner is not None:
                    free.remove(partner)
                    round_pairs.append((min(first, partner), max(first, partner)))
            if len(round_pairs) > len(best_round):
                best_round = round_pairs
            if len(best_round) == n // 2:
                break
        for pair in best_round[: max_pairs - len(chosen)]:
            used.add(pair)
            played[pair[0]] += 1
            played[pair[1]] += 1
            chosen.append(pair)
    return chosen


async def round_robin(
    candidates: list[str],
    ask: Ask,
    config: TournamentConfig,
    record_id: str | int,
    max_pairs: int | None = None,
    on_match: Callable[[Match], None] | None = None,
    teams: list[int] | None = None,
) -> Tournament:
    """Play the pairs: the trace holds one round with every match, and the ratings as `scores`.

    `teams` (optional): each candidate's answer group; team-mates draw without a judge call.
    """
    record_seed = derive_seed(config.seed, record_id, "elo")
    rng = random.Random(record_seed)
    match_config = config
    if config.budget is not None:  # fewer pairs, so each keeps its votes; then an equal share each
        affordable = max(1, config.budget // config.votes)
        max_pairs = affordable if max_pairs is None else min(max_pairs, affordable)
    pairs = choose_pairs(len(candidates), max_pairs, rng)
    if config.budget is not None and pairs:
        match_config = capped(config, config.budget // len(pairs))

    async def play(slot: int, i: int, j: int) -> Match:
        a, b = (i, j) if rng_order[slot] else (j, i)
        if teams is not None and teams[a] == teams[b]:
            match = Match(a, b, min(a, b), SAME_ANSWER)
        elif candidates[a] == candidates[b]:
            match = Match(a, b, min(a, b), IDENTICAL)
        else:
            match = await decide_match(
                a, b, ask, match_config, derive_seed(record_seed, i, j), extra_to_a_first=slot % 2 == 0
            )
        if on_match:
            on_match(match)
        return match

    rng_order = [rng.random() < 0.5 for _ in pairs]
    matches = list(await gather(*(play(slot, i, j) for slot, (i, j) in enumerate(pairs))))
    wins: dict[tuple[int, int], float] = {}
    for m in matches:
        assert m.b is not None
        if m.decided_by in (IDENTICAL, SAME_ANSWER):  # a draw
            wins[(m.a, m.b)] = wins.get((m.a, m.b), 0.0) + 0.5
            wins[(m.b, m.a)] = wins.get((m.b, m.a), 0.0) + 0.5
        else:
            loser = m.b if m.winner == m.a else m.a
            wins[(m.winner, loser)] = wins.get((m.winner, loser), 0.0) + 1.0
    tournament = Tournament(
        winner=0,
        seed=config.seed,
        rounds=[matches] if matches else [],
        strategy="elo",
        scores=bradley_terry(len(candidates), wins),
    )
    assert tournament.ranking is not None
    tournament.winner = tournament.ranking[0]
    return tournament


class RoundRobin(Strategy):
    """Every pair meets (or `max_pairs` of them); Bradley–Terry ratings rank the candidates."""

    name = "elo"
    summary = "every pair (round-robin), Bradley-Terry ratings"

    async def play(
        self,
        candidates: list[str],
        ask: Ask,
        config: TournamentConfig,
        record_id: str | int,
        on_match: Callable[[Match], None] | None = None,
        teams: list[int] | None = None,
    ) -> Tournament:
        return await round_robin(candidates, ask, config, record_id, config.max_pairs, on_match, teams)

    def record_fields(self, result: Tournament) -> dict[str, Any]:
        assert result.scores is not None
        return {"ranking": result.ranking, "scores": [round(s, 2) for s in result.scores]}

    def winner_evidence(self, record: Any) -> Iterator[Evidence]:
        """The winner against every other candidate by the rating gap in Elo points (a pair
        with no gap says nothing: blocked as a tiebreak)."""
        scores, best = record.scores or [], record.best_index
        for other in [i for i in (record.ranking or range(len(scores))) if i != best]:
            gap = round(scores[best] - scores[other], 2)
            yield Evidence(best, other, gap, RATING_GAP, [], None if gap > 0 else "tiebreak")

    def weakest(self, evidence: Sequence[Evidence]) -> Evidence | None:
        """The lowest rated."""
        return evidence[-1] if evidence else None
