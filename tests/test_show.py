"""`bon show` and `bon compare`: figures checked by hand, rendering as a person sees it."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from bon.cli import app
from bon.show import Summary, load_records, render_record
from conftest import wait_until

FIXTURE = Path(__file__).parent / "fixtures" / "run.jsonl"
runner = CliRunner()

# Worked out by hand from tests/fixtures/run.jsonl (see the comments per figure).
EXPECTED = {
    "records": 3,
    "records_with_errors": 1,  # "bad"
    "candidates_per_record": {"mean": 2.5, "min": 2, "max": 3},
    "judge_samples": 9,  # 3 + 2 + 4 votes
    "judge_completion_tokens": 150,  # 100 + 50
    "invalid_votes": 3,
    "invalid_rate": 0.3333,
    "invalid_by_reason": {"truncated": 1, "no_verdict": 1, "bad_verdict": 1},
    "judged_matches": 3,  # the bye is not a match the judge decided
    "tiebreak_rate": 0.3333,
    "first_position_win_rate": 0.6667,  # 4 of 6 valid votes chose the one shown first
    "order_disagreement_rate": 0.3333,  # r1's final: 1-first says 1, 2-first says 2
    "order_disagreements": 1,
    "winner_index": {"0": 1, "2": 1},
}


def records():
    return list(load_records(FIXTURE.read_text().splitlines()))


def test_summary_figures_match_hand_computed_ones():
    summary = Summary()
    for record in records():
        summary.add(record)
    assert summary.to_json() == EXPECTED


def test_show_json_prints_the_summary():
    result = runner.invoke(app, ["show", str(FIXTURE), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == EXPECTED


def test_summary_view_is_plain_text_when_piped():
    result = runner.invoke(app, ["show", str(FIXTURE)])
    assert result.exit_code == 0
    assert "\x1b[" not in result.stdout
    for figure in ("first-position win rate", "66.7%", "tiebreak rate", "33.3%", "truncated", "#0: 1  #2: 1"):
        assert figure in result.stdout


def test_record_view_draws_the_bracket_with_votes():
    console = Console(width=100, record=True, force_terminal=False)
    console.print(render_record(records()[0]))
    text = console.export_text()
    assert "record r1" in text and "Which is better?" in text
    assert "gamma gamma gamma ★ best" in text
    assert "#0 vs #1 → #1  0–2 (1 invalid)  majority" in text
    assert "#2 bye → #2" in text
    assert "#1 vs #2 → #2  1–1  tiebreak" in text
    assert "vote 3: #0 shown first, #1 second  invalid: truncated  (10 tokens, length)" in text
    # Reasoning is shortened to its first and last lines by default.
    assert "<think>step one" in text and "… 2 more lines …" in text and "step two" not in text


def test_full_and_single_vote():
    result = runner.invoke(app, ["show", str(FIXTURE), "--id", "r1", "--vote", "5", "--no-pager"])
    assert result.exit_code == 0
    assert "vote 5" in result.stdout and "vote 4" not in result.stdout
    assert "I compared them." in result.stdout and "Final line of thought." in result.stdout
    full = runner.invoke(app, ["show", str(FIXTURE), "--index", "0", "--full", "--no-pager"])
    assert "step two" in full.stdout


def test_unknown_id_and_missing_file_exit_2():
    assert runner.invoke(app, ["show", str(FIXTURE), "--id", "nope"]).exit_code == 2
    assert runner.invoke(app, ["show", "/nonexistent.jsonl"]).exit_code == 2


def test_show_reads_stdin_and_survives_a_torn_last_line():
    torn = FIXTURE.read_text() + '{"id": "half", "cand'
    result = runner.invoke(app, ["show", "-", "--json"], input=torn)
    assert json.loads(result.stdout)["records"] == 3


def tmux_screen(command: str, until: str) -> tuple[str, str]:
    """Run `command` in a real terminal (tmux, 120x60); return the screen as text and with escapes.

    Each call gets its own tmux server on a private socket: with the shared default server, a
    new session can race the previous server's exit ("server exited unexpectedly").
    """
    assert shutil.which("tmux"), "tmux is needed for the terminal test (.ci/run installs it)"
    with tempfile.TemporaryDirectory(prefix="bon-tmux-") as folder:
        tmux = ["tmux", "-S", os.path.join(folder, "socket")]
        subprocess.run(tmux + ["new-session", "-d", "-s", "bon", "-x", "120", "-y", "60", command + "; sleep 30"],
                       check=True)
        try:
            def capture():
                screen = subprocess.run(tmux + ["capture-pane", "-p", "-t", "bon"], capture_output=True,
                                        text=True).stdout
                return screen if until in screen else None
            screen = wait_until(capture, f"the terminal to show {until!r}")
            raw = subprocess.run(tmux + ["capture-pane", "-p", "-e", "-t", "bon"], capture_output=True,
                                 text=True).stdout
            return screen, raw
        finally:
            subprocess.run(tmux + ["kill-server"], capture_output=True)


def test_in_a_real_terminal():
    """What a person sees: tmux runs bon show in a terminal, we read the screen."""
    screen, raw = tmux_screen(f"{sys.executable} -m bon show {FIXTURE} --id r1 --no-pager", until="tiebreak")
    assert "record r1" in screen
    assert "#1 vs #2 → #2  1–1  tiebreak" in screen
    assert "★ best" in screen
    assert "\x1b[" in raw  # a terminal gets colour and bold
    plain_screen, plain_raw = tmux_screen(f"NO_COLOR=1 {sys.executable} -m bon show {FIXTURE} --id r1 --no-pager",
                                          until="tiebreak")
    assert "#1 vs #2 → #2  1–1  tiebreak" in plain_screen
    assert "\x1b[" not in plain_raw  # NO_COLOR: no escape codes at all


def test_compare_streams_reasoning_then_the_verdict(scripted):
    result = runner.invoke(app, ["compare", "--query", "Which is longer?", "short", "a much longer answer",
                                 "--votes", "3", "--backend", "hf"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("compare lengths") == 3  # every vote's reasoning was streamed
    assert out.index("vote 1") < out.index("compare lengths") < out.index("vote 2")
    assert "winner: answer B" in out and "(A 0 – B 3, 0 invalid; majority)" in out
    assert all(r.n == 1 for r in scripted.requests)


def test_compare_json_and_file_arguments(scripted, tmp_path):
    (tmp_path / "b.txt").write_text("the longer answer from a file")
    result = runner.invoke(app, ["compare", "--query", "q", "short", f"@{tmp_path / 'b.txt'}", "--json",
                                 "--votes", "2", "--backend", "hf"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["winner"] == 1 and record["candidates"][1] == "the longer answer from a file"
    assert {v["first"] for v in record["match"]["votes"]} == {0, 1}  # both orders
    missing = runner.invoke(app, ["compare", "--query", "q", "a", "@/nonexistent", "--backend", "hf"])
    assert missing.exit_code == 2


def test_show_reads_elo_and_early_stop_output(tmp_path, scripted):
    from conftest import write_jsonl

    src = write_jsonl(tmp_path / "q.jsonl", [{"id": "e", "query": "q", "candidates": ["a", "bbb", "bb"]}])
    out = tmp_path / "elo.jsonl"
    assert runner.invoke(app, ["select", str(src), "--strategy", "elo", "--votes", "3", "--early-stop",
                               "-o", str(out), "-q"]).exit_code == 0
    summary = json.loads(runner.invoke(app, ["show", str(out), "--json"]).stdout)
    assert summary["judged_matches"] == 3 and summary["judge_samples"] == 6  # 3 pairs x 2 (early stop)
    view = runner.invoke(app, ["show", str(out), "--id", "e", "--no-pager"]).stdout
    assert "elo (seed 0)" in view and "bbb ★ best" in view
