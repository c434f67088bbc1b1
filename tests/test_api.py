"""The Python API: bon.Judge, bon.Policy, bon.run and their async twins, on the scripted backend.

The real-server form of the README example runs in test_openai_engine.py (it needs the
`vllm serve` fixture there)."""

import asyncio
import json

import pytest
from typer.testing import CliRunner

import bon
from bon.cli.main import app
from bon.errors import BonError
from conftest import write_jsonl

QUERIES = [{"id": f"q{i}", "query": f"question {i}", "topic": "kept"} for i in range(6)]
WITH_CANDIDATES = [
    {"id": i, "query": f"pick {i}", "candidates": ["a", "bbb", "cc", "dddd"][: 2 + i % 3]} for i in range(5)
]


def dumps(record):
    """A record as bon writes a line of JSONL."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def test_readme_example_select_and_compare(scripted):
    judge = bon.Judge("smol", backend="scripted")
    with judge:
        sel = judge.select("What is 2+2?", ["4", "5", "22"], votes=3, seed=0)
        assert (sel.best, sel.best_index) == ("22", 2)  # the scripted judge prefers the longer answer
        assert sel.record["best"] == "22" and sel.record["tournament"]["strategy"] == "knockout"
        assert sel.record["usage"]["judge_samples"] >= 2 * 3
        m = judge.compare("What is 2+2?", "4", "five", votes=3)
        assert m.winner == 1 and m.tally == {"a": 0, "b": 3, "invalid": 0}
        assert len(m.votes) == 3 and all("<think>" in v["reasoning"] for v in m.votes)
    assert len(scripted.created) == 1  # one engine served every call


def test_select_record_is_exactly_what_bon_select_writes(tmp_path, scripted):
    src = write_jsonl(tmp_path / "c.jsonl", [{"query": "What is 2+2?", "candidates": ["4", "5", "22"]}])
    cli = CliRunner().invoke(app, ["select", str(src), "--votes", "3", "--seed", "4", "-q", "--backend", "scripted"])
    assert cli.exit_code == 0, cli.output
    with bon.Judge("smol", backend="scripted") as judge:
        sel = judge.select("What is 2+2?", ["4", "5", "22"], votes=3, seed=4)
    assert dumps(sel.record) + "\n" == cli.stdout


@pytest.mark.parametrize("strategy,early_stop", [("knockout", False), ("knockout", True), ("elo", False)])
def test_run_yields_byte_for_byte_what_the_cli_writes(tmp_path, scripted, strategy, early_stop):
    src = write_jsonl(tmp_path / "q.jsonl", QUERIES)
    flags = ["--strategy", strategy] + (["--early-stop"] if early_stop else [])
    cli = CliRunner().invoke(
        app,
        [
            "run",
            str(src),
            "--policy",
            "pol",
            "--judge",
            "jud",
            "-n",
            "4",
            "--votes",
            "3",
            "--seed",
            "7",
            "-q",
            "--backend",
            "scripted",
            "-o",
            str(tmp_path / "cli.jsonl"),
            *flags,
        ],
    )
    assert cli.exit_code == 0, cli.output
    policy = bon.Policy("pol", backend="scripted")
    judge = bon.Judge("jud", backend="scripted")
    with policy, judge:
        lines = [
            dumps(out) + "\n"
            for out in bon.run(
                QUERIES, policy=policy, judge=judge, n=4, votes=3, seed=7, strategy=strategy, early_stop=early_stop
            )
        ]
        list(
            bon.run(
                str(src),
                policy=policy,
                judge=judge,
                n=4,
                votes=3,
                seed=7,
                strategy=strategy,
                early_stop=early_stop,
                output=tmp_path / "api.jsonl",
            )
        )
    cli_bytes = (tmp_path / "cli.jsonl").read_bytes()
    assert "".join(lines).encode() == cli_bytes
    assert (tmp_path / "api.jsonl").read_bytes() == cli_bytes


def test_run_without_judge_only_samples_and_without_policy_only_selects(scripted):
    with bon.Policy("pol", backend="scripted") as policy:
        sampled = list(bon.run(QUERIES[:2], policy=policy, n=3))
    assert [len(r["candidates"]) for r in sampled] == [3, 3] and "best" not in sampled[0]
    with bon.Judge("jud", backend="scripted") as judge:
        selected = list(bon.run(sampled, judge=judge, votes=1))
    assert [r["id"] for r in selected] == ["q0", "q1"]
    assert all(r["best"] == max(r["candidates"], key=len) for r in selected)


def test_output_and_resume_give_the_clis_sidecar_and_skip_finished_records(tmp_path, scripted):
    out = tmp_path / "out.jsonl"
    with bon.Judge("jud", backend="scripted") as judge:
        first = list(bon.run(WITH_CANDIDATES[:3], judge=judge, output=out))
        assert (tmp_path / "out.jsonl.manifest.json").exists()
        before = len(scripted.requests)
        again = list(bon.run(WITH_CANDIDATES, judge=judge, output=out, resume=True))
    assert [r["id"] for r in first] == [0, 1, 2] and [r["id"] for r in again] == [3, 4]
    assert len(out.read_text().splitlines()) == 5
    assert all(
        "### Assistant 1" in r.messages[-1]["content"] and "pick 0" not in r.messages[-1]["content"]
        for r in scripted.requests[before:]
    )
    with pytest.raises(BonError, match="exists: add --resume"):
        with bon.Judge("jud", backend="scripted") as judge:
            list(bon.run(WITH_CANDIDATES, judge=judge, output=out))


def test_async_twins_in_a_running_loop(scripted):
    async def main():
        judge = bon.Judge("jud", backend="scripted")
        async with judge:
            sel = await judge.aselect("q", ["x", "yyy"], votes=1)
            m = await judge.acompare("q", "long answer", "short", votes=2)
            outs = [out async for out in bon.arun(WITH_CANDIDATES, judge=judge, votes=1)]
        return sel, m, outs

    sel, m, outs = asyncio.run(main())
    assert sel.best == "yyy" and m.winner == 0 and len(outs) == len(WITH_CANDIDATES)
    assert len(scripted.created) == 1


def test_sync_calls_work_where_a_loop_is_already_running(scripted):
    """Jupyter runs cells inside an event loop: the sync API must not need one of its own."""

    async def cell():
        with bon.Judge("jud", backend="scripted") as judge:
            return judge.select("q", ["a", "bb"], votes=1).best, [
                o["best"] for o in bon.run(WITH_CANDIDATES[:2], judge=judge, votes=1)
            ]

    best, bests = asyncio.run(cell())
    assert best == "bb" and bests == ["bbb", "bbb"]


def test_bad_settings_are_one_line_errors(scripted):
    with pytest.raises(BonError, match="--dtype does not apply to the openai backend"):
        bon.Judge("m", backend="openai", base_url="http://127.0.0.1:9/v1", dtype="bfloat16")
    with pytest.raises(BonError, match="--base-url does not apply to the hf backend"):
        bon.Judge("m", backend="hf", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(BonError, match="unknown backend 'tgi'"):
        bon.Policy("m", backend="tgi")
    judge = bon.Judge("jud", backend="scripted")
    with pytest.raises(BonError, match="max-votes"):
        judge.select("q", ["a", "b"], votes=3, max_votes=2)
    with pytest.raises(BonError, match="unknown setting: votez"):
        list(bon.run(WITH_CANDIDATES, judge=judge, votez=3))
    with pytest.raises(BonError, match="line 2: `query` must be a non-empty string"):
        list(bon.run([{"query": "ok", "candidates": ["a", "b"]}, {"query": "", "candidates": ["a"]}], judge=judge))
    judge.close()


def test_on_bad_line_skip_goes_on_past_bad_input_dicts(scripted, caplog):
    rows = [{"query": "a", "candidates": ["x", "yy"]}, {"query": 3}, {"query": "c", "candidates": ["zzz", "z"]}]
    with bon.Judge("jud", backend="scripted") as judge, caplog.at_level("WARNING", logger="bon"):
        outs = list(bon.run(rows, judge=judge, votes=1, on_bad_line="skip"))
    assert [o["best"] for o in outs] == ["yy", "zzz"] and [o["id"] for o in outs] == [0, 2]
    assert "skipped line 2: `query` must be a non-empty string" in caplog.text


def test_a_caller_that_stops_early_leaves_a_resumable_output(tmp_path, scripted):
    out = tmp_path / "out.jsonl"
    with bon.Judge("jud", backend="scripted") as judge:
        for _record in bon.run(WITH_CANDIDATES, judge=judge, votes=1, output=out, concurrency=1):
            break
        manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
        assert manifest["status"] == "interrupted" and (tmp_path / "out.jsonl.bon-cache").exists()
        rest = list(bon.run(WITH_CANDIDATES, judge=judge, votes=1, output=out, resume=True))
    assert [r["id"] for r in rest] == [1, 2, 3, 4] and len(out.read_text().splitlines()) == 5
