"""A pool run (every pair, K votes in each order), strategies replayed from it, and `bon curve`."""

import asyncio
import json
import random
import sys
from collections import Counter

import pytest
from typer.testing import CliRunner

from bon.cli.main import app
from bon.config import HFOptions, TournamentConfig
from bon.engines import Backend
from bon.engines.base import Completion, Generation
from bon.engines.scripted import ScriptedEngine, split_judge_prompt
from bon.errors import UsageError
from bon.io.output import read_output
from bon.plugins import register_backend
from bon.tournament import Vote
from bon.tournament.pool import POOL_EXHAUSTED, Pool, PoolAsk, pool
from bon.views.curve import replay
from conftest import read_jsonl, write_jsonl

runner = CliRunner()


class SequenceJudge(ScriptedEngine):
    """A judge whose c-th vote on an ordered pair of a query is fixed in advance, whoever
    asks and with whatever seed: it prefers the longer answer 70% of the time (80% when the
    longer is shown first: a position bias), and 10% of its votes carry no verdict. A live
    run against it and a replay from a pool it filled see the same votes in the same order."""

    def __init__(self):
        super().__init__()
        self.given = Counter()

    async def generate(self, request):
        user = request.messages[-1]["content"]
        if "### Assistant 1" not in user:
            return await super().generate(request)
        self.requests.append(request)
        first, second = split_judge_prompt(user)
        completions = []
        for _ in range(request.n):
            c = self.given[user]
            self.given[user] += 1
            rng = random.Random(f"{user}|{c}")
            longer = 1 if len(first) >= len(second) else 2
            if rng.random() < 0.1:
                text = f"<think>vote {c}: unsure</think> no verdict"
            else:
                right = rng.random() < (0.8 if longer == 1 else 0.7)
                text = f"<think>vote {c}</think>\\boxed{{Assistant {longer if right else 3 - longer}}}"
            completions.append(Completion(text, "stop", 10 + c % 7))
        return Generation(completions, len(user.split()), sum(c.completion_tokens for c in completions))


@pytest.fixture
def sequence():
    """Backend `sequence`: every load a fresh SequenceJudge (its votes start over)."""
    engines = []

    async def load(config):
        engines.append(SequenceJudge())
        return engines[-1]

    register_backend(Backend("sequence", HFOptions, load, local=True))
    return engines


def rows(count=4, n=6):
    rng = random.Random(1)
    out = []
    for q in range(count):
        lengths = rng.sample(range(1, 30), n)
        answers = [rng.choice(["12", "12", "13", "7"]) for _ in range(n)]
        out.append(
            {
                "id": f"q{q}",
                "query": f"question {q}",
                "answer": "12",
                "candidates": [f"\\boxed{{{a}}} " + "x" * k for a, k in zip(answers, lengths)],
            }
        )
    return out


def select(tmp_path, src, name, *flags):
    out = tmp_path / f"{name}.jsonl"
    result = runner.invoke(app, ["select", str(src), "--backend", "sequence", "-q", "-o", str(out), *flags])
    assert result.exit_code == 0, result.output
    return out


# ---- the pool itself


def test_a_pool_judges_every_pair_k_times_in_each_order_and_picks_by_every_vote():
    asked = []

    async def ask(first, second, k, seed):
        asked.append((first, second, k))
        return [Vote(first, second, max(first, second), "", "stop", 2) for _ in range(k)]

    texts = ["a", "b", "a", "c"]  # 0 and 2 are identical: never judged
    result = asyncio.run(pool(texts, ask, TournamentConfig(votes=3), "r"))
    pairs = {(i, j) for i in range(4) for j in range(4) if i != j and texts[i] != texts[j]}
    assert {(f, s) for f, s, _ in asked} == pairs and all(k == 3 for *_, k in asked)
    assert result.winner == 3 and result.ranking[0] == 3 and result.to_json()["votes_per_order"] == 3
    (matches,) = result.rounds
    assert len(matches) == 6 and sum(len(m.votes) for m in matches) == 5 * 6
    assert [m.decided_by for m in matches if m.a == 0 and m.b == 2] == ["identical"]


def test_a_pool_refuses_a_budget_and_answer_groups():
    with pytest.raises(UsageError, match="--budget"):
        Pool().check(TournamentConfig(strategy="pool", budget=10))
    with pytest.raises(UsageError, match="--group-by-answer"):
        Pool().check(TournamentConfig(strategy="pool", group_by_answer="exact"))


