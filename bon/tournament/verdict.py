"""Judge completion text -> a vote for Assistant 1 or 2, or an invalid vote with a reason.

Read exactly as the RRM's published evaluation reads it (rrm-format.md, "Verdict parsing";
microsoft/LMOps RRM-evaluation, scripts/run_generative.py):
1. A thinking judge (the template says `thinking = true`) must end its thought: a
   completion without `</think>` is no vote. The chat template opened the thought, so
   the completion holds `</think>` but no `<think>`.
2. Only the text after the last `</think>` counts.
3. The last `\\boxed` in that text decides: it must be `\\boxed{` with matching braces;
   an unclosed or malformed last box is no vote (never a fall back to an earlier box).
   Its content, spaces stripped, must be `Assistant 1` or `Assistant 2`.
4. The finish reason is not consulted for a complete verdict: a completion cut by the
   token limit after its final box still counts. Without one it is `truncated`.
"""

from __future__ import annotations

from dataclasses import dataclass

from bon.tournament.answers import BOXED, last_boxed

TRUNCATED = "truncated"  # cut by the token limit before a complete verdict
NO_VERDICT = "no_verdict"  # finished without one: no `</think>` (thinking judge) or no `\boxed`
BAD_VERDICT = "bad_verdict"  # the last `\boxed` is unclosed, malformed or holds something else


@dataclass(frozen=True)
class Verdict:
    """`position` is 1 or 2 (the Assistant shown first or second), or None with a reason."""

    position: int | None
    reason: str | None = None


def parse_verdict(text: str, finish_reason: str | None, thinking: bool = False) -> Verdict:
    """The vote in a judge completion; `thinking`: the judge must close its thought first."""
    cut = finish_reason == "length"
    if "</think>" in text:
        text = text[text.rfind("</think>") + len("</think>") :]
    elif thinking or "<think>" in text:
        return Verdict(None, TRUNCATED if cut else NO_VERDICT)  # the thought never ended
    if BOXED not in text:
        return Verdict(None, TRUNCATED if cut else NO_VERDICT)
    content = last_boxed(text)
    if content is None:  # the last box never closed, or is not `\boxed{`
        return Verdict(None, TRUNCATED if cut else BAD_VERDICT)
    content = content.strip()
    if content == "Assistant 1":
        return Verdict(1)
    if content == "Assistant 2":
        return Verdict(2)
    return Verdict(None, BAD_VERDICT)
