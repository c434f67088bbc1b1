"""Verdict parsing: the strict RRM rule (rrm-format.md)."""

import pytest

from bon.verdict import BAD_VERDICT, NO_VERDICT, TRUNCATED, parse_verdict


@pytest.mark.parametrize(
    "text, position",
    [
        ("Thinking...\n</think>\n\n\\boxed{Assistant 1}", 1),
        ("Thinking...\n</think>\n\\boxed{Assistant 2}", 2),
        ("no think block at all \\boxed{Assistant 2}", 2),
        ("<think>full block</think> \\boxed{ Assistant 1 }", 1),
        # Only the text after the last </think> counts.
        ("maybe \\boxed{Assistant 1}</think> so \\boxed{Assistant 2}", 2),
        ("a </think> \\boxed{Assistant 1} b </think> then \\boxed{Assistant 2}", 2),
        # The last boxed answer wins.
        ("</think>\\boxed{Assistant 1} on second thought \\boxed{Assistant 2}", 2),
        # Nested braces inside \boxed{} are matched, and an unclosed later one is ignored.
        ("</think>\\boxed{Assistant 2} then \\boxed{Assis", 2),
        ("</think>\\boxed{\\text{x}} and finally \\boxed{Assistant 1}", 1),
    ],
)
def test_valid_verdicts(text, position):
    verdict = parse_verdict(text, "stop")
    assert verdict.position == position
    assert verdict.reason is None


@pytest.mark.parametrize(
    "text, finish, reason",
    [
        ("</think>\\boxed{Assistant 1}", "length", TRUNCATED),  # cut by the limit: never a vote
        ("thinking \\boxed{Assistant 1} still thinking", "length", TRUNCATED),
        ("I think \\boxed{Assistant 1}</think> and nothing after", "stop", NO_VERDICT),
        ("<think> never closed \\boxed{Assistant 1}", "stop", NO_VERDICT),
        ("</think> Assistant 1 is better", "stop", NO_VERDICT),
        ("</think>\\boxed{Assistant 3}", "stop", BAD_VERDICT),
        ("</think>\\boxed{Assistant 1 and 2}", "stop", BAD_VERDICT),
        ("</think>\\boxed{assistant 1}", "stop", BAD_VERDICT),
        ("</think>\\boxed{1}", "stop", BAD_VERDICT),
        ("</think>\\boxed{Assistant {1}}", "stop", BAD_VERDICT),
        ("</think>\\boxed{Assistant 1", "stop", NO_VERDICT),
        ("", "stop", NO_VERDICT),
    ],
)
def test_invalid_verdicts_carry_a_reason(text, finish, reason):
    verdict = parse_verdict(text, finish)
    assert verdict.position is None
    assert verdict.reason == reason
