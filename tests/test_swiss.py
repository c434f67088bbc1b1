"""Swiss pairing within a judge budget, and --budget capping knockout and elo."""

import asyncio
import json
import random

import pytest
from typer.testing import CliRunner

from bon.cli.main import app
from bon.config import TournamentConfig
from bon.errors import UsageError
from bon.tournament import Vote, knockout, round_robin
from bon.tournament.swiss import DOUBT, allowances, beats_chance, pair_round, swiss
from bon.views.browse import BrowseApp, RecordScreen
from conftest import read_jsonl, write_jsonl

runner = CliRunner()


def judge(quality, p=1.0, invalid=0.0, spent=None, jitter=False):
    """Prefers the higher quality with chance p per vote (seeded by the request), an invalid
    vote with chance `invalid`; counts samples in spent[0]; with `jitter`, replies come back
    in a random order (scheduling must not matter)."""

    async def ask(first, second, k, seed):
        if spent is not None:
            spent[0] += k
        if jitter:
            await asyncio.sleep(random.random() / 1000)
        rng = random.Random(seed)
        better, worse = (first, second) if quality[first] > quality[second] else (second, first)
        votes = []
        for _ in range(k):
            if rng.random() < invalid:
                votes.append(Vote(first, second, None, "", "length", 5, "truncated"))
            else:
                votes.append(Vote(first, second, better if rng.random() < p else worse, "</think>", "stop", 5))
        return votes

    return ask


def play(quality, config, record_id="r", teams=None, **kw):
    return asyncio.run(
        swiss([f"c{i}" for i in range(len(quality))], judge(quality, **kw), config, record_id, teams=teams)
    )


def test_pairs_are_closest_in_rating_and_never_team_mates():
    ratings = [1600.0, 1590.0, 1500.0, 1495.0, 1400.0]
    position = [0, 1, 2, 3, 4]
    assert pair_round([0, 1, 2, 3, 4], ratings, [0, 1, 2, 3, 4], {}, position) == [(0, 1), (2, 3)]
    # 0 and 1 are team-mates: 0 meets the closest other, 2; 1 then meets 3
    assert pair_round([0, 1, 2, 3, 4], ratings, [0, 0, 2, 3, 4], {}, position) == [(0, 2), (1, 3)]
    # equally close: the one met least
    assert pair_round([0, 1, 2], [1500.0] * 3, [0, 1, 2], {(0, 1): 2}, position) == [(0, 2)]
    # nobody of another team: no pair
    assert pair_round([0, 1], ratings, [5, 5], {}, position) == []