def test_the_replay_ask_hands_out_recorded_votes_in_order_and_running_out_counts_as_spent():
    recorded = {(0, 1): [Vote(0, 1, v, f"r{i}", "stop", 5) for i, v in enumerate((0, 1, None))]}
    ask = PoolAsk(recorded)
    first = asyncio.run(ask(0, 1, 2, 123))
    assert [v.reasoning for v in first] == ["r0", "r1"]
    rest = asyncio.run(ask(0, 1, 3, 456))
    assert [v.reasoning for v in rest[:1]] == ["r2"] and all(v.verdict is None for v in rest)
    assert [v.reason for v in rest[1:]] == [POOL_EXHAUSTED] * 2
    assert asyncio.run(ask(1, 0, 1, 0))[0].reason == POOL_EXHAUSTED  # the other order was never recorded
    assert (ask.samples, ask.short, ask.tokens) == (6, 3, 15)
    rest[0].judge = "x"
    assert recorded[(0, 1)][2].judge is None  # a strategy marking a vote leaves the pool alone


def test_bon_plan_counts_a_pool(tmp_path):
    src = write_jsonl(tmp_path / "q.jsonl", rows(2, 5))
    plan = json.loads(runner.invoke(app, ["plan", str(src), "--strategy", "pool", "--votes", "4", "--json"]).stdout)
    assert plan["matches"] == 2 * 10 and plan["judge_samples"] == {"min": 160, "usual": 160, "max": 160}


# ---- replay equals live


LIVE = [
    ("knockout", ["--votes", "1"]),
    ("knockout", ["--votes", "3"]),
    ("knockout", ["--votes", "5"]),
    ("knockout", ["--votes", "3", "--early-stop"]),
    ("knockout", ["--votes", "3", "--group-by-answer", "exact"]),
    ("elo", ["--votes", "1"]),
    ("elo", ["--votes", "2", "--max-pairs", "7"]),
    ("swiss", ["--votes", "1", "--budget", "8"]),
    ("swiss", ["--votes", "1", "--budget", "15"]),
    ("swiss", ["--votes", "2", "--budget", "12", "--early-stop"]),
]


def config_of(strategy, flags, seed):
    keys = {"--votes": "votes", "--budget": "budget", "--max-pairs": "max_pairs", "--group-by-answer": None}
    settings, it = {"strategy": strategy, "seed": seed}, iter(flags)
    for flag in it:
        if flag == "--early-stop":
            settings["early_stop"] = True
        elif flag == "--group-by-answer":
            settings["group_by_answer"] = next(it)
        else:
            settings[keys[flag]] = int(next(it))
    return TournamentConfig(**settings)


def test_every_strategy_replayed_from_a_pool_plays_as_it_does_live(tmp_path, sequence):
    src = write_jsonl(tmp_path / "q.jsonl", rows())
    pool_out = select(tmp_path, src, "pool", "--strategy", "pool", "--votes", "6")
    pool_records = list(read_output(pool_out.read_text().splitlines()))
    assert all(r.tournament.strategy == "pool" for r in pool_records)
    for seed in (0, 7):
        for number, (strategy, flags) in enumerate(LIVE):
            live = read_jsonl(
                select(
                    tmp_path, src, f"live{seed}-{number}", "--strategy", strategy, "--seed", seed, *flags
                ).read_text()
            )
            config = config_of(strategy, flags, seed)
            for pooled, record in zip(pool_records, live):
                result, ask = asyncio.run(replay(pooled, strategy, config))
                assert ask.short == 0, (strategy, flags)
                assert result.winner == record["best_index"], (strategy, flags, record["id"])
                assert result.to_json() == {k: v for k, v in record["tournament"].items() if k != "judge"}
                assert ask.samples == record["usage"]["judge_samples"]
                assert ask.tokens == record["usage"]["judge_completion_tokens"]


# ---- bon curve


@pytest.fixture
def pool_run(tmp_path, sequence):
    src = write_jsonl(tmp_path / "q.jsonl", rows(6))
    return src, select(tmp_path, src, "pool", "--strategy", "pool", "--votes", "5")


