"""Verdict parsing, exactly as the RRM's published evaluation reads it (rrm-format.md).

Texts are in the published format: the chat template opened the thought, so a completion
starts inside it, closes it with `</think>` and then answers with a box.
"""

import pytest

from bon.io.prompts import judge_template
from bon.tournament.answers import last_boxed
from bon.tournament.verdict import BAD_VERDICT, NO_VERDICT, TRUNCATED, parse_verdict

THOUGHT = (
    "Okay, let me check both. Assistant 1 computes 12 × 4 = 48, which is right. "
    "Assistant 2 says 46; that is a slip. Maybe \\boxed{Assistant 2}? No: 48 is correct.\n"
)


def completion(answer: str) -> str:
    return THOUGHT + "</think>\n\n" + answer


@pytest.mark.parametrize(
    "text, position",
    [
        (completion("Assistant 1 is exact.\n\n\\boxed{Assistant 1}"), 1),
        (completion("\\boxed{Assistant 2}"), 2),
        (completion("\\boxed{ Assistant 1 }"), 1),  # bon also accepts surrounding spaces
        # Only the text after the last </think> counts: a box inside the thought is ignored.
        ("maybe \\boxed{Assistant 1}</think> so \\boxed{Assistant 2}", 2),
        ("a </think> \\boxed{Assistant 1} b </think> then \\boxed{Assistant 2}", 2),
        # The last box decides.
        (completion("\\boxed{Assistant 1} on second thought \\boxed{Assistant 2}"), 2),
        (completion("\\boxed{\\text{x}} and finally \\boxed{Assistant 1}"), 1),
    ],
)
def test_a_finished_thought_and_a_final_box_are_a_vote(text, position):
    verdict = parse_verdict(text, "stop", thinking=True)
    assert (verdict.position, verdict.reason) == (position, None)


@pytest.mark.parametrize(
    "text",
    [
        THOUGHT + "\\boxed{Assistant 1}",  # the box sits in a thought that never ended
        "\\boxed{Assistant 2}",
        "",
    ],
)
def test_a_thinking_judge_without_end_of_thought_gives_no_vote(text):
    assert parse_verdict(text, "stop", thinking=True) == parse_verdict(text, None, thinking=True)
    assert parse_verdict(text, "stop", thinking=True).reason == NO_VERDICT
    assert parse_verdict(text, "length", thinking=True).reason == TRUNCATED


def test_a_plain_judge_may_answer_without_thinking():
    assert parse_verdict("Assistant 2 is right. \\boxed{Assistant 2}", "stop").position == 2
    # An opened but unclosed thought is still no answer, thinking judge or not.
    assert parse_verdict("<think> never closed \\boxed{Assistant 1}", "stop").reason == NO_VERDICT


def test_the_rrm_template_declares_a_thinking_judge():
    assert judge_template().thinking is True


def test_a_completion_cut_after_its_final_box_is_a_vote():
    cut = completion("Assistant 1 is right.\n\n\\boxed{Assistant 1}\n\nTo summarise, the first")
    assert parse_verdict(cut, "length", thinking=True).position == 1


@pytest.mark.parametrize(
    "text",
    [
        THOUGHT + "and still weighing whether \\boxed{Assistant 1} or",  # cut mid-thought
        completion("Assistant 1 is right, so the answer is"),  # cut before the box
        completion("\\boxed{Assistant 2} on reflection \\boxed{Assist"),  # cut inside the last box
    ],
)
def test_a_completion_cut_before_a_complete_final_box_is_truncated(text):
    verdict = parse_verdict(text, "length", thinking=True)
    assert (verdict.position, verdict.reason) == (None, TRUNCATED)


@pytest.mark.parametrize(
    "answer",
    [
        "\\boxed{Assistant 2} then \\boxed{Assis",  # the last box never closes
        "\\boxed{Assistant 1} but \\boxed Assistant 2",  # the last \boxed has no brace
        "\\boxed{Assistant 1}, though I wrote \\boxed {Assistant 1} above",  # a space before the brace
    ],
)
def test_a_malformed_last_box_is_invalid_without_falling_back_to_an_earlier_one(answer):
    verdict = parse_verdict(completion(answer), "stop", thinking=True)
    assert (verdict.position, verdict.reason) == (None, BAD_VERDICT)


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("Assistant 1 is better", NO_VERDICT),
        ("", NO_VERDICT),
        ("\\boxed{Assistant 3}", BAD_VERDICT),
        ("\\boxed{Assistant 1 and 2}", BAD_VERDICT),
        ("\\boxed{assistant 1}", BAD_VERDICT),
        ("\\boxed{1}", BAD_VERDICT),
        ("\\boxed{Assistant {1}}", BAD_VERDICT),
    ],
)
def test_invalid_verdicts_carry_a_reason(answer, reason):
    verdict = parse_verdict(completion(answer), "stop", thinking=True)
    assert (verdict.position, verdict.reason) == (None, reason)


def test_last_boxed_matches_braces_and_never_falls_back():
    assert last_boxed("x \\boxed{\\frac{1}{2}} y") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{4} and \\boxed{5") is None
    assert last_boxed("no box") is None
