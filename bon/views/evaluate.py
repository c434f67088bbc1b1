"""Measuring a judge before trusting it: `bon eval` (pairwise accuracy) and `bon score`
(best-of-N accuracy of bon's own output against references).

The figures are pure functions of recorded votes and texts; the judging itself reuses the
Judge's `ask`, so an eval speaks to the model exactly as a tournament does.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bon.io.output import OutputRecord
from bon.io.records import InputError, decode_lines
from bon.io.stats import longer_candidate, percent, rate
from bon.tasks import gather
from bon.tournament.answers import Checker, majority_answer
from bon.tournament.seeds import derive_seed
from bon.tournament.voting import Vote, split_votes

Z95 = 1.96


# ---------------------------------------------------------------- pairwise accuracy


@dataclass(frozen=True)
class PairFields:
    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    subset: str = "subset"


@dataclass
class Pair:
    line: int
    id: str | int
    prompt: str
    chosen: str
    rejected: str
    subset: str | None


def read_pairs(lines: Iterable[bytes | str], fields: PairFields = PairFields()) -> Iterator[Pair]:
    """RewardBench-style records, validated line by line (InputError names the line)."""
    for position, (number, _, obj) in enumerate(decode_lines(lines)):
        if isinstance(obj, InputError):
            raise obj
        if not isinstance(obj, dict):
            raise InputError(number, "expected a JSON object")
        for name in (fields.prompt, fields.chosen, fields.rejected):
            if not isinstance(obj.get(name), str) or not obj[name].strip():
                raise InputError(number, f"`{name}` must be a non-empty string")
        subset = obj.get(fields.subset)
        yield Pair(
            number,
            obj.get("id", position),
            obj[fields.prompt],
            obj[fields.chosen],
            obj[fields.rejected],
            None if subset is None else str(subset),
        )


def interleaved(votes: list[Vote]) -> list[Vote]:
    """Votes alternating between the two orders, so any prefix is as balanced as it can be."""
    by_order = [[v for v in votes if v.first == 0], [v for v in votes if v.first == 1]]
    out = []
    for i in range(max(len(by_order[0]), len(by_order[1]))):
        out += [order[i] for order in by_order if i < len(order)]
    return out


def pair_score(votes: list[Vote]) -> float:
    """1 if more valid votes chose `chosen` (candidate 0), 0 if fewer, 0.5 on a tie.

    The half point for a tie (including no valid vote at all) is RewardBench's convention.
    """
    chosen = sum(v.verdict == 0 for v in votes)
    rejected = sum(v.verdict == 1 for v in votes)
    return 1.0 if chosen > rejected else 0.0 if chosen < rejected else 0.5


def _mean_ci(scores: list[float]) -> dict[str, Any]:
    n = len(scores)
    if not n:
        return {"accuracy": None, "ci95": None, "n": 0}
    mean = sum(scores) / n
    variance = sum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else 0.0
    half = Z95 * math.sqrt(variance / n)
    return {
        "accuracy": round(mean, 4),
        "ci95": [round(max(0.0, mean - half), 4), round(min(1.0, mean + half), 4)],
        "n": n,
    }


@dataclass
class EvalReport:
    votes: int
    scores: list[float] = field(default_factory=list)
    subsets: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    by_votes: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    samples: int = 0
    invalid: int = 0
    valid: int = 0
    first_wins: int = 0
    length_votes: int = 0  # valid votes on pairs whose texts differ in length
    longer_wins: int = 0

    def add(self, pair: Pair, votes: list[Vote]) -> float:
        score = pair_score(votes)
        self.scores.append(score)
        if pair.subset is not None:
            self.subsets[pair.subset].append(score)
        ordered = interleaved(votes)
        for k in self.vote_counts():
            self.by_votes[k].append(pair_score(ordered[:k]))
        self.samples += len(votes)
        longer = longer_candidate([pair.chosen, pair.rejected], 0, 1)
        for v in votes:
            if v.verdict is None:
                self.invalid += 1
            else:
                self.valid += 1
                self.first_wins += v.verdict == v.first
                if longer is not None:
                    self.length_votes += 1
                    self.longer_wins += v.verdict == longer
        return score

    def vote_counts(self) -> list[int]:
        counts = list(range(1, self.votes + 1, 2))
        return counts if counts[-1] == self.votes else counts + [self.votes]

    def to_json(self) -> dict[str, Any]:
        overall = _mean_ci(self.scores)
        return {
            "accuracy": overall["accuracy"],
            "ci95": overall["ci95"],
            "pairs": overall["n"],
            "votes": self.votes,
            "ties_count_half": True,
            "subsets": {name: _mean_ci(s) for name, s in sorted(self.subsets.items())},
            "accuracy_by_votes": {str(k): _mean_ci(self.by_votes[k])["accuracy"] for k in self.vote_counts()},
            "judge_samples": self.samples,
            "invalid_rate": rate(self.invalid, self.samples),
            "first_position_win_rate": rate(self.first_wins, self.valid),
            # share of valid votes that chose the longer answer: 0.5 = no length bias
            "longer_win_rate": rate(self.longer_wins, self.length_votes),
        }


# ---------------------------------------------------------------- best-of-N accuracy


@dataclass
class ScoreReport:
    records: int = 0
    skipped: int = 0
    hits: dict[str, int] = field(default_factory=lambda: {"bon": 0, "oracle": 0, "first": 0, "majority": 0})

    def add(self, record: OutputRecord | dict[str, Any], reference_field: str, checker: Checker) -> None:
        record = OutputRecord.of(record)
        candidates = record.candidates
        reference = record.get(reference_field)  # the input's own field, not one of bon's
        if not candidates or reference is None or record.best is None:
            self.skipped += 1
            return
        reference = str(reference)
        self.records += 1
        correct = [checker.correct(c, reference) for c in candidates]
        self.hits["bon"] += checker.correct(record.best, reference)
        self.hits["oracle"] += any(correct)
        self.hits["first"] += correct[0]
        majority = majority_answer(list(candidates), checker)
        self.hits["majority"] += majority is not None and correct[majority]

    def to_json(self) -> dict[str, Any]:
        share = {k: rate(v, self.records) for k, v in self.hits.items()}
        return {
            "records": self.records,
            "skipped": self.skipped,
            "accuracy": share["bon"],
            "oracle": share["oracle"],
            "first_candidate": share["first"],
            "majority_vote": share["majority"],
        }


async def judge_pair(ask, pair: Pair, votes: int, seed: int) -> list[Vote]:
    """`votes` judgments of chosen (0) vs rejected (1), split evenly between the orders."""
    chosen_first, rejected_first = split_votes(votes, True)
    asks = []
    if chosen_first:
        asks.append(ask(0, 1, chosen_first, derive_seed(seed, pair.id, "eval", "chosen-first")))
    if rejected_first:
        asks.append(ask(1, 0, rejected_first, derive_seed(seed, pair.id, "eval", "rejected-first")))
    return [v for batch in await gather(*asks) for v in batch]


async def evaluate(
    judge, source: str, fields: PairFields, *, votes: int, seed: int = 0, concurrency: int = 64, output=None
) -> EvalReport:
    """Judge every labelled pair in `source` (a JSONL path or `-`) with `judge` (a bon.Judge):
    `votes` judgments each, split across both orders. With `output`, each pair's votes and
    score are written there as they finish. A file is checked whole before the model loads."""
    import contextlib
    import json

    from bon.config import TournamentConfig
    from bon.io.records import input_lines
    from bon.runs.judge import Usage
    from bon.runs.pipeline import ordered_map

    if source != "-":
        sum(1 for _ in read_pairs(input_lines(source), fields))  # a bad line costs no model work
    report = EvalReport(votes)
    referee = judge.referee(await judge.engine(), TournamentConfig(votes=votes, seed=seed))

    async def one(pair):
        ask = referee.asker(pair.prompt, [pair.chosen, pair.rejected], Usage())
        return pair, await judge_pair(ask, pair, votes, seed)

    async def pairs():
        for pair in read_pairs(input_lines(source), fields):
            yield pair

    out = open(output, "w", encoding="utf-8") if output else None  # noqa: ASYNC230 (once, before any judging)
    try:
        async with contextlib.aclosing(ordered_map(pairs(), one, concurrency)) as judged:  # no pair outlives it
            async for pair, pair_votes in judged:
                score = report.add(pair, pair_votes)
                if out:
                    out.write(
                        json.dumps(
                            {
                                "id": pair.id,
                                "subset": pair.subset,
                                "score": score,
                                "votes": [v.to_json() for v in pair_votes],
                            },
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
                    out.flush()
    finally:
        if out:
            out.close()
    return report


def render_report(figures: dict[str, Any], judge_model: str, votes: int) -> None:
    """`bon eval`'s report as a table on stdout."""
    from rich.table import Table

    from bon.views.show import make_console

    table = Table(title=f"pairwise accuracy of {judge_model} ({votes} votes per pair; split votes count half)")
    for column in ("", "accuracy", "95% CI", "pairs"):
        table.add_column(column, justify="left" if not column else "right")

    def row(name, stats):
        ci = stats.get("ci95")
        table.add_row(
            name,
            percent(stats["accuracy"]),
            "–" if not ci else f"{ci[0]:.1%}–{ci[1]:.1%}",
            str(stats.get("n", stats.get("pairs"))),
        )

    row("all", {"accuracy": figures["accuracy"], "ci95": figures["ci95"], "n": figures["pairs"]})
    for name, stats in figures["subsets"].items():
        row(f"  {name}", stats)
    console = make_console()
    console.print(table)
    console.print(
        "accuracy by votes  " + "  ".join(f"{k}: {percent(a)}" for k, a in figures["accuracy_by_votes"].items())
    )
    line = (
        f"invalid votes {percent(figures['invalid_rate'])}  ·  first-position win rate "
        f"{percent(figures['first_position_win_rate'])}  ·  longer-answer win rate "
        f"{percent(figures['longer_win_rate'])}"
    )
    console.print(f"{line}  ·  {figures['judge_samples']} judge samples")
