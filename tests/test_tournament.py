"""The knockout bracket and majority voting, on pure logic with scripted judges."""

import asyncio
import math
import random

import pytest

from bon.config import TournamentConfig
from bon.tournament import Vote, decide_match, derive_seed, knockout
from bon.tournament.voting import split_votes


def perfect_judge(quality, calls=None):
    """Always prefers the candidate with the higher quality; records every ask."""

    async def ask(first, second, k, seed):
        if calls is not None:
            calls.append((first, second, k, seed))
        better = first if quality[first] > quality[second] else second
        return [Vote(first, second, better, "</think>\\boxed{}", "stop", 3) for _ in range(k)]

    return ask


def noisy_judge(quality, p, rng, invalid=0.0):
    async def ask(first, second, k, seed):
        better, worse = (first, second) if quality[first] > quality[second] else (second, first)
        votes = []
        for _ in range(k):
            roll = rng.random()
            if roll < invalid:
                votes.append(Vote(first, second, None, "", "length", 8, "truncated"))
            else:
                votes.append(Vote(first, second, better if rng.random() < p else worse, "", "stop", 3))
        return votes

    return ask


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("n", range(1, 34))
def test_perfect_judge_always_finds_the_true_best(n):
    for record_id in range(5):
        rng = random.Random(n * 100 + record_id)
        quality = rng.sample(range(1000), n)
        candidates = [f"candidate quality {q}" for q in quality]
        calls = []
        result = run(knockout(candidates, perfect_judge(quality, calls), TournamentConfig(votes=3), record_id))
        assert result.winner == quality.index(max(quality))
        matches = [m for r in result.rounds for m in r if m.decided_by != "bye"]
        assert len(matches) == n - 1  # a knockout of n distinct candidates plays n-1 matches
        assert len(result.rounds) == math.ceil(math.log2(n)) if n > 1 else result.rounds == []
        # Every pair judged with 3 votes was shown in both orders.
        for m in matches:
            assert {v.first for v in m.votes} == {m.a, m.b}
            assert m.decided_by == "majority"
        if n == 1:
            assert calls == []


@pytest.mark.parametrize("n", range(2, 34))
def test_every_candidate_plays_until_it_loses_and_byes_do_not_repeat(n):
    quality = list(range(n))
    result = run(knockout([f"c{i}" for i in range(n)], perfect_judge(quality), TournamentConfig(votes=1), "x"))
    alive = set(range(n))
    previous_bye = None
    for round_matches in result.rounds:
        seen = [m.a for m in round_matches] + [m.b for m in round_matches if m.b is not None]
        assert sorted(seen) == sorted(alive)  # each survivor appears exactly once per round
        byes = [m.a for m in round_matches if m.decided_by == "bye"]
        assert len(byes) == len(alive) % 2
        if byes and previous_bye is not None:
            assert byes[0] != previous_bye  # with 3+ alive someone else can always sit out
        previous_bye = byes[0] if byes else None
        alive = {m.winner for m in round_matches}
    assert alive == {result.winner}


def test_identical_candidates_never_meet_the_judge():
    calls = []
    candidates = ["same", "same", "same", "same"]
    result = run(knockout(candidates, perfect_judge([0, 1, 2, 3], calls), TournamentConfig(), 7))
    assert calls == []
    assert all(m.decided_by == "identical" for r in result.rounds for m in r)
    assert result.winner in range(4)


def test_bracket_depends_on_seed_and_id_only():
    candidates = [f"c{i}" for i in range(16)]
    quality = list(range(16))

    def first_round(seed, record_id):
        result = run(knockout(candidates, perfect_judge(quality), TournamentConfig(seed=seed), record_id))
        return [(m.a, m.b) for m in result.rounds[0]]

    assert first_round(0, "q1") == first_round(0, "q1")
    assert first_round(0, "q1") != first_round(1, "q1")
    assert first_round(0, "q1") != first_round(0, "q2")
    # 1 and "1" are different ids.
    assert derive_seed(0, 1) != derive_seed(0, "1")


