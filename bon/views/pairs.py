"""Preference pairs from bon's output: the judged matches as (prompt, chosen, rejected).

Best-of-N tournaments are how preference data for DPO-style training is made. Each line
is in TRL's standard preference format (`prompt`, `chosen`, `rejected` as text) or its
conversational one (the prompt as messages, each answer as one assistant message), plus
where the pair came from, so a line can be traced back to its votes.

Modes:
- `matches`: one pair per judged match, the match winner chosen.
- `best-vs-rest`: the final winner against every other candidate its strategy can show it
  beats (Strategy.winner_evidence).
- `best-vs-worst`: the final winner against the candidate its strategy shows weakest
  (Strategy.weakest): the first eliminated (knockout; among several losers of the earliest
  round, the one beaten by the widest margin) or the lowest rated (elo).

`margin` is how sure the judge was: in a match, the winner's share of its valid votes
(0.5–1); for a knockout winner and a candidate it never met, the smallest share along the
chain of wins that connects them; for elo's best-vs-* pairs, the rating gap in Elo points.
A match decided by tiebreak, identical texts or the same final answer says nothing about
which answer is better, so it gives no pair (nor does any chain through it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bon.errors import UsageError
from bon.io.output import OutputRecord
from bon.plugins import get_strategy
from bon.tournament.strategy import VOTE_SHARE, Evidence, Strategy

MODES = ("matches", "best-vs-rest", "best-vs-worst")


@dataclass
class PairCounts:
    """What a `bon pairs` run made and why it left pairs out (for its closing line)."""

    records: int = 0
    pairs: int = 0
    left_out: Counter = field(default_factory=Counter)  # reason -> pairs not made

    def line(self) -> str:
        why = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(self.left_out.items()))
        made = (
            f"{self.pairs} pair{'' if self.pairs == 1 else 's'} from {self.records} "
            f"record{'' if self.records == 1 else 's'}"
        )
        return made + (f" (left out: {why})" if why else "")


def _match_pairs(record: OutputRecord) -> Iterator[Evidence]:
    """Each judged match as (its winner, its loser), in bracket order."""
    for match in record.matches():
        loser = match.loser
        if loser is None:
            continue  # a bye
        decided = match.decided_by
        yield Evidence(
            match.winner,
            loser,
            match.winner_share,
            VOTE_SHARE,
            [[match.round, match.position]],
            None if decided == "majority" else decided,
        )


def _strategy_of(record: OutputRecord) -> Strategy:
    """The strategy that wrote the record; one not installed here (a plug-in's output read
    without it) is read as a bracket: its matches eliminate, the default evidence."""
    name = record.tournament.strategy if record.tournament else None
    try:
        return get_strategy(name or "knockout")
    except UsageError:
        return get_strategy("knockout")


def _proposals(record: OutputRecord, mode: str) -> Iterator[Evidence]:
    if mode == "matches":
        yield from _match_pairs(record)
        return
    if record.best_index is None:
        return
    strategy = _strategy_of(record)
    evidence = list(strategy.winner_evidence(record))
    if mode == "best-vs-rest":
        yield from evidence
        return
    weakest = strategy.weakest(evidence)
    if weakest is not None:
        yield weakest


def record_pairs(
    record: OutputRecord | dict[str, Any],
    mode: str = "matches",
    min_margin: float = 0.0,
    conversational: bool = False,
    query_field: str = "query",
    counts: PairCounts | None = None,
) -> list[dict[str, Any]]:
    """The preference pairs one output record gives in `mode` (see the module's docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    record = OutputRecord.of(record)
    counts = counts if counts is not None else PairCounts()
    counts.records += 1
    texts = record.candidates
    if record.error or texts is None:
        return []
    out = []
    for pair in _proposals(record, mode):
        reason = pair.blocked_by
        if reason is None and texts[pair.chosen] == texts[pair.rejected]:
            reason = "identical"
        if reason is None and record.tournament and record.tournament.team_mates(pair.chosen, pair.rejected):
            reason = "same_answer"
        if reason is None and (pair.margin is None or pair.margin < min_margin):
            reason = "below_min_margin"
        if reason is not None:
            counts.left_out[reason] += 1
            continue
        out.append(_line(record, pair, mode, texts, conversational, query_field))
    counts.pairs += len(out)
    return out


def _line(
    record: OutputRecord, pair: Evidence, mode: str, texts: tuple[str, ...], conversational: bool, query_field: str
) -> dict[str, Any]:
    messages = record.get("messages")
    if conversational or (isinstance(messages, list) and query_field not in record):
        prompt: Any = (
            messages if isinstance(messages, list) else [{"role": "user", "content": record.query(query_field)}]
        )
        chosen: Any = [{"role": "assistant", "content": texts[pair.chosen]}]
        rejected: Any = [{"role": "assistant", "content": texts[pair.rejected]}]
    else:
        prompt, chosen, rejected = record.query(query_field), texts[pair.chosen], texts[pair.rejected]
    return {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        # ids as text: a file mixing integer and string ids would not load as one column
        "id": str(record.id),
        "margin": pair.margin,
        "margin_kind": pair.margin_kind,
        "mode": mode,
        "chosen_index": pair.chosen,
        "rejected_index": pair.rejected,
        "matches": pair.matches,
    }


def all_pairs(
    records: Iterable[OutputRecord | dict[str, Any]],
    mode: str = "matches",
    min_margin: float = 0.0,
    conversational: bool = False,
    query_field: str = "query",
    counts: PairCounts | None = None,
) -> Iterator[dict[str, Any]]:
    for record in records:
        yield from record_pairs(record, mode, min_margin, conversational, query_field, counts)
