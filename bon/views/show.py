"""Drawing bon's output: the judge's figures as a table, a record's bracket as a tree.

The figures come from bon.io.stats and the records from bon.io.output; this module only
draws, with Rich, which drops colour and escape codes by itself when output is piped or
NO_COLOR is set, and follows the terminal's width.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from bon.io.output import (
    OutputRecord,
    RecordedMatch,
    RecordedVote,
    TournamentTrace,
    query_text,  # noqa: F401  (views/pairs.py imports it from here)
)
from bon.io.stats import WHERE_KINDS, Summary, percent, rate, record_flags  # noqa: F401  (WHERE_KINDS: likewise)


def where_row(record: OutputRecord | dict[str, Any], kinds: Iterable[str]) -> dict[str, Any] | None:
    """One `--where` result: the record's id, query head, winner and what matched, or None
    when none of `kinds` occurs in it."""
    record = OutputRecord.of(record)
    flags = record_flags(record)
    matched = {kind: flags[kind] for kind in kinds if flags[kind]}
    if not matched:
        return None
    return {"id": record.id, "query": shorten(record.query(), 60), "best_index": record.best_index, "matched": matched}


def where_line(row: dict[str, Any]) -> str:
    winner = "–" if row["best_index"] is None else f"#{row['best_index']}"
    matched = ", ".join(f"{kind} {n}" for kind, n in row["matched"].items())
    return f"{row['id']!s:<14} {row['query']:<60}  winner {winner:<4} {matched}"


def render_summary(summary: Summary) -> Table:
    figures = summary.to_json()
    table = Table(title="bon run summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    cands = figures["candidates_per_record"]
    table.add_row(
        "records",
        f"{figures['records']}"
        + (f" ({figures['records_with_errors']} with errors)" if figures["records_with_errors"] else ""),
    )
    table.add_row(
        "candidates per record", "–" if not cands else f"{cands['mean']:g} (min {cands['min']}, max {cands['max']})"
    )
    table.add_row("judge samples", str(figures["judge_samples"]))
    table.add_row("judge tokens", f"{figures['judge_completion_tokens']:,}")
    table.add_row("invalid votes", f"{figures['invalid_votes']} ({percent(figures['invalid_rate'])})")
    for reason, count in figures["invalid_by_reason"].items():
        table.add_row(f"  {reason}", f"{count} ({percent(rate(count, figures['judge_samples']))})")
    table.add_row("judged matches", str(figures["judged_matches"]))
    table.add_row("tiebreak rate", percent(figures["tiebreak_rate"]))
    if "escalations" in figures:
        table.add_row(
            "escalated matches",
            f"{figures['escalations']} ({percent(figures['escalation_rate'])}), "
            f"{figures['escalation_samples']} escalation judge samples",
        )
    table.add_row("first-position win rate", percent(figures["first_position_win_rate"]) + "  (0.5 = no position bias)")
    table.add_row(
        "order disagreement", f"{percent(figures['order_disagreement_rate'])} of matches decided in both orders"
    )
    table.add_row("longer-candidate win rate", percent(figures["longer_win_rate"]) + "  (0.5 = no length bias)")
    winners = "  ".join(f"#{k}: {v}" for k, v in figures["winner_index"].items()) or "–"
    table.add_row("winner index", winners)
    return table


def shorten(text: str, width: int = 72) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
HEAD_LINES = 3  # lines of thinking shown per vote by default
HEAD_WIDTH = 240  # characters per shown line (a thought's "line" is often a paragraph)


def split_reasoning(text: str) -> tuple[list[str], str | None]:
    """A judge completion as (thinking lines, conclusion after `</think>` or None).

    Text before the last `</think>` is thinking even without an opening tag: the RRM's chat
    template opens the thought, so its completion starts inside it. Bare tag lines and blank
    lines are not thinking a reader needs.
    """
    thinking, conclusion = text.rsplit(THINK_CLOSE, 1) if THINK_CLOSE in text else (text, None)
    thinking = thinking.strip().removeprefix(THINK_OPEN)
    lines = [line.strip() for line in thinking.splitlines()]
    return [line for line in lines if line and line not in (THINK_OPEN, THINK_CLOSE)], conclusion


def reasoning_view(text: str, full: bool = False) -> Text:
    """A vote's reasoning: the first lines of the thinking, how much is hidden, and the whole
    conclusion (the judge's stated reason and verdict). `full`: the completion as written."""
    if full:
        return Text(text.strip() or "(empty)", style="dim")
    lines, conclusion = split_reasoning(text)
    shown = [shorten(line, HEAD_WIDTH) for line in lines[:HEAD_LINES]]
    hidden = lines[HEAD_LINES:]
    if conclusion is None and len(hidden) > 1:
        shown_last, hidden = hidden[-1], hidden[:-1]  # no conclusion: the last line is where a verdict would be
    else:
        shown_last = None
    view = Text("\n".join(shown) or "(no thinking)", style="dim")
    if hidden:
        words = sum(len(line.split()) for line in hidden)
        view.append(
            f"\n… {len(hidden)} more line{'s' if len(hidden) > 1 else ''} of thinking ({words:,} words) …",
            style="dim italic",
        )
    if shown_last is not None:
        view.append("\n" + shorten(shown_last, HEAD_WIDTH), style="dim")
    if conclusion is None:
        view.append("\n(no </think>: the thought never ended)", style="italic")
    else:
        view.append("\nconclusion: ", style="bold")
        view.append(conclusion.strip() or "(nothing after </think>)")
    return view


def answer_groups_view(tournament: TournamentTrace | None) -> Text | None:
    """Answer-aware tournaments: the teams of candidates that share a final answer."""
    if tournament is None or not tournament.answer_groups:
        return None
    view = Text("teams (same final answer): ", style="bold")
    for n, team in enumerate(tournament.answer_groups):
        view.append(("  ·  " if n else "") + f"{shorten(str(team.answer), 30)!r}: ")
        view.append(" ".join(f"#{m}" for m in team.members), style="cyan")
    return view


def bracket_title(tournament: TournamentTrace | None) -> str:
    """The root of a record's bracket: its strategy and seed."""
    strategy = tournament.strategy if tournament and tournament.strategy is not None else "tournament"
    return f"{strategy} (seed {tournament.seed if tournament else None})"


NumberedMatch = tuple[RecordedMatch, list[tuple[int, RecordedVote]]]  # a match and its votes with their numbers


def numbered_rounds(record: OutputRecord) -> Iterator[tuple[int, list[NumberedMatch]]]:
    """(round from 1, its matches) in bracket order, each vote with its number: votes are
    numbered 1.. across the record, as `bon show --vote N` and the browser count them."""
    numbers = itertools.count(1)
    for r, matches in enumerate(record.tournament.rounds if record.tournament else (), start=1):
        yield r, [(match, [(next(numbers), v) for v in match.votes]) for match in matches]


def render_record(record: OutputRecord | dict[str, Any], full: bool = False, vote: int | None = None):
    """The query, the candidates (winner highlighted) and the bracket as a tree.

    Votes are numbered 1.. across the record; `vote` shows only that one, in full.
    """
    record = OutputRecord.of(record)
    best = record.best_index
    query = record.query()
    parts: list[Any] = [Text.assemble(("record ", "bold"), (str(record.id), "bold cyan"))]
    parts.append(Text.assemble(("query: ", "bold"), shorten(query, 300) if not full else query))
    if record.error:
        parts.append(Text.assemble(("error: ", "bold red"), record.error))
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("chars", justify="right")
    table.add_column("candidate")
    for i, text in enumerate(record.candidates or ()):
        style = "bold green" if i == best else ""
        marker = " ★ best" if i == best else ""
        table.add_row(str(i), str(len(text)), Text(shorten(text) + marker, style=style))
    parts.append(table)

    teams = answer_groups_view(record.tournament)
    if teams is not None:
        parts.append(teams)
    # A server that reports usage per request for n choices leaves each vote's count
    # unknown; say so once instead of a "?" on every vote.
    judge_tokens = record.usage.judge_completion_tokens if record.usage else None
    per_request = bool(judge_tokens) and any(v.completion_tokens is None for _, v in record.votes())
    if per_request:
        parts.append(
            Text(
                f"tokens per vote unknown: the server reported usage per request (n choices together); "
                f"{judge_tokens:,} judge completion tokens in all",
                style="italic",
            )
        )
    tree = Tree(Text(bracket_title(record.tournament), style="bold"))
    for r, matches in numbered_rounds(record):
        branch = tree.add(Text(f"round {r}", style="bold"))
        for match, votes in matches:
            node = branch.add(match_label(match, best))
            for number, v in votes:
                if vote is not None and number != vote:
                    continue
                tokens = v.completion_tokens
                count = "" if tokens is None and per_request else f"{'?' if tokens is None else tokens} tokens, "
                head = vote_label(number, match, v)
                head.append(f"  ({count}{v.finish_reason})")
                node.add(Group(head, reasoning_view(v.reasoning, full or vote is not None)))
    parts.append(tree)
    return Group(*parts)


def match_label(match: RecordedMatch, best: int | None) -> Text:
    """One line for a match in a bracket: a bye, a same-answer pass, or who won and how."""
    a, b, winner = match.a, match.b, match.winner
    if b is None:
        return Text(f"#{a} bye → #{winner}")
    if match.decided_by == "same_answer":
        return Text.assemble(f"#{a} vs #{b}  ", ("same answer: both advance", "cyan"))
    tally = match.tally
    return Text.assemble(
        f"#{a} vs #{b} → ",
        (f"#{winner}", "bold green" if winner == best else "bold"),
        f"  {tally.a}–{tally.b}",
        f" ({tally.invalid} invalid)" if tally.invalid else "",
        f"  {match.decided_by}",
        (f"  escalated to {match.judge}", "yellow") if match.escalated else "",
    )


def vote_label(number: int, match: RecordedMatch, vote: RecordedVote) -> Text:
    """One line for vote `number` of a match: who was shown first and what it chose."""
    verdict = f"→ #{vote.verdict}" if vote.valid else f"invalid: {vote.reason}"
    by = f"  ({vote.judge})" if vote.judge is not None and match.escalated else ""
    return Text(
        f"vote {number}: #{vote.first} shown first, #{match.second(vote)} second  {verdict}{by}",
        style="" if vote.valid else "red",
    )


def make_console(**kwargs) -> Console:
    """A console that honours NO_COLOR fully: no colour and no other escape codes either."""
    if os.environ.get("NO_COLOR"):
        kwargs.setdefault("color_system", None)
    return Console(**kwargs)


def print_long(console: Console, renderable, pager: bool) -> None:
    """Through a pager when asked and on a terminal, else straight out."""
    if pager and console.is_terminal:
        with console.pager(styles=True):
            console.print(renderable)
    else:
        console.print(renderable)
