"""Final answers of candidate responses: extraction, equivalence and teams.

One implementation for `bon score` (is the chosen answer right? what would a majority
vote pick?) and for answer-aware tournaments (which candidates form a team).

A response's final answer is the content of its last `\\boxed{...}`, else its whole text,
whitespace collapsed. Two kinds of equivalence:
- `exact`: the final answers are equal strings;
- `math`: math-verify finds the two responses equal (1/2 = 0.5 = \\frac{1}{2}); it reads
  the whole response and prefers its last box itself.
A response has no answer when there is nothing to compare: `exact` — its final answer is
empty (an empty or blank text, or an empty last box); `math` — math-verify extracts
nothing from it. Such a response never shares an answer with another one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

BOXED = "\\boxed"


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`, brace-matched; None when there is no `\\boxed`,
    or the last one is not followed by `{` or never closes (an earlier box does not count)."""
    start = text.rfind(BOXED)
    if start == -1 or text[start + len(BOXED) : start + len(BOXED) + 1] != "{":
        return None
    opened = start + len(BOXED) + 1
    depth = 1
    for i in range(opened, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[opened:i]
    return None


def final_answer(text: str) -> str:
    """The last \\boxed{...} content if there is one, else the whole text; spaces collapsed."""
    boxed = last_boxed(text)
    return " ".join((text if boxed is None else boxed).split())


@dataclass(frozen=True)
class AnswerGroup:
    """Candidates (indices, ascending) whose final answers are equivalent; `answer` is the
    first member's extracted answer, None for a candidate that has none."""

    answer: str | None
    members: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"answer": self.answer, "members": list(self.members)}


class Checker:
    """Decides whether two responses, or a response and a reference, agree (`exact` or `math`)."""

    def __init__(self, kind: str):
        if kind not in ("exact", "math"):
            raise ValueError(f"unknown answer check {kind!r}: use exact or math")
        self.kind = kind
        if kind == "math":
            try:
                from math_verify import parse, verify
            except ImportError:
                raise ImportError('answer checks with math need math-verify: pip install "bon[math]"') from None
            self._parse, self._verify = parse, verify

    def _timeout(self) -> int | None:
        # math-verify bounds its work with signal.alarm, which only the main thread may
        # set; elsewhere (bon's sync API runs on a background thread) it must go unbounded.
        return 5 if threading.current_thread() is threading.main_thread() else None

    def _parsed(self, text: str, gold: bool = False) -> Any:
        if gold and "$" not in text and BOXED not in text:
            text = f"${text}$"
        return self._parse(text, parsing_timeout=self._timeout())

    def _equal(self, gold: Any, target: Any) -> bool:
        return bool(gold) and bool(target) and bool(self._verify(gold, target, timeout_seconds=self._timeout()))

    def key(self, text: str) -> Any:
        """What equivalence compares: the final answer (`exact`) or math-verify's parse
        (`math`); None when the response has no answer."""
        if self.kind == "exact":
            return final_answer(text) or None
        return self._parsed(text) or None

    def shown(self, key: Any) -> str | None:
        """A key as text for people: math-verify's parse ends with the string it matched."""
        if key is None or self.kind == "exact":
            return key
        return str(key[-1])

    def equivalent(self, x: Any, y: Any) -> bool:
        """Whether two keys (from `key`) are the same answer; no answer equals nothing."""
        if x is None or y is None:
            return False
        return x == y if self.kind == "exact" else self._equal(x, y)

    def correct(self, response: str, reference: str) -> bool:
        if self.kind == "exact":
            return final_answer(response) == " ".join(reference.split())
        return self._equal(self._parsed(reference, gold=True), self._parsed(response))


def group_answers(candidates: list[str], checker: Checker) -> list[AnswerGroup]:
    """Teams of equivalent final answers, in order of their first member; every candidate
    is in exactly one, a candidate without an answer alone."""
    keys = [checker.key(text) for text in candidates]
    teams: list[list[int]] = []
    for i, key in enumerate(keys):
        team = next((t for t in teams if checker.equivalent(keys[t[0]], key)), None)
        if team is None:
            teams.append([i])
        else:
            team.append(i)
    return [AnswerGroup(checker.shown(keys[t[0]]), tuple(t)) for t in teams]


def team_of(groups: list[AnswerGroup], n: int) -> list[int]:
    """For each of n candidates, the number of its group."""
    teams = [0] * n
    for number, group in enumerate(groups):
        for member in group.members:
            teams[member] = number
    return teams


def majority_answer(candidates: list[str], checker: Checker) -> int | None:
    """Index of a candidate from the largest group of equivalent final answers (ties: the
    earliest; a candidate without an answer wins only when no candidate has one)."""
    groups = group_answers(candidates, checker)
    if not groups:
        return None
    return max(groups, key=lambda g: (len(g.members), g.answer is not None, -g.members[0])).members[0]
