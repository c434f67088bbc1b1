"""Figures about a run's judge, computed from its output records; nothing here draws.

A library run keeps its `Summary` here (RunStats), so `import bon; bon.run(...)` never
loads Rich: the views in bon/views/ draw these figures, they do not compute them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bon.io.output import OutputRecord, RecordedMatch, RecordedVote

REASONS = ("truncated", "no_verdict", "bad_verdict")  # why a vote is invalid

# What `bon show --where` (and the browser's toggles) can look for; each counts how often.
WHERE_KINDS = ("invalid", "tiebreak", "disagree", "error", "truncated", "same_answer")


@dataclass
class Summary:
    """A pure accumulator over a run's records: add records, read figures."""

    records: int = 0
    errors: int = 0
    candidate_counts: Counter = field(default_factory=Counter)  # candidates per record -> records
    judge_samples: int = 0
    judge_tokens: int = 0
    valid_votes: int = 0
    first_position_wins: int = 0
    invalid: Counter = field(default_factory=Counter)
    judged_matches: int = 0
    tiebreaks: int = 0
    both_orders_decided: int = 0
    order_disagreements: int = 0
    winners: Counter = field(default_factory=Counter)
    length_votes: int = 0  # valid votes between candidates of different lengths
    longer_wins: int = 0
    two_judge_matches: int = 0  # judged matches of runs with an escalation judge
    escalations: int = 0  # of those, the ones the escalation judge decided
    escalation_samples: int = 0  # the escalation judge's votes

    def add(self, record: OutputRecord | dict[str, Any]) -> None:
        record = OutputRecord.of(record)
        self.records += 1
        if record.error:
            self.errors += 1
        if record.candidates is not None:
            self.candidate_counts[len(record.candidates)] += 1
        if record.best_index is not None:
            self.winners[record.best_index] += 1
        if record.usage is not None:
            self.judge_tokens += record.usage.judge_completion_tokens or 0
        for match in record.matches():
            self.judge_samples += len(match.votes)
            longer = longer_candidate(record.candidates, match.a, match.b)
            for vote in match.votes:
                if not vote.valid:
                    self.invalid[vote.invalid_reason] += 1
                    continue
                self.valid_votes += 1
                self.first_position_wins += vote.verdict == vote.first
                if longer is not None:
                    self.length_votes += 1
                    self.longer_wins += vote.verdict == longer
            if match.judged:
                self.judged_matches += 1
                if match.judge is not None:
                    self.two_judge_matches += 1
                    self.escalations += match.escalated
                    self.escalation_samples += (
                        sum(v.judge == match.judge for v in match.votes) if match.escalated else 0
                    )
                self.tiebreaks += match.decided_by == "tiebreak"
                disagree = orders_disagree(match)
                if disagree is not None:
                    self.both_orders_decided += 1
                    self.order_disagreements += disagree

    def to_json(self) -> dict[str, Any]:
        invalid_total = sum(self.invalid.values())
        return {
            "records": self.records,
            "records_with_errors": self.errors,
            "candidates_per_record": spread(self.candidate_counts),
            "judge_samples": self.judge_samples,
            "judge_completion_tokens": self.judge_tokens,
            "invalid_votes": invalid_total,
            "invalid_rate": rate(invalid_total, self.judge_samples),
            "invalid_by_reason": {r: self.invalid.get(r, 0) for r in REASONS},
            "judged_matches": self.judged_matches,
            "tiebreak_rate": rate(self.tiebreaks, self.judged_matches),
            "first_position_win_rate": rate(self.first_position_wins, self.valid_votes),
            "order_disagreement_rate": rate(self.order_disagreements, self.both_orders_decided),
            "order_disagreements": self.order_disagreements,
            "longer_win_rate": rate(self.longer_wins, self.length_votes),
            "winner_index": {str(k): v for k, v in sorted(self.winners.items())},
        } | (
            {
                "escalations": self.escalations,
                "escalation_rate": rate(self.escalations, self.two_judge_matches),
                "escalation_samples": self.escalation_samples,
            }
            if self.two_judge_matches
            else {}
        )

    def line(self) -> str:
        """The short form for the end of a run."""
        figures = self.to_json()
        invalid = ", ".join(f"{n} {r}" for r, n in figures["invalid_by_reason"].items() if n)
        parts = [f"{self.records} records"]
        if self.errors:
            parts.append(f"{self.errors} with errors")
        if self.judge_samples:
            parts.append(
                f"{self.judge_samples} judge samples ({figures['invalid_votes']} invalid"
                + (f": {invalid})" if invalid else ")")
            )
        if figures["first_position_win_rate"] is not None:
            parts.append(f"first position wins {figures['first_position_win_rate']:.0%}")
        if figures["tiebreak_rate"]:
            parts.append(f"tiebreaks {figures['tiebreak_rate']:.0%}")
        if self.two_judge_matches:
            parts.append(f"{self.escalations} matches escalated ({self.escalation_samples} escalation judge samples)")
        return ", ".join(parts)


def longer_candidate(texts: Sequence[str] | None, a: int, b: int | None) -> int | None:
    """The longer (in characters) of texts a and b, or None for a bye, equal lengths or missing texts."""
    if b is None or texts is None or max(a, b) >= len(texts) or len(texts[a]) == len(texts[b]):
        return None
    return a if len(texts[a]) > len(texts[b]) else b


def orders_disagree(match: RecordedMatch) -> bool | None:
    """Whether the votes with a shown first and those with b shown first preferred different
    candidates; None unless both orders have a majority."""
    if match.b is None:
        return None
    a_first, b_first = _order_majority(match.votes, match.a), _order_majority(match.votes, match.b)
    return None if a_first is None or b_first is None else a_first != b_first


def _order_majority(votes: Iterable[RecordedVote], first: int) -> int | None:
    """The candidate the votes with `first` shown first prefer, or None without a majority."""
    tally = Counter(v.verdict for v in votes if v.first == first and v.valid)
    if not tally:
        return None
    (top, n), *rest = tally.most_common()
    return None if rest and rest[0][1] == n else top


def record_flags(record: OutputRecord | dict[str, Any]) -> Counter:
    """How often each WHERE_KINDS thing happens in one record (kinds absent: zero)."""
    record = OutputRecord.of(record)
    flags: Counter = Counter()
    if record.error:
        flags["error"] += 1
    for match in record.matches():
        flags["tiebreak"] += match.decided_by == "tiebreak"
        flags["same_answer"] += match.decided_by == "same_answer"
        flags["disagree"] += bool(orders_disagree(match))
        for vote in match.votes:
            flags["invalid"] += not vote.valid
            flags["truncated"] += vote.cut_off
    return +flags  # drop the zeros


def rate(part: int, whole: int) -> float | None:
    """part / whole to 4 places; None when there is no whole to take a share of."""
    return round(part / whole, 4) if whole else None


def spread(counts: Counter) -> dict[str, float] | None:
    """Mean, min and max of values given as value -> how often (memory flat in the run's length)."""
    if not counts:
        return None
    total = sum(counts.values())
    return {"mean": round(sum(v * n for v, n in counts.items()) / total, 2), "min": min(counts), "max": max(counts)}


def percent(value: float | None) -> str:
    """A rate as a person reads it: 66.7%, or – when there was nothing to rate."""
    return "–" if value is None else f"{value:.1%}"
