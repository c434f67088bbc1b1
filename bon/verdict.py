"""Judge completion text -> a vote for Assistant 1 or 2, or an invalid vote with a reason.

The published RRM rule, made strict (rrm-format.md): a completion cut by the token limit
is no vote; only the text after the last `</think>` counts; an unclosed `<think>` is no
vote; the last brace-matched `\\boxed{...}` must hold exactly `Assistant 1` or
`Assistant 2`.
"""

from __future__ import annotations

from dataclasses import dataclass

TRUNCATED = "truncated"
NO_VERDICT = "no_verdict"
BAD_VERDICT = "bad_verdict"

_BOXED = "\\boxed{"


@dataclass(frozen=True)
class Verdict:
    """`position` is 1 or 2 (the Assistant shown first or second), or None with a reason."""

    position: int | None
    reason: str | None = None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` whose braces close, or None."""
    start = text.rfind(_BOXED)
    while start != -1:
        depth = 1
        i = start + len(_BOXED)
        while i < len(text):
            ch = text[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start + len(_BOXED) : i]
            i += 1
        # Unclosed: an earlier \boxed{ may still be complete.
        start = text.rfind(_BOXED, 0, start)
    return None


def parse_verdict(text: str, finish_reason: str | None) -> Verdict:
    if finish_reason == "length":
        return Verdict(None, TRUNCATED)
    if "</think>" in text:
        text = text[text.rfind("</think>") + len("</think>") :]
    elif "<think>" in text:
        return Verdict(None, NO_VERDICT)  # thinking never ended: no answer was given
    content = last_boxed(text)
    if content is None:
        return Verdict(None, NO_VERDICT)
    content = content.strip()
    if content == "Assistant 1":
        return Verdict(1)
    if content == "Assistant 2":
        return Verdict(2)
    return Verdict(None, BAD_VERDICT)
