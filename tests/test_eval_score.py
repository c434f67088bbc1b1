"""`bon eval` (pairwise accuracy) and `bon score` (best-of-N accuracy), against hand-computed figures."""

import json

import pytest
from typer.testing import CliRunner

from bon.cli.main import app
from bon.views.evaluate import Checker, majority_answer
from conftest import read_jsonl, write_jsonl

runner = CliRunner()

PAIRS = [
    {"prompt": "p1", "chosen": "a long good answer", "rejected": "short", "subset": "chat"},
    {"prompt": "p2", "chosen": "short", "rejected": "a long bad answer", "subset": "chat"},
    {"prompt": "p3", "chosen": "a long good answer", "rejected": "tiny", "subset": "math"},
    {"prompt": "p4", "chosen": "same size", "rejected": "size same", "subset": "math"},
]


def test_eval_accuracy_matches_hand_computed_values(tmp_path, scripted):
    src = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "judged.jsonl"
    result = runner.invoke(app, ["eval", str(src), "--votes", "2", "--json", "-o", str(out), "--backend", "scripted"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # The scripted judge prefers the longer answer, and the one shown first on equal lengths:
    # p1 right, p2 wrong, p3 right, p4 one vote each way -> half right.
    assert report["accuracy"] == 0.625 and report["pairs"] == 4 and report["ties_count_half"] is True
    assert report["subsets"]["chat"]["accuracy"] == 0.5 and report["subsets"]["math"]["accuracy"] == 0.75
    assert report["ci95"] == [0.1559, 1.0]
    assert report["accuracy_by_votes"] == {"1": 0.75, "2": 0.625}  # 1 vote: the chosen-first vote only
    assert report["first_position_win_rate"] == 0.625 and report["invalid_rate"] == 0.0
    assert [r["score"] for r in read_jsonl(out.read_text())] == [1.0, 0.0, 1.0, 0.5]


def test_eval_field_mapping_and_table(tmp_path, scripted):
    rows = [{"question": p["prompt"], "good": p["chosen"], "bad": p["rejected"]} for p in PAIRS]
    src = write_jsonl(tmp_path / "pairs.jsonl", rows)
    result = runner.invoke(
        app,
        [
            "eval",
            str(src),
            "--prompt-field",
            "question",
            "--chosen-field",
            "good",
            "--rejected-field",
            "bad",
            "--votes",
            "3",
            "--backend",
            "scripted",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "pairwise accuracy" in result.stdout and "accuracy by votes" in result.stdout


def test_eval_bad_line_is_one_line_exit_2(tmp_path, scripted):
    src = write_jsonl(tmp_path / "pairs.jsonl", [PAIRS[0], {"prompt": "p", "chosen": "x"}])
    result = runner.invoke(app, ["eval", str(src), "--backend", "scripted"])
    assert result.exit_code == 2 and "line 2: `rejected` must be a non-empty string" in result.stderr
    assert scripted.requests == []


def test_eval_with_a_judge_of_known_accuracy_lands_in_the_binomial_interval(tmp_path, scripted):
    def right_80_percent(first, second, rng):
        longer = 1 if len(first) >= len(second) else 2
        pick = longer if rng.random() < 0.8 else 3 - longer
        return f"</think>\\boxed{{Assistant {pick}}}"

    scripted.decide = right_80_percent
    rows = [{"prompt": f"p{i}", "chosen": "a clearly longer answer " * 2, "rejected": "short"} for i in range(400)]
    src = write_jsonl(tmp_path / "pairs.jsonl", rows)
    result = runner.invoke(app, ["eval", str(src), "--votes", "1", "--json", "--backend", "scripted"])
    accuracy = json.loads(result.stdout)["accuracy"]
    assert abs(accuracy - 0.8) < 3 * (0.8 * 0.2 / 400) ** 0.5  # within 3 sigma of p = 0.8


BON_OUTPUT = [
    {
        "id": 1,
        "answer": "4",
        "candidates": ["\\boxed{4}", "\\boxed{5}", "so \\boxed{4}"],
        "best": "\\boxed{5}",
        "best_index": 1,
    },
    {
        "id": 2,
        "answer": "\\frac{1}{2}",
        "candidates": ["x = \\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{1}"],
        "best": "\\boxed{0.5}",
        "best_index": 1,
    },
    {"id": 3, "candidates": ["a"], "best": "a", "best_index": 0},  # no reference: skipped
]


@pytest.mark.parametrize(
    "check, expected",
    [
        (
            "exact",
            {"records": 2, "skipped": 1, "accuracy": 0.0, "oracle": 1.0, "first_candidate": 1.0, "majority_vote": 1.0},
        ),
        (
            "math",
            {"records": 2, "skipped": 1, "accuracy": 0.5, "oracle": 1.0, "first_candidate": 1.0, "majority_vote": 1.0},
        ),
    ],
)
def test_score_against_references(tmp_path, check, expected):
    src = write_jsonl(tmp_path / "out.jsonl", BON_OUTPUT)
    result = runner.invoke(app, ["score", str(src), "--check", check, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == expected
    table = runner.invoke(app, ["score", str(src), "--check", check])
    assert "oracle" in table.stdout and "2 records scored" in table.stdout


@pytest.mark.parametrize(
    "response, reference, right",
    [
        ("The answer is $\\boxed{\\frac{3}{4}}$", "0.75", True),
        ("so we get \\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}", True),
        ("Therefore $x = \\boxed{2\\pi}$.", "2\\pi", True),
        ("\\boxed{(1, 2)}", "(1,2)", True),
        ("Hence \\boxed{12}", "13", False),
        ("I could not solve it.", "7", False),
    ],
)
def test_math_check_on_real_latex_answers(response, reference, right):
    assert Checker("math").correct(response, reference) is right


def test_majority_vote_groups_equivalent_answers():
    checker = Checker("math")
    candidates = ["\\boxed{1/2}", "\\boxed{3}", "\\boxed{0.5}", "\\boxed{3}", "\\boxed{\\frac{1}{2}}"]
    assert majority_answer(candidates, checker) == 0  # 1/2 = 0.5 = \frac{1}{2}: three of five
