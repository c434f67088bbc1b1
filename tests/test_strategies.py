"""ELO round-robin (Bradley–Terry ratings) and early-stopped voting, on scripted judges."""

import asyncio
import itertools
import random
from collections import Counter

import pytest
from typer.testing import CliRunner

from bon.cli.main import app
from bon.config import TournamentConfig
from bon.tournament import Vote, bradley_terry, decide_match, round_robin
from bon.tournament.elo import choose_pairs
from conftest import read_jsonl, write_jsonl
from test_tournament import perfect_judge

runner = CliRunner()


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13])
def test_elo_ranks_exactly_the_true_order_with_an_always_right_judge(n):
    quality = random.Random(n).sample(range(100), n)
    result = asyncio.run(
        round_robin([f"c{q}" for q in quality], perfect_judge(quality), TournamentConfig(votes=2), "r")
    )
    scores = result.scores
    ranking = sorted(range(n), key=lambda k: -scores[k])
    assert ranking == sorted(range(n), key=lambda k: -quality[k])
    assert result.winner == ranking[0]
    assert len(result.rounds[0]) == n * (n - 1) // 2
    assert result.to_json()["strategy"] == "elo"


def test_ratings_stay_finite_with_a_perfect_sweep():
    scores = bradley_terry(2, {(0, 1): 1000.0})
    assert all(abs(s) < 1e6 for s in scores) and scores[0] > scores[1]
    sweep = bradley_terry(4, {(0, j): 1.0 for j in (1, 2, 3)})
    assert sweep[0] == max(sweep) and all(s == s and abs(s) < 1e6 for s in sweep)  # no NaN, no inf


def test_ratings_do_not_depend_on_the_order_results_arrive_in():
    results = [(0, 1), (1, 2), (2, 0), (0, 3), (3, 1), (0, 2), (1, 3), (2, 3)]
    reference = None
    for permutation in itertools.islice(itertools.permutations(results), 0, 5000, 997):
        wins = Counter()
        for winner, loser in permutation:
            wins[(winner, loser)] += 1.0
        scores = bradley_terry(4, dict(wins))
        reference = reference or scores
        assert scores == pytest.approx(reference, abs=1e-9)


BEATS = {"rock": "scissors", "paper": "rock", "scissors": "paper"}


def rock_paper_scissors_judge(hands):
    """A cyclic judge: paper beats rock beats scissors beats paper; equal hands: the lower index."""

    async def ask(first, second, k, seed):
        x, y = hands[first], hands[second]
        better = first if BEATS[x] == y else second if BEATS[y] == x else min(first, second)
        return [Vote(first, second, better, "", "stop", 1) for _ in range(k)]

    return ask


@pytest.mark.parametrize("n", range(3, 13))
def test_equal_records_rank_by_index_not_by_float_noise(n):
    # Each hand's members end with the same wins against the same games: equal records.
    # Their Bradley–Terry floats used to differ in the last bits, and the ranking (even the
    # winner, e.g. n=12 with seed 13) followed the noise.
    hands = [("rock", "paper", "scissors")[i % 3] for i in range(n)]
    for seed in range(30):
        result = asyncio.run(
            round_robin(
                [f"c{i}" for i in range(n)], rock_paper_scissors_judge(hands), TournamentConfig(votes=1, seed=seed), "r"
            )
        )
        wins = [sum(m.winner == k for m in result.rounds[0]) for k in range(n)]
        assert result.ranking == sorted(range(n), key=lambda k: (-wins[k], k))
        assert result.winner == result.ranking[0]
        scores = result.scores
        for k in range(n):  # equal records, equal scores
            assert all(scores[k] == scores[j] for j in range(n) if wins[j] == wins[k])


def test_max_pairs_are_balanced_across_candidates():
    pairs = choose_pairs(10, 15, random.Random(0))
    assert len(pairs) == 15 and len(set(pairs)) == 15
    played = Counter(c for pair in pairs for c in pair)
    assert set(played) == set(range(10)) and max(played.values()) - min(played.values()) <= 1


