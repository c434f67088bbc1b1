"""Reading bon's output: figures about the judge, and a record's bracket as a tree.

`Summary` is a pure accumulator (add records, read figures); the render functions draw
with Rich, which drops colour and escape codes by itself when output is piped or
NO_COLOR is set, and follows the terminal's width.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

REASONS = ("truncated", "no_verdict", "bad_verdict")


@dataclass
class Summary:
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

    def add(self, record: dict[str, Any]) -> None:
        self.records += 1
        if record.get("error"):
            self.errors += 1
        if isinstance(record.get("candidates"), list):
            self.candidate_counts[len(record["candidates"])] += 1
        if "best_index" in record:
            self.winners[record["best_index"]] += 1
        usage = record.get("usage") or {}
        self.judge_tokens += usage.get("judge_completion_tokens", 0)
        for match in _matches(record):
            votes = match.get("votes", [])
            self.judge_samples += len(votes)
            longer = longer_candidate(record.get("candidates"), match["a"], match.get("b"))
            for vote in votes:
                if vote.get("verdict") is None:
                    self.invalid[vote.get("reason") or "no_verdict"] += 1
                else:
                    self.valid_votes += 1
                    self.first_position_wins += vote["verdict"] == vote["first"]
                    if longer is not None:
                        self.length_votes += 1
                        self.longer_wins += vote["verdict"] == longer
            if match.get("decided_by") in ("majority", "tiebreak"):
                self.judged_matches += 1
                self.tiebreaks += match["decided_by"] == "tiebreak"
                disagree = orders_disagree(match)
                if disagree is not None:
                    self.both_orders_decided += 1
                    self.order_disagreements += disagree

    def to_json(self) -> dict[str, Any]:
        invalid_total = sum(self.invalid.values())
        return {
            "records": self.records,
            "records_with_errors": self.errors,
            "candidates_per_record": _stats(self.candidate_counts),
            "judge_samples": self.judge_samples,
            "judge_completion_tokens": self.judge_tokens,
            "invalid_votes": invalid_total,
            "invalid_rate": _rate(invalid_total, self.judge_samples),
            "invalid_by_reason": {r: self.invalid.get(r, 0) for r in REASONS},
            "judged_matches": self.judged_matches,
            "tiebreak_rate": _rate(self.tiebreaks, self.judged_matches),
            "first_position_win_rate": _rate(self.first_position_wins, self.valid_votes),
            "order_disagreement_rate": _rate(self.order_disagreements, self.both_orders_decided),
            "order_disagreements": self.order_disagreements,
            "longer_win_rate": _rate(self.longer_wins, self.length_votes),
            "winner_index": {str(k): v for k, v in sorted(self.winners.items())},
        }

    def line(self) -> str:
        """The short form for the end of a run."""
        figures = self.to_json()
        invalid = ", ".join(f"{n} {r}" for r, n in figures["invalid_by_reason"].items() if n)
        parts = [f"{self.records} records"]
        if self.errors:
            parts.append(f"{self.errors} with errors")
        if self.judge_samples:
            parts.append(f"{self.judge_samples} judge samples ({figures['invalid_votes']} invalid"
                         + (f": {invalid})" if invalid else ")"))
        if figures["first_position_win_rate"] is not None:
            parts.append(f"first position wins {figures['first_position_win_rate']:.0%}")
        if figures["tiebreak_rate"]:
            parts.append(f"tiebreaks {figures['tiebreak_rate']:.0%}")
        return ", ".join(parts)


def _matches(record: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for round_matches in (record.get("tournament") or {}).get("rounds", []):
        yield from round_matches


def longer_candidate(texts: Any, a: int, b: int | None) -> int | None:
    """The longer (in characters) of candidates a and b, or None for a bye or equal lengths."""
    if b is None or not isinstance(texts, list) or max(a, b) >= len(texts) or len(texts[a]) == len(texts[b]):
        return None
    return a if len(texts[a]) > len(texts[b]) else b


def orders_disagree(match: dict[str, Any]) -> bool | None:
    """Whether the votes with a shown first and those with b shown first preferred different
    candidates; None unless both orders have a majority."""
    votes = match.get("votes", [])
    if match.get("b") is None:
        return None
    a_first, b_first = _order_majority(votes, match["a"]), _order_majority(votes, match["b"])
    return None if a_first is None or b_first is None else a_first != b_first


# What `bon show --where` (and the browser's toggles) can look for; each counts how often.
WHERE_KINDS = ("invalid", "tiebreak", "disagree", "error", "truncated", "same_answer")


def record_flags(record: dict[str, Any]) -> Counter:
    """How often each WHERE_KINDS thing happens in one record (kinds absent: zero)."""
    flags: Counter = Counter()
    if record.get("error"):
        flags["error"] += 1
    for match in _matches(record):
        decided = match.get("decided_by")
        flags["tiebreak"] += decided == "tiebreak"
        flags["same_answer"] += decided == "same_answer"
        flags["disagree"] += bool(orders_disagree(match))
        for vote in match.get("votes", []):
            flags["invalid"] += vote.get("verdict") is None
            # cut by the token limit, whether or not a verdict was already written
            flags["truncated"] += vote.get("reason") == "truncated" or vote.get("finish_reason") == "length"
    return +flags  # drop the zeros


def query_text(record: dict[str, Any], field: str = "query") -> str:
    """The record's query: its query field, or the last turn of its `messages`."""
    query = record.get(field)
    if isinstance(query, str):
        return query
    messages = record.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return str(messages[-1].get("content", ""))
    return ""


