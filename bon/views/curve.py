"""`bon curve`: what accuracy each judge sample buys, every strategy replayed from one pool.

A pool run (`bon select INPUT --strategy pool --votes K`, bon/tournament/pool.py) holds K
votes of every pair in each order. Here each labelled record's pool answers, through
`PoolAsk`, every request a strategy makes, so bon's own strategy code plays knockout at 1,
3 and 5 votes (with and without early stopping, plain and answer-aware), elo, and swiss at
several budgets, each exactly as it would have played live against a judge that gave
those votes, at no new judge call. Each setting is one point: judge samples per query,
judge completion tokens per query (the recorded votes' own counts), and best-of-N accuracy
against the record's reference, with a 95% interval (normal approximation). Beside them:
the pool's own pick (every vote), the majority vote of final answers and the oracle
(pass@N: any candidate right), which cost no judge sample.

A setting that asks a pair for more votes than the pool holds gets invalid votes for the
rest (`pool_exhausted`), spent as any invalid vote is; each point counts the records where
that happened (`short`), so a pool too shallow for a setting shows in the figures.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bon.config import TournamentConfig
from bon.errors import UsageError
from bon.io.output import OutputRecord
from bon.io.stats import percent
from bon.plugins import get_strategy
from bon.runs.judge import play
from bon.tournament import Vote
from bon.tournament.answers import Checker, majority_answer
from bon.tournament.pool import POOL, VOTES_PER_ORDER, PoolAsk
from bon.tournament.strategy import Tournament

Z95 = 1.96
PLOT_INSTALL = 'pip install "bon[plot]"'


class NotAPool(UsageError):
    """The run holds no pool record: nothing can be replayed from it."""


def is_pool(record: OutputRecord) -> bool:
    return record.tournament is not None and record.tournament.strategy == POOL


def pool_votes(record: OutputRecord) -> dict[tuple[int, int], list[Vote]]:
    """A pool record's votes by the order they were shown in: (first, second) -> votes, in
    the order the judge gave them."""
    votes: dict[tuple[int, int], list[Vote]] = {}
    for match, vote in record.votes():
        second = match.second(vote)
        if second is None:
            continue
        votes.setdefault((vote.first, second), []).append(
            Vote(
                vote.first,
                second,
                vote.verdict,
                vote.reasoning,
                vote.finish_reason or "",
                vote.completion_tokens,
                vote.reason,
                vote.truncated_input,
            )
        )
    return votes


async def replay(
    record: OutputRecord | dict[str, Any],
    strategy: str,
    config: TournamentConfig,
    votes: dict[tuple[int, int], list[Vote]] | None = None,
    checker: Checker | None = None,
) -> tuple[Tournament, PoolAsk]:
    """`strategy` played on a pool record's candidates with its votes (no judge call): the
    tournament, and the `PoolAsk` that answered it (samples spent, tokens, `short`). With
    `config.group_by_answer`, answers form teams as a live run forms them (by `checker`,
    else a new Checker of that kind). `votes`: the record's `pool_votes`, when already read."""
    record = OutputRecord.of(record)
    if not is_pool(record) or not record.candidates:
        raise NotAPool(f"record {record.id!r} is not a pool record (bon select --strategy pool)")
    ask = PoolAsk(pool_votes(record) if votes is None else votes)
    grouping = None
    if config.group_by_answer:
        grouping = checker if checker is not None and checker.kind == config.group_by_answer else None
        grouping = grouping or Checker(config.group_by_answer)
    result = await play(get_strategy(strategy), list(record.candidates), ask, config, record.id, grouping)
    return result, ask


@dataclass(frozen=True)
class Setting:
    """One point: a strategy with its settings (TournamentConfig keywords), on a named curve."""

    curve: str
    label: str
    strategy: str
    settings: dict[str, Any]


def default_budgets(n: int) -> list[int]:
    """Swiss budgets around a knockout's spend: (n−1) × 1, 1.5, 2 and 3 samples."""
    base = max(1, n - 1)
    return sorted({base, math.ceil(1.5 * base), 2 * base, 3 * base})


def settings_for(n: int, budgets: Sequence[int] | None, check: str) -> list[Setting]:
    """The replayed points for records of `n` candidates."""
    out = [Setting("knockout", f"knockout {v} vote{'s' * (v > 1)}", "knockout", {"votes": v}) for v in (1, 3, 5)]
    out += [
        Setting("knockout early-stop", f"knockout {v} votes early-stop", "knockout", {"votes": v, "early_stop": True})
        for v in (3, 5)
    ]
    out += [
        Setting(
            "knockout answer-aware",
            f"knockout {v} vote{'s' * (v > 1)} answer-aware",
            "knockout",
            {"votes": v, "group_by_answer": check},
        )
        for v in (1, 3)
    ]
    out += [Setting("elo", f"elo {v} vote{'s' * (v > 1)}", "elo", {"votes": v}) for v in (1, 3)]
    out += [
        Setting("swiss", f"swiss budget {b}", "swiss", {"votes": 1, "budget": b})
        for b in (budgets or default_budgets(n))
    ]
    return out


