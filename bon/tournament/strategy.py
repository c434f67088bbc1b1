"""The selection-strategy interface and its registry.

A strategy decides which candidate of a record is best, given an `ask` that returns judge
votes for one ordered pair. It is one module under bon/tournament/ (or a plug-in's module,
found through the `bon.strategies` entry point group, see bon/plugins.py) with one class:

    class Ladder(Strategy):
        name = "ladder"
        summary = "the champion meets each next candidate"

        async def play(self, candidates, ask, config, record_id, on_match=None, teams=None) -> Tournament:
            ...

Everything that consumes a result asks the strategy (or the typed record it wrote), never
its name: the registry lives in bon/plugins.py; the record writer takes `record_fields`,
`bon pairs` takes `winner_evidence`, `bon plan` plays `play` against a judge that always
agrees with itself. The defaults
below suit any strategy whose every judged match eliminates its loser (a bracket, a
ladder); a strategy that ranks by ratings overrides them (see elo.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bon.config import TournamentConfig
from bon.tournament.voting import MAJORITY, Ask, Match

SAME_ANSWER_DECISION = "same_answer"  # a meeting of team-mates: nobody is eliminated


@dataclass
class Tournament:
    """What a strategy played for one record: the winner, the matches by round, and, for
    strategies that rate candidates, their scores (best first in `ranking`)."""

    winner: int
    seed: int
    rounds: list[list[Match]] = field(default_factory=list)
    strategy: str = "knockout"
    answer_groups: list[dict[str, Any]] | None = None  # with --group-by-answer: the teams
    scores: list[float] | None = None  # rating strategies: one score per candidate
    tiebreak: list[int] | None = None  # equal scores rank by this (each candidate's place), else by index
    details: dict[str, Any] | None = None  # a strategy's own trace fields (swiss: budget, spent, decided)

    @property
    def ranking(self) -> list[int] | None:
        """Candidate indices, best first (equal scores: the lower `tiebreak`, else the lower index)."""
        if self.scores is None:
            return None
        scores, tiebreak = self.scores, self.tiebreak
        return sorted(range(len(scores)), key=lambda k: (-scores[k], tiebreak[k] if tiebreak else k))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "seed": self.seed,
            "rounds": [[m.to_json() for m in matches] for matches in self.rounds],
        }
        if self.answer_groups is not None:
            out["answer_groups"] = self.answer_groups
        return out | (self.details or {})


@dataclass(frozen=True)
class Evidence:
    """Why `chosen` beats `rejected`: the matches (as [round, position]) that connect them,
    how sure the judge was (`margin`, in `margin_kind` units), and what keeps the evidence
    from ranking the two (a tiebreak, identical texts), if anything."""

    chosen: int
    rejected: int
    margin: float | None
    margin_kind: str
    matches: list[list[int]]
    blocked_by: str | None = None
    depth: int = 0  # the round in which `rejected` went out (earlier: a weaker candidate)


VOTE_SHARE, RATING_GAP = "vote_share", "rating_gap"


class Strategy(ABC):
    """How a record's candidates meet and which one wins."""

    name: ClassVar[str]  # the --strategy value, and `tournament.strategy` in records
    summary: ClassVar[str]  # a phrase for --strategy's help: "n-1 matches"
    # Every match spends what it asks for whatever the judge says (no extra votes on ties or
    # invalid verdicts): `bon plan` counts usual and max by playing, not as votes a match.
    fixed_spend: ClassVar[bool] = False

    @abstractmethod
    async def play(
        self,
        candidates: list[str],
        ask: Ask,
        config: TournamentConfig,
        record_id: str | int,
        on_match: Callable[[Match], None] | None = None,
        teams: list[int] | None = None,
    ) -> Tournament:
        """Play one record. `teams` (answer-aware runs): each candidate's answer group;
        team-mates must never be judged against each other. `on_match` hears every match
        that is decided (progress)."""

    def check(self, config: TournamentConfig) -> None:
        """Refuse settings this strategy cannot honour (raise UsageError)."""

    def record_fields(self, result: Tournament) -> dict[str, Any]:
        """Fields the output record carries besides `best`, `best_index` and `tournament`."""
        return {}

    def winner_evidence(self, record: Any) -> Iterator[Evidence]:
        """For `bon pairs`: the record's winner against every other candidate it can be
        shown to beat. `record` is a `bon.io.output.OutputRecord`.

        By default: the chain of wins from each eliminated candidate up to the winner; its
        margin is the smallest vote share along the chain, and a chain through a match not
        decided by majority is blocked by that match's decision."""
        beaten_by: dict[int, tuple[int, Any, list[int]]] = {}  # loser -> (winner, match, [round, position])
        for match in record.matches():
            if match.b is None or match.decided_by == SAME_ANSWER_DECISION:
                continue  # nobody is eliminated by a bye or a same-answer meeting
            beaten_by[match.loser] = (match.winner, match, [match.round, match.position])
        best = record.best_index
        for loser in beaten_by:
            chain: list[tuple[Any, list[int]]] = []
            x, blocked = loser, None
            while x != best and x in beaten_by and len(chain) <= len(beaten_by):
                x, match, where = beaten_by[x]
                chain.append((match, where))
                if match.decided_by != MAJORITY:
                    blocked = blocked or match.decided_by
            if x != best:
                continue  # not connected to the winner by wins (an answer-aware bracket ended early)
            shares = [match.winner_share for match, _ in chain]
            margin = None if None in shares else min(s for s in shares if s is not None)
            yield Evidence(
                best, loser, margin, VOTE_SHARE, [where for _, where in chain], blocked, depth=chain[0][1][0]
            )

    def weakest(self, evidence: Sequence[Evidence]) -> Evidence | None:
        """For `bon pairs --mode best-vs-worst`: the candidate shown weakest. By default the
        earliest one out, beaten by the widest margin, among the unblocked."""
        usable = [e for e in evidence if e.blocked_by is None]
        return min(usable, key=lambda e: (e.depth, -(e.margin or 0))) if usable else None
