"""`bon pairs`: preference pairs from a run, each mode checked against a bracket worked by hand."""

import json

import pytest
from typer.testing import CliRunner

from bon.cli.main import app
from bon.views.pairs import PairCounts, record_pairs

runner = CliRunner()
TEXTS = ["zero", "one one", "two two two", "three"]


def match(a, b, winner, votes_a, votes_b, decided_by="majority"):
    return {
        "a": a,
        "b": b,
        "winner": winner,
        "tally": {"a": votes_a, "b": votes_b, "invalid": 0},
        "decided_by": decided_by,
        "votes": [],
    }


def knockout(final="majority", **extra):
    """#1 beats #0 2–1, #2 beats #3 3–0, then #2 beats #1 2–1 (or by `final`)."""
    rounds = [[match(0, 1, 1, 1, 2), match(2, 3, 2, 3, 0)], [match(1, 2, 2, 1, 2, final)]]
    return {
        "id": 5,
        "query": "Q?",
        "candidates": TEXTS,
        "best": TEXTS[2],
        "best_index": 2,
        "tournament": {"strategy": "knockout", "seed": 0, "rounds": rounds, **extra},
    }


def pairs_of(record, mode, **kwargs):
    return [
        (p["chosen_index"], p["rejected_index"], p["margin"], p["matches"])
        for p in record_pairs(record, mode, **kwargs)
    ]


def test_matches_mode_one_pair_per_judged_match_winner_chosen():
    assert pairs_of(knockout(), "matches") == [
        (1, 0, 0.6667, [[0, 0]]),
        (2, 3, 1.0, [[0, 1]]),
        (2, 1, 0.6667, [[1, 0]]),
    ]
    line = record_pairs(knockout(), "matches")[0]
    assert (line["prompt"], line["chosen"], line["rejected"], line["id"]) == ("Q?", "one one", "zero", "5")
    assert line["mode"] == "matches" and line["margin_kind"] == "vote_share"


def test_best_vs_rest_margin_is_the_weakest_win_on_the_chain():
    assert pairs_of(knockout(), "best-vs-rest") == [
        (2, 0, 0.6667, [[0, 0], [1, 0]]),  # #0 lost to #1, who lost to #2
        (2, 3, 1.0, [[0, 1]]),
        (2, 1, 0.6667, [[1, 0]]),
    ]


def test_best_vs_worst_is_the_earliest_loser_beaten_most_clearly():
    assert pairs_of(knockout(), "best-vs-worst") == [(2, 3, 1.0, [[0, 1]])]


def test_tiebreak_identical_and_same_answer_give_no_pair():
    counts = PairCounts()
    assert pairs_of(knockout(final="tiebreak"), "matches") == [(1, 0, 0.6667, [[0, 0]]), (2, 3, 1.0, [[0, 1]])]
    # the chains of #1 and #0 run through the tiebreak; #3 lost to #2 outright
    assert [p["rejected_index"] for p in record_pairs(knockout(final="tiebreak"), "best-vs-rest", counts=counts)] == [3]
    assert counts.left_out == {"tiebreak": 2}
    identical = knockout(final="identical")
    assert [p["rejected_index"] for p in record_pairs(identical, "matches")] == [0, 3]
    teams = knockout(answer_groups=[{"answer": "2", "members": [1, 2]}, {"answer": "0", "members": [0, 3]}])
    counts = PairCounts()
    assert [p["rejected_index"] for p in record_pairs(teams, "matches", counts=counts)] == [0, 3]
    assert counts.left_out == {"same_answer": 1} and "1 same answer" in counts.line()


def test_same_answer_matches_eliminate_nobody():
    record = knockout()
    record["tournament"]["rounds"][0][0] = match(0, 1, 1, 0, 0, "same_answer")
    assert [p["rejected_index"] for p in record_pairs(record, "best-vs-rest")] == [3, 1]


def test_min_margin_drops_close_calls():
    counts = PairCounts()
    assert pairs_of(knockout(), "matches", min_margin=0.7, counts=counts) == [(2, 3, 1.0, [[0, 1]])]
    assert counts.left_out == {"below_min_margin": 2}


def test_elo_uses_rating_gaps():
    record = {
        "id": "e",
        "query": "Q",
        "candidates": TEXTS[:3],
        "best_index": 1,
        "ranking": [1, 0, 2],
        "scores": [1500.0, 1600.5, 1400.0],
        "tournament": {
            "strategy": "elo",
            "seed": 0,
            "rounds": [[match(0, 1, 1, 0, 2), match(2, 1, 1, 1, 2), match(0, 2, 2, 1, 1, "tiebreak")]],
        },
    }
    assert pairs_of(record, "best-vs-rest") == [(1, 0, 100.5, []), (1, 2, 200.5, [])]
    assert pairs_of(record, "best-vs-worst") == [(1, 2, 200.5, [])]
    assert record_pairs(record, "best-vs-worst")[0]["margin_kind"] == "rating_gap"
    assert pairs_of(record, "matches") == [(1, 0, 1.0, [[0, 0]]), (1, 2, 0.6667, [[0, 1]])]


def test_conversational_format_and_messages_input():
    line = record_pairs(knockout(), "matches", conversational=True)[0]
    assert line["prompt"] == [{"role": "user", "content": "Q?"}]
    assert line["chosen"] == [{"role": "assistant", "content": "one one"}]
    chat = knockout() | {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Q?"}]}
    del chat["query"]
    line = record_pairs(chat, "matches")[0]  # messages input: conversational by itself
    assert line["prompt"] == chat["messages"] and line["rejected"] == [{"role": "assistant", "content": "zero"}]


def test_errors_and_records_without_a_tournament_give_nothing():
    assert record_pairs({"id": 1, "query": "q", "error": "boom"}, "best-vs-rest") == []
    with pytest.raises(ValueError):
        record_pairs(knockout(), "nonsense")


def test_cli_writes_pairs_that_datasets_loads_as_is(tmp_path):
    import datasets  # the dev extra installs it

    run = tmp_path / "run.jsonl"
    elo = {
        "id": "e",
        "query": "Q2",
        "candidates": ["a", "bb"],
        "best_index": 1,
        "ranking": [1, 0],
        "scores": [1450.0, 1550.0],
        "tournament": {"strategy": "elo", "seed": 0, "rounds": [[match(0, 1, 1, 0, 3)]]},
    }
    run.write_text(
        "\n".join(json.dumps(r) for r in (knockout(), elo, {"id": "x", "query": "q", "error": "boom"})) + "\n"
    )
    out = tmp_path / "pairs.jsonl"
    result = runner.invoke(app, ["pairs", str(run), "-o", str(out), "--mode", "best-vs-rest"])
    assert result.exit_code == 0, result.output
    assert "4 pairs from 3 records" in result.stderr
    loaded = datasets.load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == 4
    assert loaded[0]["prompt"] == "Q?" and loaded[0]["chosen"] == "two two two" and loaded[3]["id"] == "e"
    assert runner.invoke(app, ["pairs", str(run), "-o", str(out)]).exit_code == 2  # exists: needs --overwrite
    conv = runner.invoke(app, ["pairs", str(run), "--conversational", "--min-margin", "0.9"])
    assert conv.exit_code == 0
    (tmp_path / "conv.jsonl").write_text(conv.stdout)
    loaded = datasets.load_dataset(
        "json", data_files=str(tmp_path / "conv.jsonl"), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert loaded.num_rows == 2 and loaded[0]["chosen"] == [{"role": "assistant", "content": "two two two"}]