@dataclass
class Point:
    setting: Setting
    right: int = 0
    records: int = 0
    samples: int = 0
    tokens: float = 0.0
    tokens_known: bool = True
    short: int = 0  # records whose replay asked for more votes than the pool held

    def add(self, correct: bool, samples: int, tokens: float | None, short: bool) -> None:
        self.records += 1
        self.right += correct
        self.samples += samples
        if tokens is None:
            self.tokens_known = False
        else:
            self.tokens += tokens
        self.short += short

    def to_json(self) -> dict[str, Any]:
        figures = accuracy(self.right, self.records)
        return {
            "label": self.setting.label,
            "strategy": self.setting.strategy,
            "settings": self.setting.settings,
            "judge_samples": round(self.samples / self.records, 2) if self.records else None,
            "judge_tokens": round(self.tokens / self.records, 1) if self.records and self.tokens_known else None,
            **figures,
            "short": self.short,
        }


def accuracy(right: int, records: int) -> dict[str, Any]:
    if not records:
        return {"accuracy": None, "ci95": None}
    p = right / records
    half = Z95 * math.sqrt(p * (1 - p) / records)
    return {"accuracy": round(p, 4), "ci95": [round(max(0.0, p - half), 4), round(min(1.0, p + half), 4)]}


@dataclass
class CurveReport:
    check: str
    budgets: Sequence[int] | None = None
    seed: int = 0
    records: int = 0
    skipped: int = 0
    pool_records: int = 0
    sizes: Counter = field(default_factory=Counter)
    depth: Counter = field(default_factory=Counter)  # votes per order
    points: dict[str, Point] = field(default_factory=dict)
    own: Point | None = None  # the pool's own pick: every vote
    baselines: dict[str, int] = field(default_factory=lambda: {"majority": 0, "oracle": 0, "first": 0})

    async def add(self, record: OutputRecord, reference_field: str, checker: Checker) -> None:
        reference = record.get(reference_field)
        if not is_pool(record):
            self.skipped += 1
            return
        self.pool_records += 1
        candidates = record.candidates
        if not candidates or reference is None or record.best_index is None or record.error:
            self.skipped += 1
            return
        reference = str(reference)
        n = len(candidates)
        self.records += 1
        self.sizes[n] += 1
        assert record.tournament is not None
        self.depth[record.tournament.extra.get(VOTES_PER_ORDER)] += 1
        correct = [checker.correct(c, reference) for c in candidates]
        majority = majority_answer(list(candidates), checker)
        self.baselines["majority"] += majority is not None and correct[majority]
        self.baselines["oracle"] += any(correct)
        self.baselines["first"] += correct[0]
        per_vote = tokens_per_vote(record)
        if self.own is None:
            self.own = Point(Setting("pool", "every pool vote (the pool's own pick)", POOL, {}))
        every = [vote for _, vote in record.votes()]
        self.own.add(
            correct[record.best_index],
            len(every),
            None
            if per_vote is None
            else sum(per_vote if v.completion_tokens is None else v.completion_tokens for v in every),
            False,
        )
        votes = pool_votes(record)
        for setting in settings_for(n, self.budgets, self.check):
            config = TournamentConfig(**setting.settings, seed=self.seed)
            result, ask = await replay(record, setting.strategy, config, votes, checker)
            tokens = (
                None
                if per_vote is None and (ask.untimed or ask.short)
                else ask.tokens + (ask.untimed + ask.short) * (per_vote or 0)
            )
            point = self.points.setdefault(setting.label, Point(setting))
            point.add(correct[result.winner], ask.samples, tokens, ask.short > 0)

    def to_json(self) -> dict[str, Any]:
        curves: dict[str, list[dict[str, Any]]] = {}
        for point in self.points.values():
            curves.setdefault(point.setting.curve, []).append(point.to_json())
        if self.own is not None:
            curves["pool"] = [self.own.to_json()]
        n = self.sizes.most_common(1)[0][0] if self.sizes else None
        return {
            "records": self.records,
            "skipped": self.skipped,
            "check": self.check,
            "seed": self.seed,
            "candidates": n,
            "votes_per_order": self.depth.most_common(1)[0][0] if self.depth else None,
            "curves": [{"name": name, "points": points} for name, points in curves.items()],
            "baselines": [
                {"label": "answer majority", "key": "majority", **accuracy(self.baselines["majority"], self.records)},
                {"label": f"oracle (pass@{n})", "key": "oracle", **accuracy(self.baselines["oracle"], self.records)},
                {"label": "first candidate", "key": "first", **accuracy(self.baselines["first"], self.records)},
            ],
        }