def counting_judge(pattern):
    """Votes follow `pattern` (a, b or None per vote, in the order drawn)."""
    drawn = []

    async def ask(first, second, k, seed):
        out = []
        for _ in range(k):
            choice = pattern[len(drawn)]
            drawn.append(choice)
            verdict = None if choice is None else (0 if choice == "a" else 1)
            out.append(Vote(first, second, verdict, "", "stop", 1, None if verdict is not None else "no_verdict"))
        return out

    return ask, drawn


def test_early_stop_unanimous_k5_costs_three_samples():
    ask, drawn = counting_judge(["a"] * 5)
    match = asyncio.run(decide_match(0, 1, ask, TournamentConfig(votes=5, early_stop=True), 1))
    assert len(drawn) == 3 and match.winner == 0 and match.votes_saved == 2
    assert match.to_json()["votes_saved"] == 2
    assert {v.first for v in match.votes} == {0, 1}  # the first wave already shows both orders


def test_early_stop_draws_only_what_could_change_a_split_result():
    # 2-1 after three votes: one more vote for a settles it (3-1 with 1 left).
    ask, drawn = counting_judge(["a", "b", "a", "a", "b"])
    match = asyncio.run(decide_match(0, 1, ask, TournamentConfig(votes=5, early_stop=True), 2))
    assert len(drawn) == 4 and match.winner == 0 and match.votes_saved == 1
    # 2-1, then b: 2-2 with one left: the fifth vote decides.
    ask, drawn = counting_judge(["a", "b", "a", "b", "b"])
    match = asyncio.run(decide_match(0, 1, ask, TournamentConfig(votes=5, early_stop=True), 3))
    assert len(drawn) == 5 and match.winner == 1 and match.votes_saved == 0


def test_early_stop_gives_the_same_winner_as_full_voting_when_decided():
    rng = random.Random(11)
    for trial in range(200):
        pattern = [rng.choice("ab") for _ in range(7)]
        full_ask, _ = counting_judge(pattern)
        early_ask, _ = counting_judge(pattern)
        full = asyncio.run(decide_match(0, 1, full_ask, TournamentConfig(votes=7), trial))
        early = asyncio.run(decide_match(0, 1, early_ask, TournamentConfig(votes=7, early_stop=True), trial))
        assert early.winner == full.winner


def test_cli_elo_adds_ranking_and_scores(tmp_path, scripted):
    rows = [{"query": "q", "candidates": ["a", "bbb", "bb", "bbbbb", "bbbb"]}]
    src = write_jsonl(tmp_path / "q.jsonl", rows)
    result = runner.invoke(
        app, ["select", str(src), "--strategy", "elo", "--votes", "2", "-q", "--backend", "scripted"]
    )
    assert result.exit_code == 0, result.output
    (record,) = read_jsonl(result.stdout)
    assert record["ranking"] == [3, 4, 1, 2, 0]  # longest first: the scripted judge's taste
    assert record["best_index"] == 3 and len(record["scores"]) == 5
    assert record["tournament"]["strategy"] == "elo" and len(record["tournament"]["rounds"][0]) == 10
    pairs = runner.invoke(
        app, ["select", str(src), "--strategy", "elo", "--max-pairs", "5", "-q", "--backend", "scripted"]
    )
    assert len(read_jsonl(pairs.stdout)[0]["tournament"]["rounds"][0]) == 5


def test_cli_early_stop_counts_saved_votes(tmp_path, scripted):
    rows = [{"query": "q", "candidates": ["a", "bbb", "bb", "bbbbb"]}]
    src = write_jsonl(tmp_path / "q.jsonl", rows)
    result = runner.invoke(app, ["select", str(src), "--votes", "5", "--early-stop", "-q", "--backend", "scripted"])
    (record,) = read_jsonl(result.stdout)
    assert record["usage"]["judge_samples"] == 9 and record["usage"]["votes_saved"] == 6  # 3 matches x 3


@pytest.mark.parametrize("n, m", [(10, 15), (9, 20), (16, 40), (7, 20), (33, 100)])
def test_max_pairs_balanced_for_many_sizes(n, m):
    for seed in range(5):
        pairs = choose_pairs(n, m, random.Random(seed))
        played = Counter(c for pair in pairs for c in pair)
        assert len(pairs) == m and len(set(pairs)) == m
        assert max(played.values()) - min(played[c] for c in range(n)) <= 1