def test_curve_json_has_a_curve_per_strategy_and_the_baselines(tmp_path, pool_run):
    src, pool_out = pool_run
    result = runner.invoke(app, ["curve", str(pool_out), "--check", "exact", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["records"] == 6 and figures["candidates"] == 6 and figures["votes_per_order"] == 5
    curves = {c["name"]: c["points"] for c in figures["curves"]}
    assert list(curves) == ["knockout", "knockout early-stop", "knockout answer-aware", "elo", "swiss", "pool"]
    assert [p["label"] for p in curves["knockout"]] == ["knockout 1 vote", "knockout 3 votes", "knockout 5 votes"]
    assert [p["settings"]["budget"] for p in curves["swiss"]] == [5, 8, 10, 15]  # (n-1) × 1, 1.5, 2, 3
    for point in (p for points in curves.values() for p in points):
        assert set(point) == {
            "label",
            "strategy",
            "settings",
            "judge_samples",
            "judge_tokens",
            "accuracy",
            "ci95",
            "short",
        }
        assert 0 <= point["accuracy"] <= 1 and point["ci95"][0] <= point["accuracy"] <= point["ci95"][1]
        assert point["judge_samples"] > 0 and point["judge_tokens"] > 0
    assert 5 <= curves["knockout"][0]["judge_samples"] <= 7  # n - 1 matches, one vote each (and ties' extra votes)
    assert all(p["judge_samples"] <= p["settings"]["budget"] for p in curves["swiss"])
    assert curves["pool"][0]["judge_samples"] == 15 * 10  # every pair, 5 a side
    assert [b["key"] for b in figures["baselines"]] == ["majority", "oracle", "first"]
    assert figures["baselines"][1]["label"] == "oracle (pass@6)"

    # a point is what the live run scores: knockout 3 votes, seed 0
    live = select(tmp_path, src, "live", "--votes", "3")
    score = json.loads(runner.invoke(app, ["score", str(live), "--json"]).stdout)
    assert curves["knockout"][1]["accuracy"] == score["accuracy"]
    assert figures["baselines"][0]["accuracy"] == score["majority_vote"]
    assert figures["baselines"][1]["accuracy"] == score["oracle"]

    budgets = json.loads(
        runner.invoke(app, ["curve", str(pool_out), "--json", "--budget", "4", "--budget", "30"]).stdout
    )
    swiss = next(c["points"] for c in budgets["curves"] if c["name"] == "swiss")
    assert [p["settings"]["budget"] for p in swiss] == [4, 30]


def test_curve_table_and_plot(tmp_path, pool_run):
    _, pool_out = pool_run
    png = tmp_path / "curves.png"
    result = runner.invoke(app, ["curve", str(pool_out), "--plot", str(png)], env={"COLUMNS": "140"})
    assert result.exit_code == 0, result.output
    for text in ("knockout 3 votes", "swiss budget 10", "answer majority", "oracle (pass@6)", "samples/query"):
        assert text in result.stdout
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(data) < 200_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 600 <= width <= 1200 and 250 <= height <= 500


def test_curve_plot_without_matplotlib_says_what_to_install(tmp_path, pool_run, monkeypatch):
    _, pool_out = pool_run
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    result = runner.invoke(app, ["curve", str(pool_out), "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 2
    assert result.output.strip() == 'bon: error: --plot needs matplotlib: pip install "bon[plot]"'
    assert not (tmp_path / "c.png").exists()


def test_curve_refuses_a_run_that_is_not_a_pool(tmp_path, sequence):
    src = write_jsonl(tmp_path / "q.jsonl", rows(2))
    out = select(tmp_path, src, "knockout", "--votes", "3")
    result = runner.invoke(app, ["curve", str(out)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "holds no pool" in result.output and "--strategy pool --votes 5" in result.output
    pool_out = select(tmp_path, src, "pool", "--strategy", "pool", "--votes", "2")
    unlabelled = write_jsonl(
        tmp_path / "unlabelled.jsonl",
        [{k: v for k, v in r.items() if k != "answer"} for r in read_jsonl(pool_out.read_text())],
    )
    result = runner.invoke(app, ["curve", str(unlabelled)])
    assert result.exit_code == 2 and "has candidates and `answer`" in result.output


def test_a_shallow_pool_shows_short_replays(tmp_path, pool_run, sequence):
    src, _ = pool_run
    shallow = select(tmp_path, src, "shallow", "--strategy", "pool", "--votes", "1")
    figures = json.loads(runner.invoke(app, ["curve", str(shallow), "--json"]).stdout)
    points = {p["label"]: p for c in figures["curves"] for p in c["points"]}
    assert points["knockout 1 vote"]["short"] <= points["knockout 5 votes"]["short"]
    assert points["knockout 5 votes"]["short"] == 6  # 3 votes of one order a match: one record is not enough
    # spent all the same, and the missing votes, invalid, draw extra votes as any invalid vote does
    assert 25 <= points["knockout 5 votes"]["judge_samples"] <= 50


def test_a_pool_run_reads_back_through_show_and_pairs(pool_run):
    _, pool_out = pool_run
    records = read_jsonl(pool_out.read_text())
    summary = json.loads(runner.invoke(app, ["show", str(pool_out), "--json"]).stdout)
    assert summary["records"] == 6 and summary["judge_samples"] == 6 * 15 * 10
    tree = runner.invoke(app, ["show", str(pool_out), "--id", "q0"])
    assert tree.exit_code == 0 and "pool" in tree.stdout
    pairs = read_jsonl(runner.invoke(app, ["pairs", str(pool_out), "--mode", "best-vs-rest"]).stdout)
    assert {p["chosen_index"] for p in pairs if p["id"] == "q0"} == {records[0]["best_index"]}
    assert records[0]["ranking"][0] == records[0]["best_index"]
