"""Answer-aware tournaments (--group-by-answer): teams, same-answer byes, relays, early end."""

import asyncio
import json
import random
from collections import Counter

import pytest

from bon.config import SamplingConfig, TournamentConfig
from bon.engines.scripted import ScriptedEngine
from bon.io.prompts import judge_template
from bon.io.records import Record
from bon.runs.judge import Referee
from bon.tournament import Vote, knockout, round_robin
from bon.tournament.answers import AnswerGroup, Checker, group_answers, majority_answer, team_of
from bon.tournament.knockout import separate_teams


def judge_preferring(rank, calls=None):
    """Always prefers the candidate whose team ranks higher (a perfect judge of answers)."""

    async def ask(first, second, k, seed):
        if calls is not None:
            calls.append((first, second))
        assert rank[first] != rank[second], "team-mates must never be judged"
        better = first if rank[first] > rank[second] else second
        return [Vote(first, second, better, "</think>\\boxed{Assistant 1}", "stop", 3) for _ in range(k)]

    return ask


def boxed(answers):
    return [f"Step {i}: so the answer is \\boxed{{{a}}}" for i, a in enumerate(answers)]


def matches(result):
    return [m for r in result.rounds for m in r]


# ---- teams


def test_exact_teams_compare_the_last_box_or_the_whole_text_with_spaces_collapsed():
    candidates = [
        "so \\boxed{4}",
        "\\boxed{ 4 }",
        "\\boxed{5}",
        "x=\\boxed{4} wait \\boxed{5}",
        "  plain   text ",
        "plain text",
        "",
        "   ",
        "\\boxed{}",
        "\\boxed{4} then \\boxed{5",
    ]
    groups = group_answers(candidates, Checker("exact"))
    assert groups == [
        AnswerGroup("4", (0, 1)),
        AnswerGroup("5", (2, 3)),
        AnswerGroup("plain text", (4, 5)),
        # No answer (blank text, empty box): a team of its own each.
        AnswerGroup(None, (6,)),
        AnswerGroup(None, (7,)),
        AnswerGroup(None, (8,)),
        # An unclosed last box: no fall back to the earlier one, the whole text is the answer.
        AnswerGroup("\\boxed{4} then \\boxed{5", (9,)),
    ]
    assert team_of(groups, len(candidates)) == [0, 0, 1, 1, 2, 2, 3, 4, 5, 6]
    assert [g.to_json() for g in groups][0] == {"answer": "4", "members": [0, 1]}


def test_math_teams_group_equivalent_answers():
    candidates = [
        "\\boxed{1/2}",
        "\\boxed{3}",
        "so $\\boxed{0.5}$",
        "I could not solve it.",
        "\\boxed{\\frac{1}{2}}",
        "\\boxed{3.0}",
        "",
    ]
    groups = group_answers(candidates, Checker("math"))
    assert [g.members for g in groups] == [(0, 2, 4), (1, 5), (3,), (6,)]
    # The answer shown is math-verify's reading of the first member's.
    assert groups[0].answer == "\\frac{1}{2}" and groups[2].answer is None and groups[3].answer is None
    assert majority_answer(candidates, Checker("math")) == 0


def test_majority_never_picks_a_team_without_an_answer_over_one_with():
    assert majority_answer(["", "\\boxed{3}"], Checker("exact")) == 1


# ---- the bracket