def where_row(record: dict[str, Any], kinds: Iterable[str]) -> dict[str, Any] | None:
    """One `--where` result: the record's id, query head, winner and what matched, or None
    when none of `kinds` occurs in it."""
    flags = record_flags(record)
    matched = {kind: flags[kind] for kind in kinds if flags[kind]}
    if not matched:
        return None
    return {"id": record.get("id"), "query": shorten(query_text(record), 60),
            "best_index": record.get("best_index"), "matched": matched}


def where_line(row: dict[str, Any]) -> str:
    winner = "–" if row["best_index"] is None else f"#{row['best_index']}"
    matched = ", ".join(f"{kind} {n}" for kind, n in row["matched"].items())
    return f"{row['id']!s:<14} {row['query']:<60}  winner {winner:<4} {matched}"


def _order_majority(votes: list[dict], first: int) -> int | None:
    """The candidate the votes with `first` shown first prefer, or None without a majority."""
    tally = Counter(v["verdict"] for v in votes if v.get("first") == first and v.get("verdict") is not None)
    if not tally:
        return None
    (top, n), *rest = tally.most_common()
    return None if rest and rest[0][1] == n else top


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _stats(counts: Counter) -> dict[str, float] | None:
    """Mean, min and max of values given as value -> how often (memory flat in the run's length)."""
    if not counts:
        return None
    total = sum(counts.values())
    return {"mean": round(sum(v * n for v, n in counts.items()) / total, 2), "min": min(counts), "max": max(counts)}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def render_summary(summary: Summary) -> Table:
    figures = summary.to_json()
    table = Table(title="bon run summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    cands = figures["candidates_per_record"]
    table.add_row("records", f"{figures['records']}" + (f" ({figures['records_with_errors']} with errors)"
                                                         if figures["records_with_errors"] else ""))
    table.add_row("candidates per record", "–" if not cands else f"{cands['mean']:g} (min {cands['min']}, max {cands['max']})")
    table.add_row("judge samples", str(figures["judge_samples"]))
    table.add_row("judge tokens", f"{figures['judge_completion_tokens']:,}")
    table.add_row("invalid votes", f"{figures['invalid_votes']} ({_pct(figures['invalid_rate'])})")
    for reason, count in figures["invalid_by_reason"].items():
        table.add_row(f"  {reason}", f"{count} ({_pct(_rate(count, figures['judge_samples']))})")
    table.add_row("judged matches", str(figures["judged_matches"]))
    table.add_row("tiebreak rate", _pct(figures["tiebreak_rate"]))
    table.add_row("first-position win rate", _pct(figures["first_position_win_rate"]) + "  (0.5 = no position bias)")
    table.add_row("order disagreement", f"{_pct(figures['order_disagreement_rate'])} of matches decided in both orders")
    table.add_row("longer-candidate win rate", _pct(figures["longer_win_rate"]) + "  (0.5 = no length bias)")
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
        view.append(f"\n… {len(hidden)} more line{'s' if len(hidden) > 1 else ''} of thinking ({words:,} words) …",
                    style="dim italic")
    if shown_last is not None:
        view.append("\n" + shorten(shown_last, HEAD_WIDTH), style="dim")
    if conclusion is None:
        view.append("\n(no </think>: the thought never ended)", style="italic")
    else:
        view.append("\nconclusion: ", style="bold")
        view.append(conclusion.strip() or "(nothing after </think>)")
    return view


def answer_groups_view(tournament: dict[str, Any]) -> Text | None:
    """Answer-aware tournaments: the teams of candidates that share a final answer."""
    groups = tournament.get("answer_groups") or []
    if not groups:
        return None
    view = Text("teams (same final answer): ", style="bold")
    for n, group in enumerate(groups):
        view.append(("  ·  " if n else "") + f"{shorten(str(group.get('answer')), 30)!r}: ")
        view.append(" ".join(f"#{m}" for m in group.get("members", [])), style="cyan")
    return view


def render_record(record: dict[str, Any], full: bool = False, vote: int | None = None):
    """The query, the candidates (winner highlighted) and the bracket as a tree.

    Votes are numbered 1.. across the record; `vote` shows only that one, in full.
    """
    candidates = record.get("candidates") or []
    best = record.get("best_index")
    query = query_text(record)
    parts: list[Any] = [Text.assemble(("record ", "bold"), (str(record.get("id")), "bold cyan"))]
    parts.append(Text.assemble(("query: ", "bold"), shorten(query, 300) if not full else query))
    if record.get("error"):
        parts.append(Text.assemble(("error: ", "bold red"), str(record["error"])))
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("chars", justify="right")
    table.add_column("candidate")
    for i, text in enumerate(candidates):
        style = "bold green" if i == best else ""
        marker = " ★ best" if i == best else ""
        table.add_row(str(i), str(len(text)), Text(shorten(text) + marker, style=style))
    parts.append(table)

    tournament = record.get("tournament") or {}
    teams = answer_groups_view(tournament)
    if teams is not None:
        parts.append(teams)
    # A server that reports usage per request for n choices leaves each vote's count
    # unknown; say so once instead of a "?" on every vote.
    votes = [v for m in _matches(record) for v in m.get("votes", [])]
    judge_tokens = (record.get("usage") or {}).get("judge_completion_tokens")
    per_request = bool(judge_tokens) and any(v.get("completion_tokens") is None for v in votes)
    if per_request:
        parts.append(Text(f"tokens per vote unknown: the server reported usage per request (n choices together); "
                          f"{judge_tokens:,} judge completion tokens in all", style="italic"))
    tree = Tree(Text(f"{tournament.get('strategy', 'tournament')} (seed {tournament.get('seed')})", style="bold"))
    number = 0
    for r, round_matches in enumerate(tournament.get("rounds", []), start=1):
        branch = tree.add(Text(f"round {r}", style="bold"))
        for match in round_matches:
            node = branch.add(match_label(match, best))
            for v in match.get("votes", []):
                number += 1
                if vote is not None and number != vote:
                    continue
                tokens = v.get("completion_tokens")
                count = "" if tokens is None and per_request else f"{'?' if tokens is None else tokens} tokens, "
                head = vote_label(number, match, v)
                head.append(f"  ({count}{v.get('finish_reason')})")
                node.add(Group(head, reasoning_view(v.get("reasoning", ""), full or vote is not None)))
    parts.append(tree)
    return Group(*parts)


def match_label(match: dict[str, Any], best: int | None) -> Text:
    """One line for a match in a bracket: a bye, a same-answer pass, or who won and how."""
    a, b, winner = match["a"], match.get("b"), match["winner"]
    if b is None:
        return Text(f"#{a} bye → #{winner}")
    if match.get("decided_by") == "same_answer":
        return Text.assemble(f"#{a} vs #{b}  ", ("same answer: both advance", "cyan"))
    tally = match.get("tally", {})
    return Text.assemble(
        f"#{a} vs #{b} → ", (f"#{winner}", "bold green" if winner == best else "bold"),
        f"  {tally.get('a', 0)}–{tally.get('b', 0)}",
        f" ({tally.get('invalid', 0)} invalid)" if tally.get("invalid") else "",
        f"  {match['decided_by']}",
    )


def vote_label(number: int, match: dict[str, Any], vote: dict[str, Any]) -> Text:
    """One line for vote `number` of a match: who was shown first and what it chose."""
    second = match.get("b") if vote["first"] == match["a"] else match["a"]
    verdict = f"→ #{vote['verdict']}" if vote.get("verdict") is not None else f"invalid: {vote.get('reason')}"
    return Text(f"vote {number}: #{vote['first']} shown first, #{second} second  {verdict}",
                style="red" if vote.get("verdict") is None else "")


def load_records(lines: Iterable[str]) -> Iterable[dict[str, Any]]:
    """Records from a bon output file; a torn last line (a crash mid-write) is skipped."""
    for line in lines:
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


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
