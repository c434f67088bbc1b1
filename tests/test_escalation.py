"""A judge that escalates: matches its votes leave in doubt go to a second judge."""

import asyncio
import json
import random

import pytest
from typer.testing import CliRunner

from bon.cli.main import app
from bon.config import HFOptions, TournamentConfig
from bon.engines import Backend
from bon.engines.scripted import ScriptedEngine, prefers_longer
from bon.io.output import read_output
from bon.plugins import register_backend
from bon.tournament import Vote, decide_match, knockout
from bon.tournament.swiss import swiss
from bon.tournament.voting import Escalating
from conftest import read_jsonl, scripted_bon, write_jsonl

runner = CliRunner()


def scripted_ask(pattern, asked):
    """Votes from `pattern` in turn ("a": for candidate 0, "b": for 1, "x": invalid)."""
    it = iter(pattern)

    async def ask(first, second, k, seed):
        asked.append(k)
        votes = []
        for _ in range(k):
            p = next(it)
            verdict = None if p == "x" else (0 if p == "a" else 1)
            votes.append(Vote(first, second, verdict, "", "stop", 1, None if verdict is not None else "no_verdict"))
        return votes

    return ask


def panel(small, large):
    small_asked, large_asked = [], []
    ask = Escalating(scripted_ask(small, small_asked), scripted_ask(large, large_asked), ("small", "large"))
    return ask, small_asked, large_asked


def test_votes_that_agree_are_decided_by_the_first_judge():
    ask, small, large = panel("aaa", "")
    match = asyncio.run(decide_match(0, 1, ask, TournamentConfig(votes=3), 7))
    assert match.winner == 0 and match.judge == "small" and not match.escalated and large == []
    assert match.to_json()["judge"] == "small" and "escalated" not in match.to_json()
    assert {v.judge for v in match.votes} == {"small"}


@pytest.mark.parametrize("small", ["aab", "abx", "xaa"])
def test_votes_in_doubt_go_to_the_escalation_judge_which_decides(small):
    ask, _, large_asked = panel(small, "bbbbbb")
    match = asyncio.run(decide_match(0, 1, ask, TournamentConfig(votes=3), 7))
    assert match.escalated and match.judge == "large" and match.winner == 1 and match.decided_by == "majority"
    assert sum(large_asked) == 3  # the match's vote budget (6) counts both judges: 3 left
    assert [v.judge for v in match.votes] == ["small"] * 3 + ["large"] * 3
    assert match.tally == {"a": 0, "b": 3, "invalid": 0}  # the deciding judge's votes
    data = match.to_json()
    assert data["escalated"] is True and data["judge"] == "large" and data["votes"][3]["judge"] == "large"


def test_the_escalation_judge_ties_within_what_is_left_of_the_budget():
    ask, _, large_asked = panel("ab", "abab")
    match = asyncio.run(decide_match(0, 1, ask, TournamentConfig(votes=2, max_votes=6), 3))
    assert match.escalated and sum(large_asked) == 4 and match.decided_by == "tiebreak"  # 2, then 1+1, then coin
    # no room left: the first judge's votes decide as they would alone
    ask, _, large_asked = panel("aab", "")
    match = asyncio.run(decide_match(0, 1, ask, TournamentConfig(votes=3, max_votes=3), 3))
    assert not match.escalated and match.judge == "small" and match.winner == 0 and large_asked == []


def test_swiss_counts_both_judges_samples_within_its_budget():
    quality = [5, 3, 8, 1, 9, 2]
    spent = [0, 0]

    def judge(which, p_right):
        async def ask(first, second, k, seed):
            spent[which] += k
            better = first if quality[first] > quality[second] else second
            worse = second if better == first else first
            rng = random.Random(seed)
            return [Vote(first, second, better if rng.random() < p_right else worse, "", "stop", 1) for _ in range(k)]

        return ask

    for budget in (5, 9, 20):
        spent[:] = [0, 0]
        ask = Escalating(judge(0, 0.6), judge(1, 1.0), ("small", "large"))
        result = asyncio.run(swiss([f"c{i}" for i in range(6)], ask, TournamentConfig(votes=2, budget=budget), "r"))
        assert sum(spent) == result.to_json()["spent"] <= budget
        assert spent[1] > 0 or budget < 20  # small budgets leave a match no room to escalate
        assert sum(len(m.votes) for r in result.rounds for m in r) == sum(spent)
    # knockout routes every match through the escalation rule too
    ask = Escalating(judge(0, 0.6), judge(1, 1.0), ("small", "large"))
    result = asyncio.run(knockout([f"c{i}" for i in range(6)], ask, TournamentConfig(votes=2), "r"))
    assert result.winner == 4 and all(
        m.judge in ("small", "large") for r in result.rounds for m in r if m.b is not None
    )


def small_judge(first, second, rng):
    """Sure between answers of very different length, a coin between close ones."""
    if abs(len(first) - len(second)) >= 3:
        return prefers_longer(first, second, rng)
    return f"<think>hm</think>\\boxed{{Assistant {rng.choice((1, 2))}}}"


@pytest.fixture
def two_judges():
    """Backend `pair`: model `small` judges by `small_judge`, any other model prefers the longer answer."""
    loaded = []

    async def load(config):
        engine = ScriptedEngine(small_judge if config.model == "small" else prefers_longer)
        engine.name = config.model
        loaded.append(config.model)
        return engine

    register_backend(Backend("pair", HFOptions, load, local=True))
    return loaded