@pytest.mark.parametrize("sizes", [(4, 4), (3, 3, 2), (5, 3), (6, 1, 1), (7, 1), (2, 2, 2, 1), (4, 2, 1), (3, 3, 3)])
def test_team_mates_meet_in_the_first_round_only_where_the_counts_force_it(sizes):
    teams = [t for t, size in enumerate(sizes) for _ in range(size)]
    n = len(teams)
    for seed in range(40):
        order = list(range(n))
        random.Random(seed).shuffle(order)
        arranged = separate_teams(order, teams, random.Random(seed))
        assert sorted(arranged) == list(range(n))
        pairs = [(arranged[2 * i], arranged[2 * i + 1]) for i in range(n // 2)]
        same = sum(teams[a] == teams[b] for a, b in pairs)
        largest = max(sizes) - n % 2  # with an odd count the largest team takes the bye
        assert same == max(0, largest - n // 2)


@pytest.mark.parametrize("n", range(2, 14))
def test_a_perfect_judge_finds_the_best_team_and_every_judged_match_eliminates_one(n):
    for record_id in range(25):
        rng = random.Random(n * 100 + record_id)
        answers = [rng.choice("ABCD") for _ in range(n)]
        teams = [ord(a) for a in answers]  # A is the best answer, D the worst
        rank = [-t for t in teams]
        calls = []
        result = asyncio.run(
            knockout(boxed(answers), judge_preferring(rank, calls), TournamentConfig(votes=1), record_id, teams=teams)
        )
        best = min(answers)
        assert answers[result.winner] == best
        judged = [m for m in matches(result) if m.decided_by == "majority"]
        # Nobody of the best team is ever eliminated, everybody else is, one per judged match.
        assert len(judged) == len(calls) == n - answers.count(best)
        assert sorted(loser for m in judged for loser in {m.a, m.b} - {m.winner}) == sorted(
            i for i, a in enumerate(answers) if a != best
        )


def test_same_answer_pairs_advance_together_without_a_judge_call():
    answers = ["A", "A", "A", "A", "A", "A", "B", "C"]  # six of eight: team-mates must meet
    calls = []
    result = asyncio.run(
        knockout(
            boxed(answers),
            judge_preferring([1] * 6 + [0, 0], calls),
            TournamentConfig(votes=3),
            "r",
            teams=[0] * 6 + [1, 2],
        )
    )
    first_round = result.rounds[0]
    same = [m for m in first_round if m.decided_by == "same_answer"]
    assert len(same) == 2 and all(m.votes == [] and m.tally == {"a": 0, "b": 0, "invalid": 0} for m in same)
    assert {m.a for m in same} | {m.b for m in same} <= set(range(6))
    # Both advance: all six A's survive; B and C went out in their own first-round matches.
    # Two judged matches (3 votes each, asked in both orders: 2 asks), then only A's are left.
    assert len(calls) == 2 * 2 and result.rounds == [first_round]
    assert result.winner in range(6)
    json.dumps(result.to_json())  # the trace stays JSON


def test_the_tournament_ends_as_soon_as_the_survivors_share_one_answer():
    answers = ["A", "B", "A", "A"]
    calls = []
    result = asyncio.run(
        knockout(
            boxed(answers), judge_preferring([1, 0, 1, 1], calls), TournamentConfig(votes=1), 5, teams=[0, 1, 0, 0]
        )
    )
    # B loses its first match; the A's then never meet: one judged match in all.
    assert len(calls) == 1 and len(result.rounds) == 1
    assert [m.decided_by for m in result.rounds[0]] == ["majority", "same_answer"] or [
        m.decided_by for m in result.rounds[0]
    ] == ["same_answer", "majority"]
    # The winner is the first survivor in bracket order (slot i holds positions 2i, 2i+1).
    order = [c for m in result.rounds[0] for c in (m.a, m.b)]
    assert result.winner == next(c for c in order if answers[c] == "A")


def test_one_answer_for_all_plays_no_match():
    result = asyncio.run(knockout(boxed("AAAA"), judge_preferring([0] * 4), TournamentConfig(), "q", teams=[0] * 4))
    assert result.rounds == [] and result.winner in range(4)


def test_squads_play_a_relay_the_loser_replaced_by_its_next_team_mate():
    # A judge that prefers B to A: the two A's, merged in round 1, are both beaten by B.
    answers = ["A", "A", "B", "C"]
    rank = {"A": 1, "B": 2, "C": 0}
    calls = []
    for record_id in range(20):
        calls.clear()
        result = asyncio.run(
            knockout(
                boxed(answers),
                judge_preferring([rank[a] for a in answers], calls),
                TournamentConfig(votes=1),
                record_id,
                teams=[0, 0, 1, 2],
            )
        )
        assert result.winner == 2
        assert len(calls) == 3  # each judged match eliminated one of the three others
        assert sum(2 in c and (0 in c or 1 in c) for c in calls) == 2  # B beat both A's


def test_the_bracket_is_the_same_whatever_order_the_judge_answers_in():
    answers = list("ABACBBADCA")
    teams = [ord(a) for a in answers]

    def slow_judge(seed):
        rng = random.Random(seed)
        inner = judge_preferring([-t for t in teams])

        async def ask(first, second, k, s):
            await asyncio.sleep(rng.random() / 500)
            return await inner(first, second, k, s)

        return ask

    traces = {
        json.dumps(
            asyncio.run(knockout(boxed(answers), slow_judge(s), TournamentConfig(votes=2), "r", teams=teams)).to_json()
        )
        for s in range(6)
    }
    assert len(traces) == 1


def test_a_slow_match_does_not_hold_up_the_rest_of_the_bracket():
    answers = ["A", "A", "B", "C"]  # first round: A vs B and A vs C
    started, release = [], asyncio.Event()

    async def ask(first, second, k, seed):
        started.append(frozenset((first, second)))
        if len(started) == 1:
            await release.wait()  # the first match asked thinks for a long time
        else:
            release.set()  # the other match could start meanwhile
        return [Vote(first, second, min(first, second), "", "stop", 1) for _ in range(k)]

    bracket = knockout(boxed(answers), ask, TournamentConfig(votes=1), "s", teams=[0, 0, 1, 2])
    result = asyncio.run(asyncio.wait_for(bracket, 30))  # a hang guard: waiting for the slow match deadlocks
    assert result.winner == 0 and len(started) == 2


# ---- elo and the trace


def test_elo_counts_same_answer_pairs_as_unjudged_draws():
    answers = ["A", "A", "B", "C"]
    calls = []
    result = asyncio.run(
        round_robin(
            boxed(answers), judge_preferring([2, 2, 1, 0], calls), TournamentConfig(votes=1), "e", teams=[0, 0, 1, 2]
        )
    )
    scores = result.scores
    kinds = Counter(m.decided_by for m in result.rounds[0])
    assert kinds == {"majority": 5, "same_answer": 1} and len(calls) == 5
    assert scores[0] == scores[1] > scores[2] > scores[3]  # team-mates: equal records, equal scores
    assert result.winner == 0


def referee_select(candidates, group_by_answer, strategy="knockout"):
    referee = Referee(
        ScriptedEngine(),
        judge_template(),
        SamplingConfig(0.6, 1.0, 64),
        TournamentConfig(votes=1, group_by_answer=group_by_answer, strategy=strategy),
    )
    record = Record(line=1, id="q", data={}, question="What is 2+2?", messages=None, candidates=candidates)
    usage = asyncio.run(referee.select(record))
    return record.output, usage


def test_the_trace_records_the_teams_and_each_match_kind():
    candidates = ["so \\boxed{4}", "it is \\boxed{ 4 }", "a longer wrong one \\boxed{5}", ""]
    output, usage = referee_select(candidates, "exact")
    tournament = output["tournament"]
    assert tournament["answer_groups"] == [
        {"answer": "4", "members": [0, 1]},
        {"answer": "5", "members": [2]},
        {"answer": None, "members": [3]},
    ]
    kinds = [m["decided_by"] for r in tournament["rounds"] for m in r]
    assert set(kinds) <= {"majority", "tiebreak", "same_answer", "bye"}
    # The scripted judge prefers longer texts: the wrong answer beats both 4s, one match each.
    assert output["best_index"] == 2 and usage.judge_samples == kinds.count("majority") + kinds.count("tiebreak")
    elo, _ = referee_select(candidates, "exact", strategy="elo")
    assert elo["tournament"]["answer_groups"] == tournament["answer_groups"]
    assert [m["decided_by"] for m in elo["tournament"]["rounds"][0]].count("same_answer") == 1


def test_without_grouping_the_trace_has_no_teams():
    output, _ = referee_select(["\\boxed{4}", "\\boxed{4}!"], None)
    assert "answer_groups" not in output["tournament"]


def test_an_unknown_grouping_is_refused():
    with pytest.raises(ValueError, match="exact or math"):
        Checker("fuzzy")


def test_cli_select_groups_by_answer(tmp_path, scripted):
    from typer.testing import CliRunner

    from bon.cli.main import app
    from conftest import read_jsonl, write_jsonl

    rows = [{"query": "2+2?", "candidates": ["it is \\boxed{4}", "so \\boxed{4}", "\\boxed{4} indeed", "\\boxed{5}"]}]
    src = write_jsonl(tmp_path / "q.jsonl", rows)
    result = CliRunner().invoke(
        app, ["select", str(src), "--group-by-answer", "exact", "--votes", "1", "-q", "--backend", "scripted"]
    )
    assert result.exit_code == 0, result.output
    (record,) = read_jsonl(result.stdout)
    assert record["tournament"]["answer_groups"] == [
        {"answer": "4", "members": [0, 1, 2]},
        {"answer": "5", "members": [3]},
    ]
    # The 5 meets one 4 and loses (the scripted judge prefers longer texts; every 4 is
    # longer); then only 4s are left: one judged match in all.
    assert record["usage"]["judge_samples"] == 1 and record["best"] != "\\boxed{5}"