def tokens_per_vote(record: OutputRecord) -> float | None:
    """Completion tokens of a pool vote that carries no count of its own: the mean of those
    that do, else the record's usage per sample; None when neither is known."""
    known = [v.completion_tokens for _, v in record.votes() if v.completion_tokens is not None]
    if known:
        return sum(known) / len(known)
    usage = record.usage
    if usage and usage.judge_samples and usage.judge_completion_tokens is not None:
        return usage.judge_completion_tokens / usage.judge_samples
    return None


def curve(
    records: Iterable[OutputRecord],
    reference_field: str,
    checker: Checker,
    budgets: Sequence[int] | None = None,
    seed: int = 0,
    source: str = "the run",
) -> dict[str, Any]:
    """The curve figures of a pool run (see the module). NotAPool when no record is a pool
    record; UsageError when none of them has candidates and `reference_field`."""
    report = CurveReport(checker.kind, budgets, seed)

    async def go() -> None:
        for record in records:
            await report.add(record, reference_field, checker)

    asyncio.run(go())
    if not report.pool_records:
        raise NotAPool(
            f"{source} holds no pool, so no strategy can be replayed from it (its votes are only those its own "
            "strategy asked for): make one with `bon select INPUT --strategy pool --votes 5 -o POOL.jsonl` "
            "(every pair, 5 votes in each order) and run bon curve on that"
        )
    if not report.records:
        raise UsageError(f"no pool record in {source} has candidates and `{reference_field}`")
    return report.to_json()


# ---------------------------------------------------------------- drawing


def render_table(figures: dict[str, Any], source: str) -> None:
    """The points as a table on stdout, then the baselines."""
    from rich.table import Table

    from bon.views.show import make_console

    table = Table(
        title=f"best-of-{figures['candidates']} accuracy per judge sample, replayed from {source} "
        f"({figures['records']} queries, {figures['votes_per_order']} votes per order, check {figures['check']})",
        title_justify="left",
    )
    for column in ("strategy", "samples/query", "tokens/query", "accuracy", "95% CI", "short"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for line in figures["curves"]:
        for point in line["points"]:
            ci = point["ci95"]
            table.add_row(
                point["label"],
                f"{point['judge_samples']:.2f}",
                "–" if point["judge_tokens"] is None else f"{point['judge_tokens']:,.0f}",
                percent(point["accuracy"]),
                "–" if not ci else f"{ci[0]:.1%}–{ci[1]:.1%}",
                str(point["short"]) if point["short"] else "",
            )
    for base in figures["baselines"]:
        ci = base["ci95"]
        table.add_row(
            base["label"], "0", "0", percent(base["accuracy"]), "–" if not ci else f"{ci[0]:.1%}–{ci[1]:.1%}", ""
        )
    console = make_console()
    console.print(table)
    if any(p["short"] for line in figures["curves"] for p in line["points"]):
        console.print(
            "short: queries whose replay asked a pair for more votes than the pool holds (spent as invalid votes); "
            "a deeper pool (--votes) replays them whole"
        )


def plot(figures: dict[str, Any], path: str, title: str | None = None) -> None:
    """The curves as a PNG: accuracy against judge samples per query (and against judge
    tokens, where the pool counted them), the baselines as horizontal lines. ImportError
    (saying what to install) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(f"--plot needs matplotlib: {PLOT_INSTALL}") from None
    axes_keys = [("judge_samples", "judge samples per query")]
    if all(p["judge_tokens"] is not None for line in figures["curves"] for p in line["points"]):
        axes_keys.append(("judge_tokens", "judge completion tokens per query"))
    fig, axes = plt.subplots(1, len(axes_keys), figsize=(4.6 * len(axes_keys), 3.6), dpi=90, squeeze=False)
    for ax, (key, xlabel) in zip(axes[0], axes_keys):
        for line in figures["curves"]:
            points = sorted(line["points"], key=lambda p: p[key])
            xs = [p[key] for p in points]
            ys = [p["accuracy"] for p in points]
            ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.4, label=line["name"])
        for base, style in zip(figures["baselines"][:2], ("--", ":")):
            if base["accuracy"] is not None:
                ax.axhline(base["accuracy"], linestyle=style, color="grey", linewidth=1, label=base["label"])
        if all(p[key] > 0 for line in figures["curves"] for p in line["points"]):
            ax.set_xscale("log")  # from a few samples a query to the whole pool
        ax.set_xlabel(xlabel)
        ax.set_ylabel("best-of-N accuracy")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(
        title or f"best-of-{figures['candidates']}, {figures['records']} queries (replayed from one pool)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