@pytest.mark.parametrize(
    "votes, expected",
    [(1, [(1, 0), (0, 1)]), (2, [(1, 1), (1, 1)]), (3, [(2, 1), (1, 2)]), (4, [(2, 2), (2, 2)]), (5, [(3, 2), (2, 3)])],
)
def test_votes_split_evenly_between_orders_and_the_extra_one_alternates(votes, expected):
    assert [split_votes(votes, True), split_votes(votes, False)] == expected


def test_consecutive_matches_alternate_the_extra_vote():
    calls = []
    quality = list(range(8))
    run(knockout([f"c{i}" for i in range(8)], perfect_judge(quality, calls), TournamentConfig(votes=3), "r"))
    # First-round matches in slot order: the order with 2 votes alternates a-first, b-first.
    first_round = calls[:8]
    by_match = {}
    for first, second, k, _ in first_round:
        by_match.setdefault(frozenset((first, second)), []).append((first, k))
    assert all(sorted(k for _, k in asks) == [1, 2] for asks in by_match.values())


def test_tie_draws_balanced_extra_votes_then_a_seeded_coin():
    asked = []

    async def always_invalid(first, second, k, seed):
        asked.append((first, k))
        return [Vote(first, second, None, "", "stop", 1, "no_verdict") for _ in range(k)]

    config = TournamentConfig(votes=3, max_votes=7)
    match = run(decide_match(0, 1, always_invalid, config, match_seed=42))
    assert match.decided_by == "tiebreak"
    assert len(match.votes) == 7  # 3, then two balanced pairs
    assert asked[2:] == [(0, 1), (1, 1), (0, 1), (1, 1)]
    assert match.tally == {"a": 0, "b": 0, "invalid": 7}
    again = run(decide_match(0, 1, always_invalid, config, match_seed=42))
    assert again.winner == match.winner  # the coin is seeded
    winners = {run(decide_match(0, 1, always_invalid, config, match_seed=s)).winner for s in range(20)}
    assert winners == {0, 1}  # and it is a coin


def test_tie_broken_by_extra_votes_is_a_majority():
    state = {"calls": 0}

    async def split_then_decisive(first, second, k, seed):
        state["calls"] += 1
        if state["calls"] <= 2:  # 2 votes: one each way
            return [Vote(first, second, first, "", "stop", 1) for _ in range(k)]
        return [Vote(first, second, 1, "", "stop", 1) for _ in range(k)]

    match = run(decide_match(0, 1, split_then_decisive, TournamentConfig(votes=2), match_seed=1))
    assert match.decided_by == "majority"
    assert match.winner == 1
    assert match.tally == {"a": 1, "b": 3, "invalid": 0}


def test_majority_of_five_votes_at_p_07_matches_the_binomial():
    rng = random.Random(0)
    quality = [0, 1]
    trials = 3000
    wins = sum(
        run(decide_match(0, 1, noisy_judge(quality, 0.7, rng), TournamentConfig(votes=5), match_seed=i)).winner == 1
        for i in range(trials)
    )
    expected = sum(math.comb(5, k) * 0.7**k * 0.3 ** (5 - k) for k in range(3, 6))  # 0.837
    assert abs(wins / trials - expected) < 0.025


def test_invalid_votes_are_recorded_never_counted_as_a_tie():
    rng = random.Random(3)
    match = run(decide_match(0, 1, noisy_judge([0, 1], 1.0, rng, invalid=0.5), TournamentConfig(votes=5), 9))
    invalid = [v for v in match.votes if v.verdict is None]
    assert match.tally["invalid"] == len(invalid)
    assert all(v.to_json()["reason"] == "truncated" for v in invalid)
    assert match.winner == 1 or match.decided_by == "tiebreak"
