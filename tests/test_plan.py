"""`bon plan`: its counts against what a real run (scripted engine) actually spent."""

import json

import pytest
from typer.testing import CliRunner

from bon.cli.main import app
from conftest import read_jsonl, write_jsonl

RECORDS = [
    {"id": "sampled", "query": "Name a colour."},  # no candidates: planned with -n
    {"id": "given", "query": "Pick one.", "candidates": ["a", "bb", "ccc", "dddd", "eeeee"]},
    # identical texts never meet the judge: which ones meet depends on this record's bracket
    {"id": "twins", "query": "Pick one.", "candidates": ["same", "same", "other text", "same", "x"]},
    {"id": "all-same", "query": "Pick one.", "candidates": ["one", "one", "one"]},
]


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result


def spent(output: str) -> tuple[int, int]:
    """(judged matches, judge samples) that a run's records report."""
    records = read_jsonl(output)
    matches = sum(1 for r in records for rnd in r["tournament"]["rounds"] for m in rnd if m["votes"])
    samples = sum(r["usage"]["judge_samples"] for r in records)
    assert samples == sum(len(m["votes"]) for r in records for rnd in r["tournament"]["rounds"] for m in rnd)
    return matches, samples


def run_and_plan(tmp_path, *settings: str) -> tuple[tuple[int, int], dict]:
    queries = write_jsonl(tmp_path / "q.jsonl", RECORDS)
    run = invoke(
        "run", str(queries), "--policy", "p", "--judge", "j", "--backend", "scripted", "-n", "6", "-q", *settings
    )
    assert run.exit_code == 0, run.output
    plan = invoke("plan", str(queries), "-n", "6", "--json", *settings)
    assert plan.exit_code == 0, plan.output
    return spent(run.stdout), json.loads(plan.stdout)


@pytest.mark.parametrize(
    "strategy", [["--strategy", "knockout"], ["--strategy", "elo"], ["--strategy", "elo", "--max-pairs", "4"]]
)
def test_a_judge_that_agrees_with_itself_spends_the_usual_samples(tmp_path, scripted, strategy):
    (matches, samples), plan = run_and_plan(tmp_path, "--votes", "3", "--seed", "7", *strategy)
    assert plan["queries"] == 4 and plan["candidates"] == 6 + 5 + 5 + 3
    assert plan["matches"] == matches
    assert plan["judge_samples"]["usual"] == samples == 3 * matches
    assert plan["judge_samples"]["min"] == samples  # without early stop, every match draws its votes
    assert plan["judge_samples"]["max"] == 6 * matches  # the default budget: 2 × votes
    assert plan["judge_tokens"] is None and plan["hours"] is None


def test_with_early_stop_an_agreeing_judge_spends_the_fewest(tmp_path, scripted):
    (matches, samples), plan = run_and_plan(tmp_path, "--votes", "5", "--early-stop", "--max-votes", "9")
    assert plan["matches"] == matches
    assert plan["judge_samples"]["min"] == samples == 3 * matches
    assert plan["judge_samples"]["usual"] == 5 * matches and plan["judge_samples"]["max"] == 9 * matches


def test_a_judge_that_disagrees_with_itself_spends_between_min_and_max(tmp_path, scripted):
    scripted.decide = lambda first, second, rng: f"<think>coin</think>\\boxed{{Assistant {rng.choice((1, 2))}}}"
    (matches, samples), plan = run_and_plan(tmp_path, "--votes", "2", "--early-stop")
    assert plan["matches"] == matches
    # ties (1–1) draw extra pairs of votes here: the run spends more than the usual
    assert plan["judge_samples"]["min"] <= samples <= plan["judge_samples"]["max"]
    assert samples > plan["judge_samples"]["usual"]


def test_tokens_and_hours_come_from_a_previous_outputs_measured_samples(tmp_path, scripted):
    queries = write_jsonl(tmp_path / "q.jsonl", RECORDS)
    previous = tmp_path / "previous.jsonl"
    assert (
        invoke(
            "run", str(queries), "--policy", "p", "--judge", "j", "--backend", "scripted", "-q", "-o", str(previous)
        ).exit_code
        == 0
    )
    records = read_jsonl(previous.read_text())
    per_sample = sum(r["usage"]["judge_completion_tokens"] for r in records) / sum(
        r["usage"]["judge_samples"] for r in records
    )
    result = invoke("plan", str(queries), "--json", "--from", str(previous), "--tokens-per-second", "0.5")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["judge_tokens"] == round(plan["judge_samples"]["usual"] * per_sample)
    assert plan["hours"] == pytest.approx(plan["judge_tokens"] / 0.5 / 3600)
    readable = invoke("plan", str(queries), "--from", str(previous))
    assert f"judge tokens   {plan['judge_tokens']}" in readable.stdout and "\nhours " not in readable.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"query": "fine"}\n{"query": "broken"\n')
    result = CliRunner().invoke(app, ["plan", str(queries)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"bon: error: {queries}: line 2: invalid JSON (Expecting ',' delimiter at column 1)"
    ]
    unjudged = write_jsonl(tmp_path / "p.jsonl", [{"id": 1, "query": "q"}])
    result = CliRunner().invoke(app, ["plan", str(queries), "--from", str(unjudged)])
    assert result.exit_code == 2 and "no judged record" in result.output


def test_an_answer_aware_plan_groups_the_candidates_it_has(tmp_path, scripted):
    rows = [
        {"id": "agree", "query": "2+2?", "candidates": ["It is \\boxed{4}.", "So \\boxed{4}", "\\boxed{ 4 }!"]},
        {"id": "sampled", "query": "Name a colour."},
    ]  # sampled later: counted as all different
    queries = write_jsonl(tmp_path / "q.jsonl", rows)
    run = invoke(
        "run",
        str(queries),
        "--policy",
        "p",
        "--judge",
        "j",
        "--backend",
        "scripted",
        "-n",
        "4",
        "-q",
        "--group-by-answer",
        "exact",
    )
    assert run.exit_code == 0, run.output
    plan = invoke("plan", str(queries), "-n", "4", "--json", "--group-by-answer", "exact")
    assert plan.exit_code == 0, plan.output
    figures = json.loads(plan.stdout)
    matches, samples = spent(run.stdout)
    assert (figures["matches"], figures["judge_samples"]["usual"]) == (matches, samples) == (3, 9)
    plain = json.loads(invoke("plan", str(queries), "-n", "4", "--json").stdout)
    assert plain["matches"] == 2 + 3  # without grouping the agreeing record needs its 2 matches
