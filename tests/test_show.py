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

from bon.cli.main import app
from bon.io.output import read_output
from bon.views.show import Summary, render_record
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
    # r1: 0 vs 1 two votes for the longer #1; 1 vs 2 one each; record 7: two for the shorter #0
    "longer_win_rate": 0.5,
    "winner_index": {"0": 1, "2": 1},
}


def records():
    return list(read_output(FIXTURE.read_text().splitlines()))


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
    # The thinking's first lines without the tag, then the conclusion after </think>.
    assert "<think>" not in text and "step one" in text and "step three" in text
    assert "conclusion: \\boxed{Assistant 1}" in text


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
        subprocess.run(
            tmux + ["new-session", "-d", "-s", "bon", "-x", "120", "-y", "60", command + "; sleep 30"], check=True
        )
        try:

            def capture():
                screen = subprocess.run(
                    tmux + ["capture-pane", "-p", "-t", "bon"], capture_output=True, text=True
                ).stdout
                return screen if until in screen else None

            screen = wait_until(capture, f"the terminal to show {until!r}")
            raw = subprocess.run(
                tmux + ["capture-pane", "-p", "-e", "-t", "bon"], capture_output=True, text=True
            ).stdout
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
    plain_screen, plain_raw = tmux_screen(
        f"NO_COLOR=1 {sys.executable} -m bon show {FIXTURE} --id r1 --no-pager", until="tiebreak"
    )
    assert "#1 vs #2 → #2  1–1  tiebreak" in plain_screen
    assert "\x1b[" not in plain_raw  # NO_COLOR: no escape codes at all


