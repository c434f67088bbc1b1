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
            for vote in votes:
                if vote.get("verdict") is None:
                    self.invalid[vote.get("reason") or "no_verdict"] += 1
                else:
                    self.valid_votes += 1
                    self.first_position_wins += vote["verdict"] == vote["first"]
            if match.get("decided_by") in ("majority", "tiebreak"):
                self.judged_matches += 1
                self.tiebreaks += match["decided_by"] == "tiebreak"
                a_first, b_first = _order_majority(votes, match["a"]), _order_majority(votes, match["b"])
                if a_first is not None and b_first is not None:
                    self.both_orders_decided += 1
                    self.order_disagreements += a_first != b_first

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
    winners = "  ".join(f"#{k}: {v}" for k, v in figures["winner_index"].items()) or "–"
    table.add_row("winner index", winners)
    return table


def _shorten(text: str, width: int = 72) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _reasoning(text: str, full: bool) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if full or len(lines) <= 2:
        return "\n".join(lines) if lines else "(empty)"
    hidden = len(lines) - 2
    return f"{lines[0]}\n  … {hidden} more line{'s' if hidden > 1 else ''} …\n{lines[-1]}"


def render_record(record: dict[str, Any], full: bool = False, vote: int | None = None):
    """The query, the candidates (winner highlighted) and the bracket as a tree.

    Votes are numbered 1.. across the record; `vote` shows only that one, in full.
    """
    candidates = record.get("candidates") or []
    best = record.get("best_index")
    query = record.get("query") or (record.get("messages") or [{}])[-1].get("content", "")
    parts: list[Any] = [Text.assemble(("record ", "bold"), (str(record.get("id")), "bold cyan"))]
    parts.append(Text.assemble(("query: ", "bold"), _shorten(query, 300) if not full else query))
    if record.get("error"):
        parts.append(Text.assemble(("error: ", "bold red"), str(record["error"])))
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("chars", justify="right")
    table.add_column("candidate")
    for i, text in enumerate(candidates):
        style = "bold green" if i == best else ""
        marker = " ★ best" if i == best else ""
        table.add_row(str(i), str(len(text)), Text(_shorten(text) + marker, style=style))
    parts.append(table)

    tournament = record.get("tournament") or {}
    tree = Tree(Text(f"{tournament.get('strategy', 'tournament')} (seed {tournament.get('seed')})", style="bold"))
    number = 0
    for r, round_matches in enumerate(tournament.get("rounds", []), start=1):
        branch = tree.add(Text(f"round {r}", style="bold"))
        for match in round_matches:
            a, b, winner = match["a"], match.get("b"), match["winner"]
            if b is None:
                branch.add(f"#{a} bye → #{winner}")
                continue
            tally = match.get("tally", {})
            label = Text.assemble(
                f"#{a} vs #{b} → ", (f"#{winner}", "bold green" if winner == best else "bold"),
                f"  {tally.get('a', 0)}–{tally.get('b', 0)}",
                f" ({tally.get('invalid', 0)} invalid)" if tally.get("invalid") else "",
                f"  {match['decided_by']}",
            )
            node = branch.add(label)
            for v in match.get("votes", []):
                number += 1
                if vote is not None and number != vote:
                    continue
                second = b if v["first"] == a else a
                verdict = (f"→ #{v['verdict']}" if v.get("verdict") is not None
                           else f"invalid: {v.get('reason')}")
                tokens = v.get("completion_tokens")
                head = Text(f"vote {number}: #{v['first']} shown first, #{second} second  {verdict}"
                            f"  ({'?' if tokens is None else tokens} tokens, {v.get('finish_reason')})",
                            style="red" if v.get("verdict") is None else "")
                node.add(Group(head, Text(_reasoning(v.get("reasoning", ""), full or vote is not None), style="dim")))
    parts.append(tree)
    return Group(*parts)


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
