"""bon's output records, read back: the one module that knows their shape.

The writer is typed (`Vote.to_json`, `Match.to_json`, `Tournament.to_json`, the Referee
and the Sampler); this is its mirror for every reader — `bon show`, `browse`, `score`,
`merge`, `pairs`, `plan` and any script — so none of them walks
`record["tournament"]["rounds"][r][m]["votes"]` itself.

Reading is lenient: a field a record lacks reads as None (or empty), keys this module does
not know are kept (`OutputRecord.data` is the record exactly as written, the input's own
fields included; `TournamentTrace.extra` holds unknown tournament keys), and records
written before the schema had a version read the same as today's. The version is
recorded in the run's manifest, never in the records, so outputs stay byte-for-byte the
same for the same seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bon.io.records import InputError, decode_lines

# The shape of the records described here. Version 1 is the first to be numbered; files
# without a number (bon 0.1.0's) have the same shape. Raise it when a field changes meaning.
SCHEMA_VERSION = 1

JUDGED = ("majority", "tiebreak")  # a match the judge's votes decided (not a bye, identical texts, same answer)


def _tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, list) else ()


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class RecordedVote:
    """One judge sample as written by `Vote.to_json`."""

    first: int  # the candidate shown as Assistant 1
    verdict: int | None  # the candidate chosen; None for an invalid vote
    reasoning: str = ""  # the judge's completion as written
    finish_reason: str | None = None
    completion_tokens: int | None = None  # None: the server counted per request, not per vote
    reason: str | None = None  # why an invalid vote is invalid: truncated, no_verdict, bad_verdict
    truncated_input: bool = False  # the judge saw shortened answers
    judge: str | None = None  # which judge voted, in runs with an escalation judge

    @classmethod
    def from_json(cls, vote: Mapping[str, Any]) -> RecordedVote:
        return cls(
            vote["first"],
            vote.get("verdict"),
            vote.get("reasoning") or "",
            vote.get("finish_reason"),
            vote.get("completion_tokens"),
            vote.get("reason"),
            bool(vote.get("truncated_input")),
            vote.get("judge"),
        )

    @property
    def valid(self) -> bool:
        return self.verdict is not None

    @property
    def invalid_reason(self) -> str | None:
        """Why the vote is invalid (`no_verdict` when a record did not say); None for a valid vote."""
        return None if self.valid else self.reason or "no_verdict"

    @property
    def cut_off(self) -> bool:
        """Cut by the token limit, whether or not a verdict was already written."""
        return self.reason == "truncated" or self.finish_reason == "length"


@dataclass(frozen=True, slots=True)
class Tally:
    """A match's votes counted: for a, for b, invalid."""

    a: int = 0
    b: int = 0
    invalid: int = 0


@dataclass(frozen=True, slots=True)
class RecordedMatch:
    """One match as written by `Match.to_json`, with its place in the bracket."""

    round: int  # 0-based index into the tournament's rounds
    position: int  # 0-based index within its round
    a: int
    b: int | None  # None for a bye
    winner: int
    decided_by: str | None  # majority, tiebreak, bye, identical, same_answer
    tally: Tally = Tally()
    votes: tuple[RecordedVote, ...] = ()
    votes_saved: int = 0  # votes early stopping did not need to draw
    judge: str | None = None  # runs with an escalation judge: the judge that decided the match
    escalated: bool = False  # the first judge's votes left it in doubt; the escalation judge decided

    @classmethod
    def from_json(cls, match: Mapping[str, Any], round: int, position: int) -> RecordedMatch:
        tally = match.get("tally") or {}
        return cls(
            round,
            position,
            match["a"],
            match.get("b"),
            match["winner"],
            match.get("decided_by"),
            Tally(tally.get("a", 0), tally.get("b", 0), tally.get("invalid", 0)),
            tuple(RecordedVote.from_json(v) for v in _tuple(match.get("votes"))),
            match.get("votes_saved") or 0,
            match.get("judge"),
            bool(match.get("escalated")),
        )

    @property
    def bye(self) -> bool:
        return self.b is None

    @property
    def judged(self) -> bool:
        """Decided by the judge's votes (a majority or a tiebreak after them)."""
        return self.decided_by in JUDGED

    @property
    def loser(self) -> int | None:
        """The candidate that did not win; None for a bye."""
        if self.b is None:
            return None
        return self.b if self.winner == self.a else self.a

    def second(self, vote: RecordedVote) -> int | None:
        """The candidate `vote` was shown second (the writer leaves it out: it is the other one)."""
        return self.b if vote.first == self.a else self.a

    @property
    def winner_share(self) -> float | None:
        """The winner's share of the valid votes (0.5–1, rounded to 4 places); None without any."""
        valid = self.tally.a + self.tally.b
        return round(max(self.tally.a, self.tally.b) / valid, 4) if valid else None