def test_compare_streams_reasoning_then_the_verdict(scripted):
    result = runner.invoke(
        app,
        [
            "compare",
            "--query",
            "Which is longer?",
            "short",
            "a much longer answer",
            "--votes",
            "3",
            "--backend",
            "scripted",
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("compare lengths") == 3  # every vote's reasoning was streamed
    assert out.index("vote 1") < out.index("compare lengths") < out.index("vote 2")
    assert "winner: answer B" in out and "(A 0 – B 3, 0 invalid; majority)" in out
    assert all(r.n == 1 for r in scripted.requests)


def test_compare_json_and_file_arguments(scripted, tmp_path):
    (tmp_path / "b.txt").write_text("the longer answer from a file")
    result = runner.invoke(
        app,
        [
            "compare",
            "--query",
            "q",
            "short",
            f"@{tmp_path / 'b.txt'}",
            "--json",
            "--votes",
            "2",
            "--backend",
            "scripted",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["winner"] == 1 and record["candidates"][1] == "the longer answer from a file"
    assert {v["first"] for v in record["match"]["votes"]} == {0, 1}  # both orders
    missing = runner.invoke(app, ["compare", "--query", "q", "a", "@/nonexistent", "--backend", "scripted"])
    assert missing.exit_code == 2


def test_show_reads_elo_and_early_stop_output(tmp_path, scripted):
    from conftest import write_jsonl

    src = write_jsonl(tmp_path / "q.jsonl", [{"id": "e", "query": "q", "candidates": ["a", "bbb", "bb"]}])
    out = tmp_path / "elo.jsonl"
    assert (
        runner.invoke(
            app,
            [
                "select",
                str(src),
                "--strategy",
                "elo",
                "--votes",
                "3",
                "--early-stop",
                "-o",
                str(out),
                "-q",
                "--backend",
                "scripted",
            ],
        ).exit_code
        == 0
    )
    summary = json.loads(runner.invoke(app, ["show", str(out), "--json"]).stdout)
    assert summary["judged_matches"] == 3 and summary["judge_samples"] == 6  # 3 pairs x 2 (early stop)
    view = runner.invoke(app, ["show", str(out), "--id", "e", "--no-pager"]).stdout
    assert "elo (seed 0)" in view and "bbb ★ best" in view


# ------------------------------------------------------------- the reasoning in view

THOUGHT = [f"thought line {i}" for i in range(1, 9)]


def vote(first, verdict, reasoning, tokens=12, finish="stop", reason=None):
    out = {
        "first": first,
        "verdict": verdict,
        "reasoning": reasoning,
        "finish_reason": finish,
        "completion_tokens": tokens,
    }
    return out | ({"reason": reason} if reason else {})


def one_match_record(votes, candidates=("short", "a longer one"), decided_by="majority", usage=None, **extra):
    tally = {
        "a": sum(v["verdict"] == 0 for v in votes),
        "b": sum(v["verdict"] == 1 for v in votes),
        "invalid": sum(v["verdict"] is None for v in votes),
    }
    match = {"a": 0, "b": 1, "winner": 1, "tally": tally, "decided_by": decided_by, "votes": votes}
    return {
        "id": "m",
        "query": "Pick one",
        "candidates": list(candidates),
        "best": candidates[1],
        "best_index": 1,
        "tournament": {"strategy": "knockout", "seed": 0, "rounds": [[match]], **extra},
        "usage": {"judge_completion_tokens": 24} if usage is None else usage,
    }


def rendered(record, **kwargs) -> str:
    console = Console(width=200, record=True, force_terminal=False)
    console.print(render_record(record, **kwargs))
    return console.export_text()


def test_vote_shows_first_thinking_lines_hidden_count_and_whole_conclusion():
    tagged = (
        "<think>\n" + "\n\n".join(THOUGHT) + "\n</think>\n\nAssistant 2 answers the question.\n\\boxed{Assistant 2}"
    )
    rrm = (
        "\n".join(THOUGHT) + "\n</think>\n\nBoth are fine but 2 is exact.\n\\boxed{Assistant 1}"
    )  # template opened <think>
    text = rendered(one_match_record([vote(0, 1, tagged), vote(1, 1, rrm)]))
    assert "<think>" not in text and "</think>" not in text
    assert text.count("thought line 3") == 2 and "thought line 4" not in text
    assert text.count("… 5 more lines of thinking (15 words) …") == 2
    assert "conclusion: Assistant 2 answers the question." in text and "\\boxed{Assistant 2}" in text
    assert "conclusion: Both are fine but 2 is exact." in text


def test_unfinished_thought_shows_its_last_line_and_says_so():
    cut = "\n".join(THOUGHT) + "\nand then the limit"
    text = rendered(
        one_match_record([vote(0, None, cut, finish="length", reason="truncated"), vote(1, 1, "ok</think>B")])
    )
    assert "… 5 more lines of thinking" in text and "and then the limit" in text
    assert "(no </think>: the thought never ended)" in text


def test_full_and_single_vote_show_the_completion_as_written():
    tagged = "<think>\n" + "\n".join(THOUGHT) + "\n</think>\nverdict"
    record = one_match_record([vote(0, 1, tagged), vote(1, 1, "other</think>B")])
    full = rendered(record, full=True)
    assert "<think>" in full and "thought line 8" in full
    single = rendered(record, vote=1)
    assert "thought line 8" in single and "vote 2" not in single


def test_tokens_unknown_per_vote_said_once_when_the_server_counted_per_request():
    votes = [vote(0, 1, "a</think>B", tokens=None), vote(1, 1, "b</think>B", tokens=None)]
    text = rendered(one_match_record(votes, usage={"judge_completion_tokens": 321}))
    assert text.count("tokens per vote unknown") == 1 and "321 judge completion tokens" in text
    assert "?" not in text and "(stop)" in text
    unknown = rendered(one_match_record(votes, usage={}))  # nothing counted anywhere: truly unknown
    assert "tokens per vote unknown" not in unknown and "(? tokens, stop)" in unknown


def test_answer_groups_and_same_answer_matches_are_drawn():
    record = one_match_record(
        [],
        decided_by="same_answer",
        answer_groups=[{"answer": "42", "members": [0, 1]}, {"answer": "7", "members": [2]}],
    )
    text = rendered(record)
    assert "teams (same final answer): '42': #0 #1  ·  '7': #2" in text
    assert "#0 vs #1  same answer: both advance" in text


# ------------------------------------------------------------- --where


def test_where_lists_matching_records_with_counts():
    result = runner.invoke(app, ["show", str(FIXTURE), "--where", "tiebreak", "--where", "invalid", "--where", "error"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["r1", "7", "bad"]
    assert lines[0].endswith("winner #2   tiebreak 1, invalid 1")
    assert lines[1].endswith("winner #0   invalid 2") and lines[2].endswith("winner –    error 1")


def test_where_json_lines_and_each_kind():
    def where(kind, path=FIXTURE):
        result = runner.invoke(app, ["show", str(path), "--where", kind, "--json"])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines()]

    assert where("disagree") == [{"id": "r1", "query": "Which is better?", "best_index": 2, "matched": {"disagree": 1}}]
    assert [(r["id"], r["matched"]) for r in where("truncated")] == [("r1", {"truncated": 1})]
    assert where("same_answer") == []
    assert runner.invoke(app, ["show", str(FIXTURE), "--where", "nonsense"]).exit_code == 2


def test_where_same_answer(tmp_path):
    path = tmp_path / "groups.jsonl"
    path.write_text(json.dumps(one_match_record([], decided_by="same_answer")) + "\n")
    result = runner.invoke(app, ["show", str(path), "--where", "same_answer", "--json"])
    assert json.loads(result.stdout)["matched"] == {"same_answer": 1}


# ------------------------------------------------------------- length bias


def test_longer_win_rate_counts_valid_votes_between_unequal_lengths():
    votes = [vote(0, 1, "x"), vote(1, 1, "x"), vote(0, 0, "x"), vote(1, None, "x", reason="no_verdict")]
    summary = Summary()
    summary.add(one_match_record(votes))  # 2 of 3 valid votes for the longer #1
    summary.add(one_match_record(votes, candidates=("same", "size")))  # equal lengths: not counted
    assert summary.to_json()["longer_win_rate"] == 0.6667


def test_eval_report_has_longer_win_rate():
    from bon.tournament.voting import Vote
    from bon.views.evaluate import EvalReport, Pair

    report = EvalReport(votes=2)
    pair = Pair(1, 0, "q", "the longer chosen answer", "short", None)
    report.add(pair, [Vote(0, 1, 0, "", "stop", 1), Vote(1, 0, 1, "", "stop", 1)])  # one for each
    report.add(pair, [Vote(0, 1, 0, "", "stop", 1), Vote(1, 0, None, "", "stop", 1)])  # one valid, longer
    assert report.to_json()["longer_win_rate"] == 0.6667