@pytest.mark.parametrize("pairs, left, votes", [(4, 21, 3), (4, 12, 3), (4, 7, 3), (3, 2, 3), (5, 100, 1), (1, 1, 5)])
def test_allowances_give_votes_first_then_split_the_rest_and_never_exceed(pairs, left, votes):
    caps = allowances(pairs, left, votes)
    assert sum(caps) <= left and all(c >= 1 for c in caps) and len(caps) <= pairs
    # the best-rated pairs first get their full votes; only the last may get fewer
    assert len(caps) == min(pairs, -(-left // votes)) and all(c >= votes for c in caps[:-1])
    if len(caps) == pairs:
        assert sum(caps) == left or all(c >= votes for c in caps)


def test_a_right_judge_finds_the_best_and_stops_once_the_leader_is_decided():
    for seed in range(20):
        quality = random.Random(seed).sample(range(100), 8)
        spent = [0]
        result = play(quality, TournamentConfig(votes=2, seed=seed, budget=100), spent=spent)
        assert result.winner == quality.index(max(quality))
        trace = result.to_json()
        assert trace["strategy"] == "swiss" and trace["decided"] and trace["spent"] == spent[0] < 100
        # decided: no rival keeps DOUBT chance against the winner
        assert all(beats_chance(result.scores, c, result.winner) < DOUBT for c in range(8) if c != result.winner)
        assert result.ranking[0] == result.winner


@pytest.mark.parametrize("budget", [1, 2, 5, 7, 12, 21, 40])
@pytest.mark.parametrize("votes", [1, 2, 3])
def test_no_strategy_spends_more_than_its_budget(budget, votes):
    for seed in range(6):
        quality = random.Random(seed).sample(range(100), 8)
        config = TournamentConfig(votes=votes, seed=seed, budget=budget, early_stop=seed % 2 == 1)
        for strategy in ("swiss", "elo", "knockout"):
            if strategy == "knockout" and budget < 7:
                continue
            spent = [0]
            ask = judge(quality, p=0.6, invalid=0.3, spent=spent)
            candidates = [f"c{i}" for i in range(8)]
            if strategy == "swiss":
                result = asyncio.run(swiss(candidates, ask, config, seed))
            elif strategy == "elo":
                result = asyncio.run(round_robin(candidates, ask, config, seed, config.max_pairs))
            else:
                result = asyncio.run(knockout(candidates, ask, config, seed))
            votes_cast = sum(len(m.votes) for r in result.rounds for m in r)
            assert votes_cast == spent[0] <= budget, (strategy, budget, votes)


def test_knockout_refuses_a_budget_under_one_sample_a_match():
    with pytest.raises(UsageError, match="--budget 6 is less than one judge sample"):
        asyncio.run(knockout([f"c{i}" for i in range(8)], judge(list(range(8))), TournamentConfig(budget=6), "r"))


def test_budget_caps_each_knockout_and_elo_match_to_an_equal_share():
    quality = list(range(8))
    k = asyncio.run(knockout([f"c{i}" for i in range(8)], judge(quality), TournamentConfig(votes=3, budget=14), "r"))
    assert [len(m.votes) for r in k.rounds for m in r if m.b is not None] == [2] * 7  # ⌊14 / 7⌋ each
    e = asyncio.run(round_robin([f"c{i}" for i in range(8)], judge(quality), TournamentConfig(votes=2, budget=20), "r"))
    assert len(e.rounds[0]) == 10 and all(len(m.votes) == 2 for m in e.rounds[0])  # ⌊20 / 2⌋ pairs
    # a budget beyond need changes nothing
    free = asyncio.run(
        knockout([f"c{i}" for i in range(8)], judge(quality), TournamentConfig(votes=3, budget=999), "r")
    )
    plain = asyncio.run(knockout([f"c{i}" for i in range(8)], judge(quality), TournamentConfig(votes=3), "r"))
    assert free.to_json() == plain.to_json()


def test_same_seed_same_tournament_whatever_order_replies_arrive_in():
    quality = random.Random(3).sample(range(100), 8)
    config = TournamentConfig(votes=1, seed=5, budget=15)
    first = asyncio.run(swiss([f"c{i}" for i in range(8)], judge(quality, p=0.7, jitter=True), config, "r"))
    for _ in range(3):
        again = asyncio.run(swiss([f"c{i}" for i in range(8)], judge(quality, p=0.7, jitter=True), config, "r"))
        assert again.to_json() == first.to_json() and again.scores == first.scores
    other = [
        asyncio.run(
            swiss([f"c{i}" for i in range(8)], judge(quality, p=0.7), TournamentConfig(votes=1, seed=s, budget=15), "r")
        ).to_json()
        for s in range(6)
    ]
    assert len({json.dumps(t) for t in other}) > 1  # the seed matters


def test_team_mates_are_never_judged_against_each_other():
    teams = [0, 0, 1, 1, 1, 2, 0, 3]
    for seed in range(10):
        quality = random.Random(seed).sample(range(100), 8)
        result = play(quality, TournamentConfig(votes=1, seed=seed, budget=30), teams=teams, p=0.8)
        for r in result.rounds:
            for m in r:
                assert teams[m.a] != teams[m.b]
    # one answer for all: nothing to judge
    one = play(list(range(4)), TournamentConfig(budget=10), teams=[7, 7, 7, 7])
    assert one.rounds == [] and one.to_json()["spent"] == 0


def test_invalid_verdicts_stay_invalid_and_the_budget_ends_an_undecided_tournament():
    winners = set()
    for seed in range(12):
        spent = [0]
        result = play(list(range(6)), TournamentConfig(votes=1, seed=seed, budget=9), invalid=1.0, spent=spent)
        trace = result.to_json()
        assert spent[0] == 9 and trace["spent"] == 9 and trace["decided"] is False
        assert all(v.verdict is None for r in result.rounds for m in r for v in m.votes)
        assert len(set(result.scores)) == 1  # no invalid vote moved a rating
        winners.add(result.winner)
    assert len(winners) > 1  # equal ratings fall to the seeded shuffle, not to the first candidate


def test_identical_texts_never_meet():
    texts = ["same", "same", "other", "x", "same"]
    asked = []

    async def ask(first, second, k, seed):
        asked.append({texts[first], texts[second]})
        return [Vote(first, second, min(first, second), "", "stop", 1) for _ in range(k)]

    asyncio.run(swiss(texts, ask, TournamentConfig(votes=1, budget=20), "r"))
    assert asked and all(len(pair) == 2 for pair in asked)


ROWS = [
    {"id": "a", "query": "q", "candidates": ["a", "bbb", "bb", "bbbbb", "bbbb", "b"]},
    {"id": "b", "query": "q", "candidates": ["xx", "x", "xxxx", "xxx"]},
]


def test_cli_round_trip_through_show_browse_pairs_and_plan(tmp_path, scripted):
    src = write_jsonl(tmp_path / "q.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    flags = ["--strategy", "swiss", "--budget", "9", "--votes", "1"]
    result = runner.invoke(app, ["select", str(src), *flags, "-q", "--backend", "scripted", "-o", str(out)])
    assert result.exit_code == 0, result.output
    records = read_jsonl(out.read_text())
    assert [r["best_index"] for r in records] == [3, 2]  # the longest: the scripted judge's taste
    for record in records:
        assert record["tournament"]["strategy"] == "swiss" and record["ranking"][0] == record["best_index"]
        assert record["usage"]["judge_samples"] == record["tournament"]["spent"] <= 9
        assert len(record["scores"]) == len(record["candidates"])

    summary = json.loads(runner.invoke(app, ["show", str(out), "--json"]).stdout)
    assert summary["records"] == 2
    assert summary["judge_samples"] == sum(r["usage"]["judge_samples"] for r in records)
    tree = runner.invoke(app, ["show", str(out), "--id", "a", "--full"])
    assert tree.exit_code == 0 and "swiss" in tree.stdout

    pairs = read_jsonl(runner.invoke(app, ["pairs", str(out), "--mode", "best-vs-rest"]).stdout)
    assert {p["chosen_index"] for p in pairs if p["id"] == "a"} == {3}
    assert all(p["margin"] > 0 for p in pairs)
    worst = read_jsonl(runner.invoke(app, ["pairs", str(out), "--mode", "best-vs-worst"]).stdout)
    assert [(p["id"], p["rejected_index"]) for p in worst] == [
        ("a", records[0]["ranking"][-1]),
        ("b", records[1]["ranking"][-1]),
    ]

    plan = json.loads(runner.invoke(app, ["plan", str(src), "--json", *flags]).stdout)
    samples = plan["judge_samples"]
    assert samples["min"] == samples["usual"] == sum(r["usage"]["judge_samples"] for r in records)
    assert samples["max"] == 9 * 2  # a judge that never decides spends the whole budget
    knockout_plan = json.loads(
        runner.invoke(app, ["plan", str(src), "--json", "--votes", "3", "--budget", "10"]).stdout
    )
    # ⌊10/5⌋ = 2 a match for 6 candidates, ⌊10/3⌋ = 3 for 4 (max: 3, the vote budget 6 capped)
    assert knockout_plan["judge_samples"] == {"min": 5 * 2 + 3 * 3, "usual": 5 * 2 + 3 * 3, "max": 5 * 2 + 3 * 3}

    async def browse():
        browser = BrowseApp(str(out))
        async with browser.run_test(size=(120, 40)) as pilot:
            while not browser.done:
                await pilot.pause(0.05)
            await pilot.press("enter")
            assert isinstance(browser.screen, RecordScreen) and browser.screen.record["id"] == "a"
            await pilot.press("q", "q")

    asyncio.run(browse())