def test_cli_escalation_trace_and_show(tmp_path, two_judges):
    rows = [{"id": i, "query": "q", "candidates": ["a" * k for k in (1, 2, 3, 6, 7, 12, 13, 14)]} for i in range(4)]
    src = write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app,
        [
            "select",
            str(src),
            "--backend",
            "pair",
            "--judge",
            "small",
            "--escalate-judge",
            "big",
            "--votes",
            "3",
            "-q",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(set(two_judges)) == ["big", "small"]
    records = read_jsonl(out.read_text())
    matches = [m for r in records for rnd in r["tournament"]["rounds"] for m in rnd if m["b"] is not None]
    escalated = [m for m in matches if m.get("escalated")]
    assert all(m["winner"] == max(m["a"], m["b"]) for m in escalated)  # the big judge: the longer one
    assert escalated and len(escalated) < len(matches)
    assert all(m["judge"] == "big" for m in escalated)
    assert all(m["judge"] == "small" for m in matches if not m.get("escalated"))
    assert all(v["judge"] in ("small", "big") for m in matches for v in m["votes"])
    typed = [m for r in read_output(out.read_text().splitlines()) for m in r.matches()]
    assert sum(m.escalated for m in typed) == len(escalated)

    summary = json.loads(runner.invoke(app, ["show", str(out), "--json"]).stdout)
    assert summary["escalations"] == len(escalated)
    assert summary["escalation_samples"] == sum(1 for m in escalated for v in m["votes"] if v["judge"] == "big")
    shown = runner.invoke(app, ["show", str(out)])
    assert "escalated matches" in shown.stdout
    tree = runner.invoke(app, ["show", str(out), "--id", "0", "--full"]).stdout
    assert "escalated to big" in tree


def test_cli_escalation_needs_two_votes(tmp_path, two_judges):
    src = write_jsonl(tmp_path / "q.jsonl", [{"query": "q", "candidates": ["a", "bb"]}])
    result = runner.invoke(
        app, ["select", str(src), "--backend", "pair", "--judge", "small", "--escalate-judge", "big", "--votes", "1"]
    )
    assert result.exit_code == 2 and "--votes 2 or more" in result.output


def test_records_without_escalation_read_and_show_as_before():
    from bon.io.stats import Summary

    record = {
        "id": 1,
        "candidates": ["a", "bb"],
        "best_index": 1,
        "tournament": {
            "strategy": "knockout",
            "rounds": [
                [{"a": 0, "b": 1, "winner": 1, "decided_by": "majority", "votes": [{"first": 0, "verdict": 1}]}]
            ],
        },
    }
    summary = Summary()
    summary.add(record)
    assert "escalations" not in summary.to_json()
    (match,) = list(next(read_output([json.dumps(record)])).matches())
    assert match.judge is None and not match.escalated and match.votes[0].judge is None


# ---- resuming a run with an escalation judge (a process of its own, on the scripted backend)

ESCALATING = ["--judge", "small", "--escalate-judge", "big", "--votes", "3", "-q"]
COIN = {"BON_TEST_JUDGE": "coin"}  # both judges flip seeded coins: most matches escalate


@pytest.fixture
def eight(tmp_path):
    rows = [{"id": i, "query": f"q{i}", "candidates": [f"answer {k} of {i}" for k in range(8)]} for i in range(6)]
    return write_jsonl(tmp_path / "q.jsonl", rows)


def broken_run(tmp_path, src, log):
    """A run whose engine dies at its 60th request: OUTPUT holds a prefix, the sidecar the rest."""
    out = tmp_path / "out.jsonl"
    failed = scripted_bon(
        "select", src, *ESCALATING, "-o", out, env=COIN | {"BON_TEST_BREAK_AT": "60", "BON_TEST_LOG": str(log)}
    )
    assert failed.returncode == 1 and "the engine died" in failed.stderr, failed.stderr
    assert out.read_text().count("\n") < 6
    return out


def test_a_resume_reuses_the_escalation_judges_finished_work(tmp_path, eight):
    reference, whole_log = tmp_path / "reference.jsonl", tmp_path / "whole.log"
    done = scripted_bon("select", eight, *ESCALATING, "-o", reference, env=COIN | {"BON_TEST_LOG": str(whole_log)})
    assert done.returncode == 0, done.stderr
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    out = broken_run(tmp_path, eight, first_log)
    sidecar = [json.loads(line) for line in (tmp_path / "out.jsonl.bon-cache").read_text().splitlines()]
    assert sidecar[0]["settings"]["judge"]["escalate_judge"] == {"judge": "big", "engine_args": None}
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["escalate_judge"]["model"] == "big" and manifest["judge"]["model"] == "small"

    resumed = scripted_bon(
        "select", eight, *ESCALATING, "-o", out, "--resume", env=COIN | {"BON_TEST_LOG": str(second_log)}
    )
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == reference.read_bytes()  # as if never stopped

    def requests(log):  # each request by its content (the log's judge-role key)
        return [json.loads(line)[1] for line in log.read_text().splitlines()]

    before, again, whole = requests(first_log), requests(second_log), requests(whole_log)
    assert not set(before) & set(again)  # nothing finished before was asked again, the big judge's included
    assert sorted(before + again) == sorted(whole)  # and between them, exactly an uninterrupted run's requests
    big_votes = [
        vote
        for record in read_jsonl(out.read_text())
        for rnd in record["tournament"]["rounds"]
        for match in rnd
        for vote in match["votes"]
        if vote.get("judge") == "big"
    ]
    assert big_votes  # the escalation judge had work to keep


@pytest.mark.parametrize("other", [["--escalate-judge", "bigger"], []])
def test_a_resume_with_another_escalation_judge_is_refused(tmp_path, eight, other):
    out = broken_run(tmp_path, eight, tmp_path / "first.log")
    flags = ["--judge", "small", "--votes", "3", "-q", *other]
    refused = scripted_bon("select", eight, *flags, "-o", out, "--resume", env=COIN)
    assert refused.returncode == 2, refused.stderr
    assert "was made with other settings (judge)" in refused.stderr