@dataclass(frozen=True, slots=True)
class AnswerTeam:
    """Answer-aware runs: candidates whose final answers agree (`answer` is None for none)."""

    answer: str | None
    members: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TournamentTrace:
    """A record's `tournament`: the bracket (or round-robin) with every match and vote."""

    strategy: str | None
    seed: int | None
    judge: str | None  # the judge engine's name
    rounds: tuple[tuple[RecordedMatch, ...], ...] = ()
    answer_groups: tuple[AnswerTeam, ...] | None = None  # None unless the run grouped answers
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys this reader does not know, kept

    KNOWN = ("strategy", "seed", "judge", "rounds", "answer_groups")

    @classmethod
    def from_json(cls, tournament: Mapping[str, Any]) -> TournamentTrace:
        rounds = tuple(
            tuple(RecordedMatch.from_json(m, r, p) for p, m in enumerate(_tuple(matches)))
            for r, matches in enumerate(_tuple(tournament.get("rounds")))
        )
        groups = tournament.get("answer_groups")
        teams = (
            None
            if groups is None
            else tuple(AnswerTeam(g.get("answer"), tuple(g.get("members") or ())) for g in _tuple(groups))
        )
        return cls(
            tournament.get("strategy"),
            tournament.get("seed"),
            tournament.get("judge"),
            rounds,
            teams,
            {k: v for k, v in tournament.items() if k not in cls.KNOWN},
        )

    def matches(self) -> Iterator[RecordedMatch]:
        """Every match in bracket order: round by round, each round in its written order."""
        for matches in self.rounds:
            yield from matches

    def team_mates(self, i: int, j: int) -> bool:
        """Whether candidates i and j share a final answer (False when answers were not grouped)."""
        return any(i in team.members and j in team.members for team in self.answer_groups or ())


@dataclass(frozen=True, slots=True)
class JudgeUsage:
    """A record's `usage`: the judge work spent on it. A count the record lacks is None."""

    judge_requests: int | None = None
    judge_samples: int | None = None
    judge_prompt_tokens: int | None = None
    judge_completion_tokens: int | None = None
    invalid_votes: int | None = None
    votes_saved: int | None = None

    @classmethod
    def from_json(cls, usage: Mapping[str, Any]) -> JudgeUsage:
        return cls(*(_int_or_none(usage.get(name)) for name in cls.__dataclass_fields__))


@dataclass(frozen=True, slots=True)
class SamplingTrace:
    """A record's `sampling`: what the policy was asked and gave."""

    policy: str | None
    finish_reasons: tuple[str, ...] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @classmethod
    def from_json(cls, sampling: Mapping[str, Any]) -> SamplingTrace:
        return cls(
            sampling.get("policy"),
            _tuple(sampling.get("finish_reasons")),
            _int_or_none(sampling.get("prompt_tokens")),
            _int_or_none(sampling.get("completion_tokens")),
        )


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One line of bon's output. `data` is the record exactly as written (read it for the
    input's own fields, e.g. a reference answer: `record.get("answer")`); the rest are
    bon's fields, typed, None where the record has none (not sampled, not judged, failed)."""

    data: dict[str, Any]
    id: Any
    candidates: tuple[str, ...] | None
    best: str | None
    best_index: int | None
    error: str | None
    ranking: tuple[int, ...] | None  # elo: candidates from best to worst
    scores: tuple[float, ...] | None  # elo: each candidate's rating
    sampling: SamplingTrace | None
    tournament: TournamentTrace | None
    usage: JudgeUsage | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutputRecord:
        """A decoded record; a field it lacks (or holds in a shape bon never writes) reads as None."""
        tournament, usage, sampling = data.get("tournament"), data.get("usage"), data.get("sampling")
        candidates, ranking, scores = data.get("candidates"), data.get("ranking"), data.get("scores")
        return cls(
            data,
            data.get("id"),
            tuple(candidates) if isinstance(candidates, list) else None,
            data.get("best"),
            _int_or_none(data.get("best_index")),
            str(data["error"]) if data.get("error") else None,
            tuple(ranking) if isinstance(ranking, list) else None,
            tuple(scores) if isinstance(scores, list) else None,
            SamplingTrace.from_json(sampling) if isinstance(sampling, dict) else None,
            TournamentTrace.from_json(tournament) if isinstance(tournament, dict) else None,
            JudgeUsage.from_json(usage) if isinstance(usage, dict) else None,
        )

    @classmethod
    def of(cls, record: OutputRecord | dict[str, Any]) -> OutputRecord:
        """`record` as an OutputRecord: for functions that also take a plain decoded dict."""
        return record if isinstance(record, OutputRecord) else cls.from_json(record)

    # ---- the record as written, for fields bon does not type

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.data

    # ---- views across the bracket

    def query(self, field: str = "query") -> str:
        """The record's query: its `field`, or the last turn of its `messages`."""
        return query_text(self.data, field)

    def matches(self) -> Iterator[RecordedMatch]:
        """Every match in bracket order (none for a record that was not judged)."""
        return self.tournament.matches() if self.tournament else iter(())

    def votes(self) -> Iterator[tuple[RecordedMatch, RecordedVote]]:
        """Every vote with its match, in bracket order: the n-th is the record's vote n (from 1)."""
        for match in self.matches():
            for vote in match.votes:
                yield match, vote


def query_text(record: Mapping[str, Any], field: str = "query") -> str:
    """A record's query (an OutputRecord or a plain dict): its `field` if that is text, else
    the last turn of its `messages`, else ''."""
    query = record.get(field)
    if isinstance(query, str):
        return query
    messages = record.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return str(messages[-1].get("content", ""))
    return ""


def parse_output(value: Any, line: int) -> OutputRecord:
    """One decoded line of an output file; InputError (naming the line) unless it is an object."""
    if not isinstance(value, dict):
        raise InputError(line, f"expected a JSON object, got {type(value).__name__}")
    return OutputRecord.from_json(value)


def read_output(lines: Iterable[str | bytes | dict]) -> Iterator[OutputRecord]:
    """The records of a bon output file: an open file, its lines, or dicts already decoded.

    Blank lines are skipped; so is a torn last line (a crash mid-write leaves one). Any
    other line that is not a JSON object raises InputError naming its line, once the
    records before it have been read."""
    torn: InputError | None = None  # a line that did not decode: torn if nothing follows it
    for number, _, value in decode_lines(lines):
        if torn is not None:
            raise torn
        if isinstance(value, InputError):
            torn = value
            continue
        yield parse_output(value, number)
