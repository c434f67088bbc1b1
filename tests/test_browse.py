"""`bon browse`: driven headless by Textual's pilot, and once in a real terminal (tmux)."""

import asyncio
import contextlib
import sys
from pathlib import Path

from textual.widgets import DataTable, Static, Tree

from bon.views.browse import TOGGLES, BrowseApp, RecordScreen
from bon.views.show import WHERE_KINDS
from test_show import tmux_screen

FIXTURE = Path(__file__).parent / "fixtures" / "run.jsonl"


def rows(app) -> list[str]:
    table = app.query_one(DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


@contextlib.asynccontextmanager
async def browsing(size=(120, 40)):
    """The browser on the fixture run, headless, once its records are read."""
    app = BrowseApp(str(FIXTURE))
    async with app.run_test(size=size) as pilot:
        while not app.done:
            await pilot.pause(0.05)
        yield app, pilot


def test_every_where_kind_is_a_toggle():
    assert sorted(TOGGLES.values()) == sorted(WHERE_KINDS)


def test_list_filters_and_search():
    asyncio.run(list_filters_and_search())


async def list_filters_and_search():
    async with browsing() as (app, pilot):
        assert rows(app) == ["r1", "7", "bad"]
        table = app.query_one(DataTable)
        assert [str(c) for c in table.get_row_at(0)[2:]] == ["#2", "tiebreak disagree invalid truncated"]
        await pilot.press("t")  # tiebreak
        assert rows(app) == ["r1"]
        await pilot.press("e")  # or error
        assert rows(app) == ["r1", "bad"]
        await pilot.press("t", "e", "i")  # back off; invalid only
        assert rows(app) == ["r1", "7"]
        assert "2 of 3 records" in str(app.query_one("#status", Static).render())
        await pilot.press("i", "slash", *"second", "enter")
        assert rows(app) == ["7"]  # the query "Second?"
        await pilot.press("escape")  # clears the search
        assert rows(app) == ["r1", "7", "bad"]


def test_enter_opens_a_record_with_its_votes_reasoning_and_q_goes_back():
    asyncio.run(enter_opens_a_record())


async def enter_opens_a_record():
    async with browsing() as (app, pilot):
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, RecordScreen) and screen.record["id"] == "r1"
        labels = []
        tree = screen.query_one(Tree)

        def walk(node):
            labels.append(str(node.label))
            for child in node.children:
                walk(child)

        walk(tree.root)
        assert "#1 vs #2 → #2  1–1  tiebreak" in labels and "#2 bye → #2" in labels
        assert "vote 5: #2 shown first, #1 second  → #2" in labels
        while not (tree.cursor_node and tree.cursor_node.data and tree.cursor_node.data["number"] == 5):
            await pilot.press("down")
        reasoning = str(screen.query_one("#reasoning", Static).render())
        assert "I compared them.\nFinal line of thought.\n</think>\\boxed{Assistant 1}" in reasoning  # in full
        await pilot.press("q")
        assert not isinstance(app.screen, RecordScreen)
        await pilot.press("q")
    assert app.return_code == 0


def test_in_a_real_terminal(tmp_path):
    screen, _ = tmux_screen(f"{sys.executable} -m bon browse {FIXTURE}", until="of 3 records")
    assert "r1" in screen and "Which is better?" in screen and "tiebreak disagree" in screen
    assert "Too long" in screen and "error" in screen


def test_a_long_run_lists_its_first_rows_and_says_how_many_match(monkeypatch):
    import bon.views.browse

    monkeypatch.setattr(bon.views.browse, "MAX_ROWS", 2)

    async def check():
        async with browsing((160, 40)) as (app, pilot):
            assert rows(app) == ["r1", "7"]
            assert "(first 2 of 3 matching: search or filter to narrow)" in str(
                app.query_one("#status", Static).render()
            )
            await pilot.press("e")  # the filters reach records past the cap
            assert rows(app) == ["bad"]

    asyncio.run(check())
