"""Preference pairs from bon's output: the judged matches as (prompt, chosen, rejected).

Best-of-N tournaments are how preference data for DPO-style training is made. Each line
is in TRL's standard preference format (`prompt`, `chosen`, `rejected` as text) or its
conversational one (the prompt as messages, each answer as one assistant message), plus
where the pair came from, so a line can be traced back to its votes.

Modes:
- `matches`: one pair per judged match, the match winner chosen.
- `best-vs-rest`: the final winner against every other candidate.
- `best-vs-worst`: the final winner against the first eliminated (knockout; among several
  losers of the earliest round, the one beaten by the widest margin) or the lowest rated (elo).

`margin` is how sure the judge was: in a match, the winner's share of its valid votes
(0.5–1); for a knockout winner and a candidate it never met, the smallest share along the
chain of wins that connects them; for elo's best-vs-* pairs, the rating gap in Elo points.
A match decided by tiebreak, identical texts or the same final answer says nothing about
which answer is better, so it gives no pair (nor does any chain through it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from bon.views.show import query_text

MODES = ("matches", "best-vs-rest", "best-vs-worst")
VOTE_SHARE, RATING_GAP = "vote_share", "rating_gap"


@dataclass
class PairCounts:
    """What a `bon pairs` run made and why it left pairs out (for its closing line)."""

    records: int = 0
    pairs: int = 0
    left_out: Counter = field(default_factory=Counter)  # reason -> pairs not made

    def line(self) -> str:
        why = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(self.left_out.items()))
        made = f"{self.pairs} pair{'' if self.pairs == 1 else 's'} from {self.records} record{'' if self.records == 1 else 's'}"
        return made + (f" (left out: {why})" if why else "")


def _share(match: dict[str, Any]) -> float | None:
    tally = match.get("tally") or {}
    valid = tally.get("a", 0) + tally.get("b", 0)
    return round(max(tally.get("a", 0), tally.get("b", 0)) / valid, 4) if valid else None


def _same_answer(record: dict[str, Any], i: int, j: int) -> bool:
    for group in (record.get("tournament") or {}).get("answer_groups") or []:
        members = group.get("members") or []
        if i in members and j in members:
            return True
    return False


@dataclass
class Candidate:
    """A proposed pair before the checks every mode shares."""

    chosen: int
    rejected: int
    margin: float | None
    margin_kind: str
    matches: list[list[int]]  # [round, position] in tournament.rounds, 0-based
    blocked_by: str | None = None  # why the evidence cannot rank the two: tiebreak, identical, same_answer


def _match_pairs(record: dict[str, Any]) -> Iterator[Candidate]:
    for r, round_matches in enumerate((record.get("tournament") or {}).get("rounds", [])):
        for m, match in enumerate(round_matches):
            if match.get("b") is None:
                continue  # a bye
            loser = match["b"] if match["winner"] == match["a"] else match["a"]
            decided = match.get("decided_by")
            yield Candidate(match["winner"], loser, _share(match), VOTE_SHARE, [[r, m]],
                            None if decided == "majority" else decided)


def _knockout_chains(record: dict[str, Any]) -> Iterator[tuple[int, Candidate]]:
    """(round eliminated, pair of the final winner against each eliminated candidate)."""
    beaten_by: dict[int, tuple[int, dict, list[int]]] = {}  # loser -> (winner, match, [round, position])
    for r, round_matches in enumerate((record.get("tournament") or {}).get("rounds", [])):
        for m, match in enumerate(round_matches):
            if match.get("b") is None or match.get("decided_by") == "same_answer":
                continue  # nobody is eliminated by a bye or a same-answer meeting
            loser = match["b"] if match["winner"] == match["a"] else match["a"]
            beaten_by[loser] = (match["winner"], match, [r, m])
    best = record["best_index"]
    for loser in beaten_by:
        chain, x, blocked = [], loser, None
        while x != best and x in beaten_by and len(chain) <= len(beaten_by):
            x, match, where = beaten_by[x]
            chain.append((match, where))
            if match.get("decided_by") != "majority":
                blocked = blocked or match.get("decided_by")
        if x != best:
            continue  # not connected to the winner by wins (an answer-aware bracket ended early)
        shares = [_share(match) for match, _ in chain]
        margin = None if None in shares else min(shares)
        yield chain[0][1][0], Candidate(best, loser, margin, VOTE_SHARE, [where for _, where in chain], blocked)


def _elo_pairs(record: dict[str, Any], worst_only: bool) -> Iterator[Candidate]:
    scores, best = record.get("scores") or [], record["best_index"]
    others = [i for i in (record.get("ranking") or range(len(scores))) if i != best]
    for other in others[-1:] if worst_only else others:
        gap = round(scores[best] - scores[other], 2)
        yield Candidate(best, other, gap, RATING_GAP, [], None if gap > 0 else "tiebreak")


def _proposals(record: dict[str, Any], mode: str) -> Iterator[Candidate]:
    if mode == "matches":
        yield from _match_pairs(record)
        return
    if record.get("best_index") is None:
        return
    if (record.get("tournament") or {}).get("strategy") == "elo":
        yield from _elo_pairs(record, worst_only=mode == "best-vs-worst")
        return
    chains = list(_knockout_chains(record))
    if mode == "best-vs-rest":
        yield from (pair for _, pair in chains)
        return
    usable = [(r, pair) for r, pair in chains if pair.blocked_by is None]
    if usable:  # the earliest round's loser, beaten by the widest margin
        yield min(usable, key=lambda rp: (rp[0], -(rp[1].margin or 0)))[1]


def record_pairs(record: dict[str, Any], mode: str = "matches", min_margin: float = 0.0,
                 conversational: bool = False, query_field: str = "query",
                 counts: PairCounts | None = None) -> list[dict[str, Any]]:
    """The preference pairs one output record gives in `mode` (see the module's docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    counts = counts if counts is not None else PairCounts()
    counts.records += 1
    texts = record.get("candidates")
    if record.get("error") or not isinstance(texts, list):
        return []
    out = []
    for pair in _proposals(record, mode):
        reason = pair.blocked_by
        if reason is None and texts[pair.chosen] == texts[pair.rejected]:
            reason = "identical"
        if reason is None and _same_answer(record, pair.chosen, pair.rejected):
            reason = "same_answer"
        if reason is None and (pair.margin is None or pair.margin < min_margin):
            reason = "below_min_margin"
        if reason is not None:
            counts.left_out[reason] += 1
            continue
        out.append(_line(record, pair, mode, texts, conversational, query_field))
    counts.pairs += len(out)
    return out


def _line(record: dict[str, Any], pair: Candidate, mode: str, texts: list[str], conversational: bool,
          query_field: str) -> dict[str, Any]:
    messages = record.get("messages")
    if conversational or (isinstance(messages, list) and query_field not in record):
        prompt: Any = messages if isinstance(messages, list) else [{"role": "user", "content": query_text(record, query_field)}]
        chosen: Any = [{"role": "assistant", "content": texts[pair.chosen]}]
        rejected: Any = [{"role": "assistant", "content": texts[pair.rejected]}]
    else:
        prompt, chosen, rejected = query_text(record, query_field), texts[pair.chosen], texts[pair.rejected]
    return {
        "prompt": prompt, "chosen": chosen, "rejected": rejected,
        # ids as text: a file mixing integer and string ids would not load as one column
        "id": str(record.get("id")), "margin": pair.margin, "margin_kind": pair.margin_kind, "mode": mode,
        "chosen_index": pair.chosen, "rejected_index": pair.rejected, "matches": pair.matches,
    }


def all_pairs(records: Iterable[dict[str, Any]], mode: str = "matches", min_margin: float = 0.0,
              conversational: bool = False, query_field: str = "query",
              counts: PairCounts | None = None) -> Iterator[dict[str, Any]]:
    for record in records:
        yield from record_pairs(record, mode, min_margin, conversational, query_field, counts)
