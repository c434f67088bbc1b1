"""`bon browse OUT`: a terminal browser for a run, on Textual (optional extra `bon[tui]`).

The record list opens at once and fills while one background pass reads the file: each
line is parsed once for its summary (id, query head, winner, flags) and dropped, keeping
only its byte offset, so a run of 100,000 records never sits in memory. Opening a record
reads that one line again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

from bon.io.output import OutputRecord, parse_output
from bon.io.stats import record_flags
from bon.views.show import bracket_title, match_label, numbered_rounds, shorten, vote_label

try:
    from textual import work
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.containers import Horizontal, VerticalScroll
    from textual.screen import Screen
    from textual.widgets import DataTable, Footer, Input, Static, Tree
except ImportError as exc:  # the CLI turns this into one line naming the extra
    raise ImportError('bon browse needs Textual: pip install "bon[tui]"') from exc

# key -> filter kind, the --where kinds as toggles
TOGGLES = {"i": "invalid", "t": "tiebreak", "d": "disagree", "e": "error", "r": "truncated", "s": "same_answer"}
BATCH = 2000  # records per update of the list while the file is read
# Rows the list holds at most: a table row costs far more than reading a record, and no one
# scrolls through 100,000; search and the filters reach the rest.
MAX_ROWS = 5000


@dataclass(frozen=True)
class Entry:
    """What the list shows of one record, and where to find the rest."""

    offset: int
    id: str
    query: str
    best_index: int | None
    flags: dict[str, int]

    def matches(self, kinds: set[str], search: str) -> bool:
        if kinds and not any(self.flags.get(kind) for kind in kinds):
            return False
        return not search or search in self.id.lower() or search in self.query.lower()


def scan(path: str) -> Iterator[Entry]:
    """One pass over a bon output file: an Entry per record. A torn or bad line is skipped:
    a browser shows what it can read (bon show names the bad line)."""
    with open(path, "rb") as handle:
        offset = 0
        for number, line in enumerate(handle, start=1):
            start, offset = offset, offset + len(line)
            try:
                record = parse_output(json.loads(line), number)
            except ValueError:  # not JSON, or not an object (InputError)
                continue
            yield Entry(
                start, str(record.id), shorten(record.query(), 80), record.best_index, dict(record_flags(record))
            )


def read_record(path: str, offset: int) -> OutputRecord:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return OutputRecord.from_json(json.loads(handle.readline()))  # an object: scan read it


def flags_text(flags: dict[str, int]) -> str:
    return " ".join(f"{kind}×{n}" if n > 1 else kind for kind, n in flags.items())


class RecordScreen(Screen):
    """One record: the candidates (winner marked), the bracket, and the highlighted vote's reasoning."""

    BINDINGS = [Binding("q", "back", "back"), Binding("escape", "back", "back", show=False)]
    CSS = """
    #candidates { height: auto; max-height: 12; }
    #bracket { width: 1fr; }
    #reasoning-pane { width: 1fr; border-left: solid $accent; padding: 0 1; }
    """

    def __init__(self, record: OutputRecord):
        super().__init__()
        self.record = record

    def compose(self) -> ComposeResult:
        record, best = self.record, self.record.best_index
        yield Static(
            Text.assemble(("record ", "bold"), (str(record.id), "bold cyan"), "  ", shorten(record.query(), 200)),
            id="title",
        )
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column, justify in (("#", "right"), ("chars", "right"), ("candidate", "left")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for i, text in enumerate(record.candidates or ()):
            table.add_row(
                str(i),
                str(len(text)),
                Text(shorten(text, 160) + (" ★ best" if i == best else ""), style="bold green" if i == best else ""),
            )
        if record.error:
            table.add_row("", "", Text(f"error: {record.error}", style="bold red"))
        yield VerticalScroll(Static(table), id="candidates")
        with Horizontal():
            yield self.bracket()
            with VerticalScroll(id="reasoning-pane"):
                yield Static("highlight a vote to read its reasoning", id="reasoning")
        yield Footer()

    def bracket(self) -> Tree:
        tournament, best = self.record.tournament, self.record.best_index
        tree: Tree = Tree(bracket_title(tournament), id="bracket")
        tree.root.expand()
        for team in (tournament.answer_groups if tournament else None) or ():
            tree.root.add_leaf(f"team {shorten(str(team.answer), 30)!r}: " + " ".join(f"#{m}" for m in team.members))
        for r, matches in numbered_rounds(self.record):
            branch = tree.root.add(f"round {r}", expand=True)
            for match, votes in matches:
                if not votes:
                    branch.add_leaf(match_label(match, best))
                    continue
                node = branch.add(match_label(match, best), expand=True)
                for number, vote in votes:
                    node.add_leaf(vote_label(number, match, vote), data={"number": number, "vote": vote})
        return tree

    def on_mount(self) -> None:
        self.query_one(Tree).focus()

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        if event.node.data:
            number, vote = event.node.data["number"], event.node.data["vote"]
            head = Text(
                f"vote {number}  ({vote.completion_tokens or '?'} tokens, {vote.finish_reason})\n\n", style="bold"
            )
            self.query_one("#reasoning", Static).update(head + Text(vote.reasoning or "(empty)"))

    def action_back(self) -> None:
        self.app.pop_screen()


class BrowseApp(App):
    """The record list: `/` searches ids and queries, letters toggle the --where filters."""

    TITLE = "bon browse"
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("escape", "escape", "clear / quit", show=False),
        Binding("slash", "search", "search"),
        *[Binding(key, f"toggle('{kind}')", kind) for key, kind in TOGGLES.items()],
    ]
    CSS = """
    #status { height: 1; background: $boost; }
    #search { display: none; }
    #search.shown { display: block; }
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.entries: list[Entry] = []
        self.kinds: set[str] = set()
        self.search = ""
        self.done = False
        self.matching = 0  # entries that pass the filters, listed or not

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        table: DataTable = DataTable(cursor_type="row", zebra_stripes=True, id="records")
        table.add_columns("id", "query", "winner", "flags")
        yield table
        yield Input(placeholder="search ids and queries (Enter to apply, Escape to clear)", id="search")
        yield Footer()

    def on_mount(self) -> None:
        self.show_status()
        self.query_one(DataTable).focus()
        self.read_file()

    @work(thread=True, exclusive=True)
    def read_file(self) -> None:
        batch: list[Entry] = []
        try:
            for entry in scan(self.path):
                batch.append(entry)
                if len(batch) >= BATCH:
                    self.call_from_thread(self.add_entries, batch)
                    batch = []
        except OSError as exc:
            self.call_from_thread(self.exit, message=f"bon: error: cannot read {self.path}: {exc.strerror}")
            return
        self.call_from_thread(self.add_entries, batch, True)

    def add_entries(self, batch: list[Entry], last: bool = False) -> None:
        first = len(self.entries)
        self.entries.extend(batch)
        self.done = last
        self.add_rows(range(first, len(self.entries)))
        self.show_status()

    def add_rows(self, positions) -> None:
        table = self.query_one(DataTable)
        for position in positions:
            entry = self.entries[position]
            if not entry.matches(self.kinds, self.search):
                continue
            self.matching += 1
            if table.row_count < MAX_ROWS:
                winner = "–" if entry.best_index is None else f"#{entry.best_index}"
                table.add_row(
                    entry.id, entry.query, winner, Text(flags_text(entry.flags), style="yellow"), key=str(position)
                )

    def refilter(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self.matching = 0
        self.add_rows(range(len(self.entries)))
        self.show_status()

    def show_status(self) -> None:
        shown = self.query_one(DataTable).row_count
        reading = "" if self.done else "  (reading…)"
        if shown < self.matching:
            reading += f"  (first {shown:,} of {self.matching:,} matching: search or filter to narrow)"
        filters = " ".join(f"[{key}]{kind}" + ("✓" if kind in self.kinds else "") for key, kind in TOGGLES.items())
        search = f"  search: {self.search!r}" if self.search else ""
        self.query_one("#status", Static).update(
            f"{self.path}: {shown:,} of {len(self.entries):,} records{reading}{search}   {filters}"
        )

    async def action_toggle(self, kind: str) -> None:  # async: Textual's own action_toggle is
        self.kinds ^= {kind}
        self.refilter()

    def action_search(self) -> None:
        box = self.query_one("#search", Input)
        box.add_class("shown")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.search = event.value.strip().lower()
        event.input.remove_class("shown")
        self.query_one(DataTable).focus()
        self.refilter()

    def action_escape(self) -> None:
        box = self.query_one("#search", Input)
        if box.has_class("shown") or self.search:
            box.remove_class("shown")
            box.value, self.search = "", ""
            self.query_one(DataTable).focus()
            self.refilter()
        else:
            self.exit()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        entry = self.entries[int(str(event.row_key.value))]
        self.push_screen(RecordScreen(read_record(self.path, entry.offset)))
